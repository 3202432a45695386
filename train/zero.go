package train

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/optim"
	"github.com/moesys/moesys/tensor"
)

// ZeRO-3 sharding of a parallel run's dense parameters (Options.ShardDense):
// path 1 of SE-MoE's 2D prefetch. The dense Params of every GradGroups
// group (the embedding, each layer's attention, norms, routers, pre-gates
// and dense or shared FFNs, the final norm and head) are laid end to end in
// one flat vector of n values, padded to W*chunk (chunk = ceil(n/W)); rank
// r keeps only values [r*chunk, (r+1)*chunk): their weights, gradient
// (reduce-scattered), AdamW moments and, in bf16, fp32 master. The whole
// weights of a group exist only in a ring of zeroSlots gathered-group
// buffers, while that group computes and while the next one is gathered:
// Net.Dense calls Use before each group; Use waits for the group's
// AllGather (started during the previous group), binds the group's Params
// to the slot and starts the next group's AllGather (forward: the next
// layer; backward: the previous one, gathered again). Backward's finished
// group gradients (GradsDone) are reduce-scattered to their owners, each
// rank adding its part into its shard. Gathers and reduce-scatters run in
// issue order on a goroutine chain over a communicator of their own, so
// they overlap compute and the expert exchanges. Every rank issues the same
// collectives in the same order: the groups' order is the Net's.

// zeroSlots is the ring of gathered-group buffers: the group computing and
// the one being gathered.
const zeroSlots = 2

// zero is a parallel Trainer's sharded dense state.
type zero struct {
	comm    dist.Comm // split off the run's communicator: runs beside the exchanges
	W, rank int
	groups  []zeroGroup // GradGroups order: 0 head and final norm, 1+i layer L-1-i, L+1 embedding
	// params[g] is group g's shard as the optimizer sees it: W the weights
	// (the fp32 master in bf16), G the reduce-scattered gradient, M and V.
	params []*optim.Param
	// round[g] is, in bf16, the shard's bf16 rounding: what is gathered,
	// 2 bytes a value, and widened into the slot's weights; nil in f32,
	// where params[g].W is gathered.
	round [][]uint16
	adam  *optim.AdamW
	slots [zeroSlots]zeroSlot
	recv  []float32 // a reduce-scatter's part (the job chain's)

	cur   int        // slot of the group in use, -1 none
	curG  int        // the group in use
	ahead *zeroAhead // the gather started for the next group
	last  *zeroJob   // the last job queued (jobs run in order)

	exposed time.Duration // time Use and the end of backward waited
	busy    time.Duration // time in the collectives (the job chain's)
	bytes   int64         // bytes received from other ranks (the job chain's)
}

// zeroGroup is one group's dense Params and their place in its flat vector.
type zeroGroup struct {
	params []*model.Param
	offs   []int  // params[i] is values [offs[i], offs[i]+len) of the vector
	n      int    // values
	chunk  int    // a rank's share: ceil(n/W)
	bf16   []bool // params[i]'s products use a bf16 copy (Param.B)
}

// zeroSlot is one gathered-group buffer (W*max chunk values).
type zeroSlot struct {
	group int // the group whose weights w holds, -1 none
	w, g  []float32
	b     []uint16 // bf16 copies, when any Param has one
}

// zeroAhead is a gather started before its group's Use.
type zeroAhead struct {
	group, slot int
	job         *zeroJob
}

// zeroJob is one queued collective (and what follows it on the chain).
type zeroJob struct {
	done chan struct{}
	err  error
}

func (j *zeroJob) wait() error {
	<-j.done
	return j.err
}

// DenseStep is one step's figures of the sharded dense parameters (path 1
// of 2D prefetch): ExposedSeconds is what the step waited for gathers and
// reduce-scatters (not hidden behind compute), BusySeconds their time in
// all, Bytes the bytes this rank received.
type DenseStep struct {
	ExposedSeconds float64 `json:"exposed_seconds"`
	BusySeconds    float64 `json:"busy_seconds"`
	Bytes          int64   `json:"bytes"`
}

