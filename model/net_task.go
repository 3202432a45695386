package model

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/moesys/moesys/kernel"
)

// Multi-task models (Config.Tasks > 0), in the style of SE-MoE's UFO: the
// backbone (attention, token-routed experts, embeddings, head) is shared by
// every task, and every MoE layer l also has one task expert per task k,
//
//	x_{l+1} = y + down_k(silu(gate_k h) * up_k h),  h = RMSNorm(y; norm_k),
//
// where y is the layer's output so far and k the task of the sequence
// (task-level routing: the task, not the token, picks the expert). The
// caller says which task each sequence belongs to (Net.TaskOf). Task
// experts are named model.layers.{l}.task_experts.{k}.{norm,w1,w3,w2}.weight
// and come after the backbone's tensors in Params.

// taskExpert is task k's expert in one MoE layer.
type taskExpert struct {
	norm *Param // (D)
	ffn  swiglu // w1, w3 (Ft, D), w2 (D, Ft)
}

// taskActs is what one MoE layer's task experts keep for Backward: per run
// of consecutive sequences of one task, its rows and activations.
type taskActs struct {
	runs []taskRun
	xIn  []float32 // (N, D) the layer's output before the task experts
	h    []float32 // (N, D) normed input
	rstd []float32 // (N)
	dh   []float32 // (N, D) backward scratch
}

// taskRun is rows [lo, hi) of one task.
type taskRun struct {
	task, lo, hi int
	mlp          mlpActs
}

// TaskExpertName returns the name of task k's tensor part ("norm", "w1",
// "w3" or "w2") in layer l.
func TaskExpertName(l, k int, part string) string {
	return fmt.Sprintf("model.layers.%d.task_experts.%d.%s.weight", l, k, part)
}

// addTaskExperts creates the task experts' Params of every MoE layer
// (newNet).
func (n *Net) addTaskExperts() {
	c := n.Cfg
	if c.Tasks == 0 {
		return
	}
	n.taskHeld = make([]bool, c.Tasks)
	for k := range n.taskHeld {
		n.taskHeld[k] = true
	}
	n.taskOf = map[*Param]int{}
	n.tasks = make([][]taskExpert, c.L)
	n.taskActs = make([]taskActs, c.L)
	D, F := c.D, c.TaskFFN
	for _, l := range c.MoELayers() {
		n.tasks[l] = make([]taskExpert, c.Tasks)
		for k := range n.tasks[l] {
			mk := func(part string, shape ...int) *Param {
				size := 1
				for _, d := range shape {
					size *= d
				}
				p := &Param{Name: TaskExpertName(l, k, part), Shape: shape, W: make([]float32, size), G: make([]float32, size)}
				n.byName[p.Name], n.taskOf[p] = p, k
				return p
			}
			te := &n.tasks[l][k]
			te.norm = mk("norm", D)
			te.ffn = swiglu{w1: mk("w1", F, D), w3: mk("w3", F, D), w2: mk("w2", D, F), F: F}
		}
	}
}

// taskParams lists the task experts' Params in Params order: layer by
// layer, task by task.
func (n *Net) taskParams() []*Param {
	var ps []*Param
	for _, te := range n.tasks {
		for k := range te {
			ps = append(ps, te[k].norm, te[k].ffn.w1, te[k].ffn.w3, te[k].ffn.w2)
		}
	}
	return ps
}

// initTaskExperts draws the task experts' weights: norms one, matrices
// N(0, std^2) (w2 scaled as the other output projections), each tensor
// from its own stream of (seed, name), so the values do not depend on
// which other tensors exist.
func (n *Net) initTaskExperts(seed uint64, std float64) {
	resid := std / math.Sqrt(2*float64(n.Cfg.L))
	for _, p := range n.taskParams() {
		var h uint64 = 0xcbf29ce484222325
		for i := 0; i < len(p.Name); i++ {
			h = (h ^ uint64(p.Name[i])) * 0x100000001b3
		}
		rng := rand.New(rand.NewPCG(seed, h))
		s := std
		if isOutProj(p.Name) {
			s = resid
		}
		for i := range p.W {
			if len(p.Shape) == 1 {
				p.W[i] = 1
			} else {
				p.W[i] = float32(rng.NormFloat64() * s)
			}
		}
	}
}

