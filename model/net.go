package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/moe"
	"github.com/moesys/moesys/safetensors"
	"github.com/moesys/moesys/tensor"
)

// Param is one trainable tensor of a Net: its f32 weights and accumulated
// gradient, flat, row-major in Shape. Per-expert tensors are views into
// their layer's contiguous (E, ...) buffers.
type Param struct {
	Name  string
	Shape []int
	W, G  []float32
	// B, when set (Net.SetBF16Products), holds W as bf16 for the products;
	// W must then hold bf16-representable values (SyncBF16 copies them).
	B []uint16
}

// Net is a trainable decoder-only MoE transformer in f32: Mixtral-style
// attention (RMSNorm, RoPE, grouped KV heads) and, per layer, a dense SwiGLU
// FFN or a MoE FFN (optional Qwen2-MoE shared expert, optional pre-gates).
// Forward and Backward are explicit per layer (net_attention.go,
// net_ffn.go); Forward runs a batch of B sequences of T tokens and keeps
// what Backward needs. A Net is not safe for concurrent use.
type Net struct {
	Cfg *Config
	// Params lists every tensor in checkpoint order (Spec.Tensors).
	Params []*Param
	// Recompute keeps only each layer's input in Forward and recomputes the
	// layer's activations in Backward (less memory, ~1/3 more compute).
	Recompute bool
	// Train enables router jitter (Cfg.Jitter) in Forward.
	Train bool
	// JitterSeed seeds the router jitter noise, drawn per (step, layer,
	// token).
	JitterSeed uint64
	// TokenBase is the index, in the global batch, of this Net's first
	// token: under data parallelism rank r's batch is rows of a larger one,
	// and its tokens draw the jitter the same tokens would draw in one
	// process. 0 in a single process.
	TokenBase int
	// GradsDone, when set, is called during Backward with the Params whose
	// gradients that Backward has finished: the head and final norm first,
	// then each layer's (last layer first), the embedding last. A caller
	// may read or reduce those gradients while Backward goes on (it
	// writes them no more); data parallelism overlaps its gradient
	// all-reduce with backward this way.
	GradsDone func(ps []*Param)
	// Watch, when set, is told which experts each MoE layer uses before
	// they compute (net_watch.go).
	Watch ExpertWatch
	// Dense, when set, supplies the dense weights group by group
	// (net_dense.go): ZeRO-3 sharding of the dense parameters.
	Dense DenseSource

	byName            map[string]*Param
	outside           bool       // NetOptions.ExpertsOutside
	bf16              bool       // SetBF16Products is on
	gradGroups        [][]*Param // GradsDone's groups, in Backward's order
	embed, norm, head *Param
	layers            []netLayer

	acts  netActs
	maxT  int
	cos   []float32 // RoPE tables (maxT, RotaryDim/2)
	sin   []float32
	stats *moe.AuxStats
	// Auxiliary-loss gradient terms of the current Backward.
	auxDProb []float32
	zScale   float64

	// Expert parallelism (SetExpertParallel): the ranks, and this rank's
	// experts [epFirst, epFirst+epN); comm nil: every expert is local.
	comm         dist.Comm
	epFirst, epN int
	// The experts this Net holds: [heldFirst, heldFirst+heldN), every
	// expert unless built by NewNetShard; the others have no Param.
	heldFirst, heldN int
	expertOf         map[*Param]int // per-expert Param views -> their expert
	lossBuf          []float32      // reduceLoss's buffer
	lossBusy         time.Duration  // time in reduceLoss

	// Multi-task models (net_task.go): per layer, per task, the task
	// experts (nil in dense layers); the task of each sequence; which
	// tasks this rank trains; task Param -> its task.
	tasks    [][]taskExpert
	taskActs []taskActs
	taskSeq  []int32
	taskHeld []bool
	taskOf   map[*Param]int
	// embedPart, when set, partitions the embedding (net_embed.go).
	embedPart *embedPart
}