// shardDense replaces t's replicated dense parameters with this rank's
// shards (Options.ShardDense): called once the whole state is in place
// (built or resumed), it copies out this rank's ranges and drops the rest.
func (t *Trainer) shardDense() error {
	p := t.par
	W, r := p.comm.Size(), p.comm.Rank()
	z := &zero{comm: p.gc, W: W, rank: r, cur: -1, curG: -1}
	of := map[*model.Param]int{} // dense Param -> its index in t.params
	for i := range t.params {
		np := t.Net.Params[t.idx[i]]
		if expert, _ := t.Net.ExpertParam(np); !expert && t.Net.TaskParam(np) < 0 {
			of[np] = i
		}
	}
	maxChunk := 0
	for g, ps := range t.Net.GradGroups() {
		var gr zeroGroup
		for _, np := range ps {
			if _, ok := of[np]; ok {
				gr.params = append(gr.params, np)
				gr.offs = append(gr.offs, gr.n)
				gr.bf16 = append(gr.bf16, np.B != nil)
				gr.n += len(np.W)
			}
		}
		gr.chunk = (gr.n + W - 1) / W
		maxChunk = max(maxChunk, gr.chunk)
		// This rank's range of the flat vector, from the whole state.
		lo := r * gr.chunk
		shard := func(full func(i int) []float32) []float32 {
			s := make([]float32, gr.chunk)
			for i, np := range gr.params {
				a, b := max(lo, gr.offs[i]), min(lo+gr.chunk, gr.offs[i]+len(np.W))
				if a < b {
					copy(s[a-lo:b-lo], full(i)[a-gr.offs[i]:b-gr.offs[i]])
				}
			}
			return s
		}
		q := func(i int) *optim.Param { return t.params[of[gr.params[i]]] }
		op := &optim.Param{Name: fmt.Sprintf("dense group %d shard %d of %d", g, r, W), G: make([]float32, gr.chunk),
			W: shard(func(i int) []float32 { return q(i).W }), // the master in bf16
			M: shard(func(i int) []float32 { return q(i).M }), V: shard(func(i int) []float32 { return q(i).V })}
		z.params = append(z.params, op)
		if t.master != nil {
			// The Net's weights are the masters' bf16 roundings.
			w := shard(func(i int) []float32 { return gr.params[i].W })
			r := make([]uint16, len(w))
			tensor.F32SliceToBF16(r, w)
			z.round = append(z.round, r)
		}
		z.groups = append(z.groups, gr)
	}
	if len(z.groups) != t.Net.Cfg.L+2 {
		return fmt.Errorf("train: shard dense: %d parameter groups, want %d", len(z.groups), t.Net.Cfg.L+2)
	}
	for i := range z.slots {
		s := &z.slots[i]
		s.group, s.w, s.g = -1, make([]float32, W*maxChunk), make([]float32, W*maxChunk)
		if t.master != nil {
			s.b = make([]uint16, W*maxChunk) // gathered; the products' bf16 copies
		}
	}
	z.recv = make([]float32, maxChunk)
	// Drop the replicated state: the optimizer keeps the other parameters;
	// the Net's dense Params hold nothing until Use.
	var params []*optim.Param
	var idx []int
	var master [][]float32
	for i, q := range t.params {
		if _, ok := of[t.Net.Params[t.idx[i]]]; ok {
			continue
		}
		params, idx = append(params, q), append(idx, t.idx[i])
		if t.master != nil {
			master = append(master, t.master[i])
		}
	}
	t.params, t.idx = params, idx
	if t.master != nil {
		t.master = master
	}
	for np := range of {
		np.W, np.G, np.B = nil, nil, nil
	}
	acfg := t.adamConfig()
	steps := t.adam.Steps()
	var err error
	if t.adam, err = optim.NewAdamW(t.params, acfg); err != nil {
		return err
	}
	if z.adam, err = optim.NewAdamW(z.params, acfg); err != nil {
		return err
	}
	t.adam.SetSteps(steps)
	z.adam.SetSteps(steps)
	p.dense, p.fidx = nil, nil
	p.fused = dist.NewFused(p.gc, nil, 4) // nothing left to all-reduce
	p.zero = z
	t.Net.Dense = z
	return nil
}

// queue runs f on the job chain after every job queued before it; after a
// failed job, the later ones fail with its error.
func (z *zero) queue(f func() error) *zeroJob {
	j, prev := &zeroJob{done: make(chan struct{})}, z.last
	z.last = j
	go func() {
		defer close(j.done)
		if prev != nil {
			if j.err = prev.wait(); j.err != nil {
				return
			}
		}
		t := time.Now()
		j.err = f()
		z.busy += time.Since(t)
	}()
	return j
}