// SetTaskOf sets the task of each sequence of the next Forwards: task[b]
// for sequence b (B values, each in [0, Cfg.Tasks)). The slice is copied.
// A multi-task Net needs it before Forward.
func (n *Net) SetTaskOf(task []int32) {
	for _, k := range task {
		if k < 0 || int(k) >= n.Cfg.Tasks {
			panic(fmt.Sprintf("model.Net.SetTaskOf: task %d outside [0, %d)", k, n.Cfg.Tasks))
		}
	}
	n.taskSeq = append(n.taskSeq[:0], task...)
}

// SetTasksHeld says which tasks this rank trains (multi-task data
// parallelism: a rank computes only its tasks' sequences). The other
// tasks' experts stay in the Net but are not this rank's: ExpertParam
// reports them remote, so the trainer neither updates nor saves them, and
// a Forward over a sequence of such a task panics.
func (n *Net) SetTasksHeld(held []bool) {
	if len(held) != n.Cfg.Tasks {
		panic(fmt.Sprintf("model.Net.SetTasksHeld: %d flags for %d tasks", len(held), n.Cfg.Tasks))
	}
	copy(n.taskHeld, held)
}

// TaskParam returns the task whose expert p belongs to, or -1 for a
// backbone parameter.
func (n *Net) TaskParam(p *Param) int {
	if k, ok := n.taskOf[p]; ok {
		return k
	}
	return -1
}

// taskForward adds layer l's task experts to x (N, D), the layer's output,
// in place, sequence runs of one task at a time.
func (n *Net) taskForward(l int, x []float32) {
	a, T, D := &n.taskActs[l], n.acts.T, n.Cfg.D
	B := n.acts.B
	if len(n.taskSeq) != B {
		panic(fmt.Sprintf("model.Net.Forward: a multi-task Net needs the task of each of the %d sequences (SetTaskOf has %d)", B, len(n.taskSeq)))
	}
	N := B * T
	a.xIn, a.h, a.rstd = growF(a.xIn, N*D), growF(a.h, N*D), growF(a.rstd, N)
	copy(a.xIn, x[:N*D])
	a.runs = a.runs[:0]
	for lo := 0; lo < B; {
		k, hi := int(n.taskSeq[lo]), lo+1
		for hi < B && int(n.taskSeq[hi]) == k {
			hi++
		}
		if !n.taskHeld[k] {
			panic(fmt.Sprintf("model.Net.Forward: sequence %d is of task %d, which this rank does not hold", lo, k))
		}
		a.runs = append(a.runs, taskRun{task: k, lo: lo * T, hi: hi * T})
		lo = hi
	}
	for i := range a.runs {
		r := &a.runs[i]
		te := &n.tasks[l][r.task]
		rows, h := r.hi-r.lo, a.h[r.lo*D:r.hi*D]
		kernel.RMSNorm(h, a.rstd[r.lo:r.hi], a.xIn[r.lo*D:r.hi*D], te.norm.W, rows, D, float32(n.Cfg.NormEps))
		te.ffn.forward(x[r.lo*D:r.hi*D], h, rows, D, &r.mlp, 1)
	}
}

// taskBackward takes dx (N, D), the gradient at layer l's output, adds the
// task experts' parameter gradients and leaves in dx the gradient at their
// input (the residual's identity plus the experts' input gradient).
func (n *Net) taskBackward(l int, dx []float32) {
	a, D, g := &n.taskActs[l], n.Cfg.D, &n.acts.grad
	for i := range a.runs {
		r := &a.runs[i]
		te := &n.tasks[l][r.task]
		rows := r.hi - r.lo
		dy := dx[r.lo*D : r.hi*D]
		a.dh = growF(a.dh, rows*D)
		te.ffn.backward(a.dh, dy, a.h[r.lo*D:r.hi*D], rows, D, &r.mlp, g, 0)
		kernel.RMSNormBackward(a.dh, te.norm.G, a.dh, a.xIn[r.lo*D:r.hi*D], te.norm.W, a.rstd[r.lo:r.hi], rows, D)
		addTo(dy, a.dh)
	}
}