// netLayer is one block's parameters.
type netLayer struct {
	inNorm, q, k, v, o, postNorm *Param
	// Dense FFN (nil in MoE layers).
	dense *swiglu
	// MoE FFN (nil in dense layers). experts' weights alias w13 and w2.
	experts    *moe.Layer
	w13, w2    *Param    // fused (held, 2F, D) gate+up and (held, D, F) down, viewed by the per-expert Params (not in Params)
	expertsG   moe.Grads // gradient views of the fused buffers
	gate       *Param    // own router (E, D), or nil when routed by a pre-gate
	pregate    *Param    // pre-gate (E, D) routing PregateTarget, or nil
	shared     *swiglu   // Qwen2-MoE shared expert, or nil
	sharedGate *Param    // (1, D)
}

// swiglu is a dense SwiGLU FFN's parameters: down(silu(gate x) * up x).
type swiglu struct {
	w1, w3 *Param // (F, D)
	w2     *Param // (D, F)
	F      int
}

// NewNet builds a Net for c with zero weights (see Init and LoadNet).
// maxT is the longest sequence Forward will see (the RoPE tables).
func NewNet(c *Config, maxT int) (*Net, error) {
	return newNet(c, maxT, 0, 1, NetOptions{})
}

// NewNetShard is NewNet for rank `rank` of W under expert parallelism: of
// every MoE layer it holds only the experts the rank owns, [rank*E/W,
// (rank+1)*E/W), so the ranks share the experts' memory. The other
// experts have no Param (Params, Param and LoadWeights skip them; Init
// draws their values and drops them, so a rank's weights are those of
// NewNet's). SetExpertParallel with a communicator of the same rank and
// size must follow before Forward.
func NewNetShard(c *Config, maxT, rank, W int) (*Net, error) {
	return NewNetOpts(c, maxT, rank, W, NetOptions{})
}

// NetOptions are NewNetOpts' choices.
type NetOptions struct {
	// ExpertsOutside: the Net allocates no routed-expert weights or
	// gradients. Their Params keep their names and shapes with W and G
	// nil; Init and LoadWeights skip them (Init still draws their values,
	// so the other weights are those of a whole Net), and an owner binds
	// a MoE layer's buffers (BindExpertBuffers) before it computes:
	// train's hierarchical storage, which keeps the experts on its tiers.
	ExpertsOutside bool
}

// NewNetOpts is NewNetShard with options.
func NewNetOpts(c *Config, maxT, rank, W int, o NetOptions) (*Net, error) {
	if W < 1 || rank < 0 || rank >= W || c.E%W != 0 {
		return nil, fmt.Errorf("%w: expert shard %d of %d over %d experts: the experts must divide evenly", ErrConfig, rank, W, c.E)
	}
	return newNet(c, maxT, rank, W, o)
}