// settle readies the chain for a step: it waits for every queued job
// (a failed step can leave a gather in flight) and forgets a failure, the
// read-ahead and the gathered groups, so a step after a failed one
// starts clean. After a successful step it changes nothing: backward
// drained the chain and step marked the slots stale.
func (z *zero) settle() {
	if z.last != nil {
		_ = z.last.wait() // the failed step reported its error
	}
	z.last, z.ahead, z.cur = nil, nil, -1
	for i := range z.slots {
		z.slots[i].group = -1
	}
}

// drain waits for every queued job.
func (z *zero) drain() error {
	if z.last == nil {
		return nil
	}
	return z.last.wait()
}

// gather queues the AllGather of group g's weights into slot s (and the
// bf16 copies of those that have one).
func (z *zero) gather(ctx context.Context, g, s int) *zeroJob {
	gr, sl := &z.groups[g], &z.slots[s]
	sl.group = g
	return z.queue(func() error {
		full := sl.w[:z.W*gr.chunk]
		if z.round == nil {
			if err := dist.AllGatherOf(ctx, z.comm, z.params[g].W, full); err != nil {
				return fmt.Errorf("gather dense group %d: %w", g, err)
			}
			z.bytes += int64(4 * (z.W - 1) * gr.chunk)
			return nil
		}
		// bf16: the roundings, widened exactly.
		b := sl.b[:z.W*gr.chunk]
		if err := dist.AllGatherOf(ctx, z.comm, z.round[g], b); err != nil {
			return fmt.Errorf("gather dense group %d: %w", g, err)
		}
		z.bytes += int64(2 * (z.W - 1) * gr.chunk)
		widen(full, b)
		return nil
	})
}

// widen sets dst to the bf16 values src (exact).
func widen(dst []float32, src []uint16) {
	for i, h := range src {
		dst[i] = math.Float32frombits(uint32(h) << 16)
	}
}

// size is group g's i-th Param's number of values.
func (z *zero) size(g, i int) int {
	gr := &z.groups[g]
	if i+1 < len(gr.offs) {
		return gr.offs[i+1] - gr.offs[i]
	}
	return gr.n - gr.offs[i]
}

// Use is the Net's DenseSource: see model.DenseSource.
func (z *zero) Use(ctx context.Context, g int, back bool) error {
	t0 := time.Now()
	defer func() { z.exposed += time.Since(t0) }()
	s := -1
	if a := z.ahead; a != nil {
		z.ahead = nil
		if err := a.job.wait(); err != nil {
			return err
		}
		if a.group == g {
			s = a.slot
		}
	}
	if s < 0 {
		for i := range z.slots {
			if z.slots[i].group == g {
				s = i
			}
		}
		if s >= 0 && back {
			// A slot kept from forward (the head, at the turn): its
			// gradient buffer must be free of earlier reduce-scatters.
			if err := z.drain(); err != nil {
				return err
			}
		}
	}
	if s < 0 {
		s = (z.cur + 1) % zeroSlots
		if err := z.gather(ctx, g, s).wait(); err != nil {
			return err
		}
	}
	gr, sl := &z.groups[g], &z.slots[s]
	if back {
		clear(sl.g[:z.W*gr.chunk]) // the padding too: reduce-scattered
	}
	for i, np := range gr.params {
		o, n := gr.offs[i], z.size(g, i)
		np.W = sl.w[o : o+n : o+n]
		if back {
			np.G = sl.g[o : o+n : o+n]
		}
		if gr.bf16[i] {
			np.B = sl.b[o : o+n : o+n]
		}
	}
	z.cur, z.curG = s, g
	// One group ahead, into the other slot (its previous group is done).
	next := g - 1
	if back {
		next = g + 1
	}
	if next >= 0 && next < len(z.groups) {
		t := (s + 1) % zeroSlots
		z.ahead = &zeroAhead{group: next, slot: t, job: z.gather(ctx, next, t)}
	}
	return nil
}