func newNet(c *Config, maxT, rank, W int, o NetOptions) (*Net, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.QKNorm != QKNormNone || c.QKVBias {
		return nil, fmt.Errorf("%w: %s: training supports no q/k norm and no qkv bias", ErrConfig, c.Arch)
	}
	if maxT <= 0 {
		return nil, fmt.Errorf("%w: sequence length %d must be > 0", ErrConfig, maxT)
	}
	n := &Net{Cfg: c, byName: map[string]*Param{}, expertOf: map[*Param]int{}, maxT: maxT, stats: moe.NewAuxStats(max(c.E, 1)), outside: o.ExpertsOutside}
	n.heldFirst, n.heldN = rank*(c.E/W), c.E/W
	sp := SpecFor(c.Arch)
	specs := map[string]TensorSpec{}
	for _, ts := range sp.Tensors(c) {
		specs[ts.Name] = ts
	}
	param := func(name string) *Param {
		ts, ok := specs[name]
		if !ok {
			panic("model.NewNet: no tensor " + name)
		}
		size := 1
		for _, d := range ts.Shape {
			size *= d
		}
		p := &Param{Name: name, Shape: ts.Shape, W: make([]float32, size), G: make([]float32, size)}
		n.byName[name] = p
		return p
	}
	n.embed = param(sp.Embed())
	n.layers = make([]netLayer, c.L)
	for l := range n.layers {
		ly := &n.layers[l]
		ly.inNorm = param(sp.InNorm(l))
		ly.q, ly.k = param(sp.Attn(l, "q", "weight")), param(sp.Attn(l, "k", "weight"))
		ly.v, ly.o = param(sp.Attn(l, "v", "weight")), param(sp.Attn(l, "o", "weight"))
		ly.postNorm = param(sp.PostNorm(l))
		if !c.MoE[l] {
			g, u, d := sp.Dense(l)
			ly.dense = &swiglu{w1: param(g), w3: param(u), w2: param(d), F: c.DenseFFN}
			continue
		}
		if c.RouteSource(l) < 0 {
			ly.gate = param(sp.Router(l))
		}
		if c.PregateTarget(l) >= 0 {
			ly.pregate = param(sp.Pregate(l))
		}
		E, F, D := c.E, c.ExpertFFN, c.D
		H := n.heldN
		fused := func(name string, rows, cols int) *Param {
			p := &Param{Name: name, Shape: []int{H, rows, cols}}
			if !o.ExpertsOutside {
				p.W, p.G = make([]float32, H*rows*cols), make([]float32, H*rows*cols)
			}
			return p
		}
		ly.w13, ly.w2 = fused("w13", 2*F, D), fused("w2", D, F)
		ly.experts = &moe.Layer{D: D, F: F, E: E, K: c.K, Normalize: c.NormTopK, Capacity: c.Capacity}
		n.bindExperts(ly) // weights and gradients
		for e := n.heldFirst; e < n.heldFirst+H; e++ {
			for _, v := range n.expertViews(l, e) {
				q := &Param{Name: v.name, Shape: specs[v.name].Shape}
				if !o.ExpertsOutside {
					q.W, q.G = v.f.W[v.off:v.off+F*D], v.f.G[v.off:v.off+F*D]
				}
				n.byName[v.name] = q
				n.expertOf[n.byName[v.name]] = e
			}
		}
		if c.SharedFFN > 0 {
			g, u, d, sg := sp.Shared(l)
			ly.shared = &swiglu{w1: param(g), w3: param(u), w2: param(d), F: c.SharedFFN}
			ly.sharedGate = param(sg)
		}
	}
	n.norm = param(sp.Norm())
	if c.TieEmbeddings {
		n.head = n.embed
	} else {
		n.head = param(sp.Head())
	}
	for _, ts := range sp.Tensors(c) {
		if p := n.byName[ts.Name]; p != nil {
			n.Params = append(n.Params, p)
		}
	}
	n.addTaskExperts()
	n.Params = append(n.Params, n.taskParams()...)
	half := c.RotaryDim / 2
	n.cos, n.sin = make([]float32, maxT*half), make([]float32, maxT*half)
	kernel.RoPEFreqs(n.cos, n.sin, maxT, c.RotaryDim, c.RopeTheta)
	return n, nil
}

// expertView is where expert e's checkpoint tensor lives in its layer's
// fused buffer f: F*D values from off.
type expertView struct {
	name string
	f    *Param
	off  int
}

// expertViews returns expert e of layer l's gate, up and down tensors:
// gate and up stacked in w13 (E, 2F, D), down in w2 (E, D, F).
func (n *Net) expertViews(l, e int) [3]expertView {
	ly, c := &n.layers[l], n.Cfg
	FD := c.ExpertFFN * c.D
	g, u, d := SpecFor(c.Arch).Expert(l, e)
	h := e - n.heldFirst // its place among the held experts
	return [3]expertView{{g, ly.w13, h * 2 * FD}, {u, ly.w13, h*2*FD + FD}, {d, ly.w2, h * FD}}
}

// Param returns the named parameter, or nil.
func (n *Net) Param(name string) *Param { return n.byName[name] }

// Sharded reports whether the Net holds only some of the experts
// (NewNetShard with more than one rank).
func (n *Net) Sharded() bool { return n.heldN < n.Cfg.E }

// NumParams returns the number of trainable weights this Net holds.
func (n *Net) NumParams() int {
	s := 0
	for _, p := range n.Params {
		k := 1
		for _, d := range p.Shape {
			k *= d
		}
		s += k
	}
	return s
}

// Init draws every weight matrix from N(0, std^2) and sets norms to one,
// deterministically from seed. Output projections (o, w2) are scaled by
// 1/sqrt(2L), as GPT-2 does, so the residual stream's variance does not
// grow with depth.
func (n *Net) Init(seed uint64, std float64) {
	n.initWalk(seed, std, nil)
	n.initTaskExperts(seed, std)
}

// InitExperts draws the values Init gives the routed experts this Net
// keeps outside (NetOptions.ExpertsOutside) and hands each tensor's to
// emit, in Init's order, in a buffer reused after emit returns; it sets
// no weight of the Net. Init and InitExperts with the same seed give the
// weights a whole Net's Init gives.
func (n *Net) InitExperts(seed uint64, std float64, emit func(p *Param, vals []float32) error) error {
	return n.initWalk(seed, std, emit)
}

// initWalk draws every tensor in the spec's order: into the Net's weights
// (emit nil), or, with emit, only the outside experts', into a scratch
// buffer handed to emit.
func (n *Net) initWalk(seed uint64, std float64, emit func(p *Param, vals []float32) error) error {
	rng := rand.New(rand.NewPCG(seed, 0x6d6f65737973))
	sp := SpecFor(n.Cfg.Arch)
	kinds := map[string]string{}
	for _, ts := range sp.Tensors(n.Cfg) {
		kinds[ts.Name] = ts.Kind
	}
	resid := std / math.Sqrt(2*float64(n.Cfg.L))
	var scratch []float32
	for _, ts := range sp.Tensors(n.Cfg) {
		p := n.byName[ts.Name]
		size := 1
		for _, d := range ts.Shape {
			size *= d
		}
		var dst []float32
		switch {
		case p != nil && emit == nil && !(n.outside && n.isRouted(p)):
			dst = p.W
		case p != nil && emit != nil && n.outside && n.isRouted(p):
			if cap(scratch) < size {
				scratch = make([]float32, size)
			}
			dst = scratch[:size]
		}
		if dst == nil { // another rank's expert, or not this walk's: draw its values, keep none
			if kinds[ts.Name] != "norm" && kinds[ts.Name] != "bias" {
				for range size {
					rng.NormFloat64()
				}
			}
			continue
		}
		switch kinds[ts.Name] {
		case "norm":
			for i := range dst {
				dst[i] = 1
			}
		case "bias":
			clear(dst)
		default:
			s := std
			if isOutProj(ts.Name) {
				s = resid
			}
			for i := range dst {
				dst[i] = float32(rng.NormFloat64() * s)
			}
		}
		if emit != nil {
			if err := emit(p, dst); err != nil {
				return err
			}
		}
	}
	return nil
}

// isRouted reports whether p is a routed expert's tensor.
func (n *Net) isRouted(p *Param) bool {
	_, ok := n.expertOf[p]
	return ok
}

func isOutProj(name string) bool {
	for _, suf := range []string{"o_proj.weight", "w2.weight", "down_proj.weight"} {
		if len(name) >= len(suf) && name[len(name)-len(suf):] == suf {
			return true
		}
	}
	return false
}

// ZeroGrad clears every gradient.
func (n *Net) ZeroGrad() {
	for _, p := range n.Params {
		clear(p.G)
	}
}