// gradsDone returns the Net's GradsDone during a sharded backward: the
// finished group's gradient is reduce-scattered, each rank adding its
// part into its shard.
func (z *zero) gradsDone(ctx context.Context) func([]*model.Param) {
	return func([]*model.Param) {
		g, sl := z.curG, &z.slots[z.cur]
		gr, dst := &z.groups[g], z.params[g].G
		z.queue(func() error {
			recv := z.recv[:gr.chunk]
			if err := z.comm.ReduceScatter(ctx, sl.g[:z.W*gr.chunk], recv); err != nil {
				return fmt.Errorf("reduce-scatter dense group %d: %w", g, err)
			}
			z.bytes += int64(4 * (z.W - 1) * gr.chunk)
			for i, v := range recv {
				dst[i] += v
			}
			return nil
		})
	}
}

// backward runs one sharded Backward and waits for its reduce-scatters.
func (z *zero) backward(ctx context.Context, net *model.Net, scale float32) error {
	net.GradsDone = z.gradsDone(ctx)
	err := net.Backward(ctx, scale)
	net.GradsDone = nil
	t := time.Now()
	derr := z.drain()
	z.exposed += time.Since(t)
	if err == nil && derr != nil {
		err = fmt.Errorf("dense gradients over the ranks: %w", derr)
	}
	return err
}

// zeroGrad clears the shards' gradients.
func (z *zero) zeroGrad() {
	for _, p := range z.params {
		clear(p.G)
	}
}

// step updates the shards (AdamW, then the bf16 rounding that is
// gathered); the gathered copies are stale from here.
func (z *zero) step(lr float64) {
	z.adam.Step(lr)
	for g, r := range z.round {
		tensor.F32SliceToBF16(r, z.params[g].W)
	}
	for i := range z.slots {
		z.slots[i].group = -1
	}
}

// zeroFull is a whole dense tensor's state gathered from the shards.
type zeroFull struct {
	p               *model.Param
	w, m, v, master []float32 // master nil in f32
}

// gatherAll gathers every dense parameter's whole state (weights, moments,
// master) for a checkpoint: a collective; every rank gets them.
func (z *zero) gatherAll(ctx context.Context) ([]zeroFull, error) {
	if err := z.drain(); err != nil {
		return nil, err
	}
	var out []zeroFull
	for g := range z.groups {
		gr, op := &z.groups[g], z.params[g]
		srcs := [][]float32{op.W, op.M, op.V}
		if z.round != nil {
			srcs = [][]float32{nil, op.M, op.V, op.W} // the weights from the roundings
		}
		fulls := make([][]float32, len(srcs))
		for k, src := range srcs {
			fulls[k] = make([]float32, z.W*gr.chunk)
			if src == nil {
				b := make([]uint16, z.W*gr.chunk)
				if err := dist.AllGatherOf(ctx, z.comm, z.round[g], b); err != nil {
					return nil, fmt.Errorf("gather dense group %d: %w", g, err)
				}
				widen(fulls[k], b)
				continue
			}
			if err := dist.AllGatherOf(ctx, z.comm, src, fulls[k]); err != nil {
				return nil, fmt.Errorf("gather dense group %d: %w", g, err)
			}
		}
		for i, np := range gr.params {
			o, n := gr.offs[i], z.size(g, i)
			f := zeroFull{p: np, w: fulls[0][o : o+n], m: fulls[1][o : o+n], v: fulls[2][o : o+n]}
			if z.round != nil {
				f.master = fulls[3][o : o+n]
			}
			out = append(out, f)
		}
	}
	return out, nil
}

// ShardedDenseBytes returns, when the dense parameters are sharded
// (Options.ShardDense), this rank's bytes of dense state (weights,
// gradients, moments, masters: about 1/W of the replicated state) and of
// the ring of gathered-group buffers; zeros otherwise.
func (t *Trainer) ShardedDenseBytes() (state, ring int64) {
	if t.par == nil || t.par.zero == nil {
		return 0, 0
	}
	return t.par.zero.Bytes()
}

// Bytes returns this rank's bytes of dense state: the shards (weights,
// gradients, moments, masters and their bf16 roundings) and the ring of
// gathered-group buffers.
func (z *zero) Bytes() (state, ring int64) {
	for g, p := range z.params {
		n := int64(len(p.W))
		state += 4 * 4 * n
		if z.round != nil {
			state += 2 * int64(len(z.round[g]))
		}
	}
	for _, s := range z.slots {
		ring += 4*int64(len(s.w)+len(s.g)) + 2*int64(len(s.b))
	}
	return state, ring
}