// LoadWeights reads every parameter from set (F32, BF16 or F16, widened),
// checking names and shapes.
func (n *Net) LoadWeights(set *safetensors.Set) error {
	for _, p := range n.Params {
		if _, expert := n.expertOf[p]; expert && n.outside {
			continue // kept outside the Net: its owner reads it
		}
		if err := ReadParam(set, p, p.W); err != nil {
			return err
		}
	}
	return nil
}

// ReadParam reads p's tensor from set (F32, BF16 or F16, widened) into dst
// (p's size), checking its name and shape.
func ReadParam(set *safetensors.Set, p *Param, dst []float32) error {
	info, ok := set.Info(p.Name)
	if !ok {
		return fmt.Errorf("%w: missing tensor %s", ErrWeights, p.Name)
	}
	if !slices.Equal([]int(info.Shape), p.Shape) {
		return fmt.Errorf("%w: tensor %s has shape %v, want %v", ErrWeights, p.Name, info.Shape, p.Shape)
	}
	raw, err := set.Bytes(p.Name)
	if err != nil {
		return fmt.Errorf("model: read %s: %w", p.Name, err)
	}
	switch info.DType {
	case tensor.F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case tensor.BF16:
		for i := range dst {
			dst[i] = tensor.BF16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case tensor.F16:
		for i := range dst {
			dst[i] = tensor.F16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	default:
		return fmt.Errorf("%w: tensor %s has dtype %s (want F32, BF16 or F16)", ErrWeights, p.Name, info.DType)
	}
	return nil
}

// SetBF16Products makes the forward and input-gradient products of the
// projection and expert weights (not the routers, whose top-k choice is
// sensitive, nor attention itself) use bf16 dot products over bf16 copies
// of the weights, with activations rounded to bf16 and f32 accumulation;
// weight gradients stay f32. The caller keeps W bf16-representable (fp32
// masters in the optimizer) and calls SyncBF16 after every update. It
// returns false, changing nothing, where the CPU has no bf16 dot product.
func (n *Net) SetBF16Products(on bool) bool {
	if on && kernel.CurrentLevel() < kernel.LevelAVX512BF16 {
		return false
	}
	n.bf16 = on
	for _, p := range n.bf16Params() {
		if on && p.W != nil {
			p.B = make([]uint16, len(p.W))
		} else {
			p.B = nil // (an expert kept outside: its owner binds its copies)
		}
	}
	for l := range n.layers {
		ly := &n.layers[l]
		if ly.experts == nil {
			continue
		}
		n.bindExperts(ly)
		// The per-expert Params view the fused copies too.
		for e := n.heldFirst; e < n.heldFirst+n.heldN; e++ {
			for _, v := range n.expertViews(l, e) {
				p := n.byName[v.name]
				p.B = nil
				if v.f.B != nil {
					p.B = v.f.B[v.off : v.off+n.Cfg.ExpertFFN*n.Cfg.D]
				}
			}
		}
	}
	n.SyncBF16()
	return true
}

// bf16Params lists the weights SetBF16Products converts.
func (n *Net) bf16Params() []*Param {
	ps := []*Param{n.head}
	for i := range n.layers {
		ly := &n.layers[i]
		ps = append(ps, ly.q, ly.k, ly.v, ly.o)
		for _, m := range []*swiglu{ly.dense, ly.shared} {
			if m != nil {
				ps = append(ps, m.w1, m.w3, m.w2)
			}
		}
		if ly.experts != nil {
			ps = append(ps, ly.w13, ly.w2)
		}
	}
	return ps
}

// SyncBF16 refreshes the bf16 copies from W (round to nearest even).
func (n *Net) SyncBF16() {
	ps := n.bf16Params()
	kernel.Parallel(len(ps), func(i int) {
		p := ps[i]
		if p.B != nil {
			tensor.F32SliceToBF16(p.B, p.W)
		}
	})
}

// MoELayer returns layer l's expert part (nil for a dense layer), for
// plugging in an Exchange (expert parallelism). The Layer's weights view
// the Net's Params.
func (n *Net) MoELayer(l int) *moe.Layer { return n.layers[l].experts }
