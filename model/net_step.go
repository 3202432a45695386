package model

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/moesys/moesys/kernel"
)

// netActs holds a forward pass's activations (allocated once per shape and
// reused) and the backward pass's scratch.
type netActs struct {
	B, T   int
	ids    []int32     // (N)
	tgt    []int32     // (N) targets, < 0: ignored
	pos    []int32     // (N) position of each row in its sequence
	xs     [][]float32 // L+1 residual streams (N, D): xs[l] is layer l's input
	xMid   [][]float32 // per layer (N, D) after attention (one when recomputing)
	attn   []attnActs  // per layer (one when recomputing)
	ffn    []ffnActs
	route  [][]float32 // per layer (N, E) logits routing MoE layer l
	droute [][]float32 // per layer (N, E) their gradients
	noise  [][]float32 // per layer (N, D) router jitter, when training with jitter
	hf     []float32   // (N, D) final norm output
	rstdF  []float32   // (N)
	logits []float32   // (N, V); the gradient after Backward starts
	lse    []float32   // (N)
	losses []float32   // (N)
	dloss  []float32   // (N)
	ws     []float32   // attention workspace
	grad   gradScratch
	tokens int    // targets counted in the loss
	step   uint64 // of the last Forward (jitter, for recomputation)
	recomp []float32
}

// gradScratch is the backward pass's temporaries.
type gradScratch struct {
	dx, dh, dgx      []float32
	datt, dq, dk, dv []float32
	da, dg, du       []float32
	dsOut, dsg       []float32
}

func (a *netActs) attnWS(n int) []float32 {
	a.ws = growF(a.ws, n)
	return a.ws
}

// Loss is a forward pass's loss: Total = CE + AuxCoef*Aux + ZCoef*Z.
type Loss struct {
	CE, Aux, Z, Total float64
	Tokens            int // predicted tokens averaged over
}

func (n *Net) setup(B, T int) {
	c, a := n.Cfg, &n.acts
	N := B * T
	a.B, a.T = B, T
	a.ids, a.tgt, a.pos = growI(a.ids, N), growI(a.tgt, N), growI(a.pos, N)
	for i := range a.pos {
		a.pos[i] = int32(i % T)
	}
	if len(a.xs) != c.L+1 {
		a.xs = make([][]float32, c.L+1)
		a.route, a.droute, a.noise = make([][]float32, c.L), make([][]float32, c.L), make([][]float32, c.L)
	}
	for l := range a.xs {
		a.xs[l] = growF(a.xs[l], N*c.D)
	}
	nl := c.L
	if n.Recompute {
		nl = 1
	}
	if len(a.attn) != nl {
		a.attn, a.ffn, a.xMid = make([]attnActs, nl), make([]ffnActs, nl), make([][]float32, nl)
	}
	for i := range a.xMid {
		a.xMid[i] = growF(a.xMid[i], N*c.D)
	}
}

func growI(s []int32, n int) []int32 { return grow(s, n) }

// slot returns the activation slot of layer l.
func (n *Net) slot(l int) int {
	if n.Recompute {
		return 0
	}
	return l
}

// Forward runs B sequences of T tokens, ids (B*T), predicting targets
// (B*T; a negative target is ignored), and returns the loss: the mean
// cross-entropy over the counted targets plus the weighted auxiliary losses
// (Hugging Face's load-balancing loss over all MoE layers' router logits
// concatenated, and the router z-loss). step seeds the router jitter when
// n.Train. Activations are kept for Backward. Errors come only from MoE
// layers' Exchanges (expert parallelism); the returned Loss is then zero.
func (n *Net) Forward(ctx context.Context, ids, targets []int32, B, T int, step uint64) (Loss, error) {
	c, a := n.Cfg, &n.acts
	N := B * T
	if len(ids) != N || len(targets) != N || T > n.maxT || B <= 0 || T <= 0 {
		panic(fmt.Sprintf("model.Net.Forward: B=%d T=%d len(ids)=%d len(targets)=%d maxT=%d", B, T, len(ids), len(targets), n.maxT))
	}
	if n.Sharded() && n.comm == nil {
		return Loss{}, fmt.Errorf("%w: a Net holding experts [%d, %d) of %d runs only under expert parallelism (SetExpertParallel)", ErrConfig, n.heldFirst, n.heldFirst+n.heldN, c.E)
	}
	n.setup(B, T)
	copy(a.ids, ids)
	copy(a.tgt, targets)
	for _, id := range ids {
		if id < 0 || int(id) >= c.V {
			panic(fmt.Sprintf("model.Net.Forward: token id %d outside [0, %d)", id, c.V))
		}
	}
	a.step = step
	if err := n.useDense(ctx, c.L+1, false); err != nil {
		return Loss{}, err
	}
	if n.embedPart != nil {
		if err := n.embedForward(ctx, a.xs[0], a.ids, N); err != nil {
			return Loss{}, err
		}
	} else {
		kernel.Embedding(a.xs[0], n.embed.W, a.ids, N, c.D)
	}
	n.stats.Reset()
	for l := 0; l < c.L; l++ {
		if err := n.useDense(ctx, c.L-l, false); err != nil {
			return Loss{}, err
		}
		if err := n.layerForward(ctx, l, step); err != nil {
			return Loss{}, err
		}
	}
	if err := n.useDense(ctx, 0, false); err != nil {
		return Loss{}, err
	}
	// Final norm, head, cross-entropy.
	D, V := c.D, c.V
	a.hf, a.rstdF = growF(a.hf, N*D), growF(a.rstdF, N)
	a.logits, a.lse, a.losses = growF(a.logits, N*V), growF(a.lse, N), growF(a.losses, N)
	kernel.RMSNorm(a.hf, a.rstdF, a.xs[c.L], n.norm.W, N, D, float32(c.NormEps))
	linear(a.logits, a.hf, n.head, N, V, D, 0)
	kernel.CrossEntropy(a.losses, a.lse, a.logits, a.tgt, N, V)
	var loss Loss
	for t := 0; t < N; t++ {
		if a.tgt[t] >= 0 {
			loss.CE += float64(a.losses[t])
			loss.Tokens++
		}
	}
	if n.comm != nil {
		// Every rank's tokens: the global batch's losses.
		if err := n.reduceLoss(ctx, &loss); err != nil {
			return Loss{}, err
		}
	}
	a.tokens = loss.Tokens
	if loss.Tokens > 0 {
		loss.CE /= float64(loss.Tokens)
	}
	loss.Aux, loss.Z = n.stats.Balance(), n.stats.Z()
	loss.Total = loss.CE + c.AuxCoef*loss.Aux + c.ZCoef*loss.Z
	return loss, nil
}

// layerForward runs layer l from xs[l] into xs[l+1].
func (n *Net) layerForward(ctx context.Context, l int, step uint64) error {
	a := &n.acts
	N, s := a.B*a.T, n.slot(l)
	n.attnForward(l, &a.attn[s], a.xMid[s], a.xs[l], a.B, a.T, a.pos)
	if err := n.ffnForward(ctx, l, &a.ffn[s], a.xs[l+1], a.xMid[s], N, step); err != nil {
		return err
	}
	if n.layers[l].experts != nil {
		n.stats.Add(&a.ffn[s].moe)
	}
	if n.tasks != nil && n.tasks[l] != nil {
		n.taskForward(l, a.xs[l+1])
	}
	return nil
}

// Backward accumulates into every Param's G the gradient of the loss of
// the last Forward, scaled by scale (1 for one batch; 1/m to average m
// accumulated micro-batches). Errors come only from Exchanges.
func (n *Net) Backward(ctx context.Context, scale float32) error {
	c, a, g := n.Cfg, &n.acts, &n.acts.grad
	N, D, V := a.B*a.T, c.D, c.V
	if N == 0 {
		panic("model.Net.Backward: no Forward")
	}
	// Cross-entropy and head.
	a.dloss = growF(a.dloss, N)
	inv := float32(0)
	if a.tokens > 0 {
		inv = scale / float32(a.tokens)
	}
	for t := range a.dloss {
		a.dloss[t] = inv
	}
	if err := n.useDense(ctx, 0, true); err != nil {
		return err
	}
	kernel.CrossEntropyBackward(a.logits, a.logits, a.lse, a.tgt, a.dloss, N, V)
	g.dx, g.dh = growF(g.dx, N*D), growF(g.dh, N*D)
	linearBackward(g.dh, a.logits, a.hf, n.head, N, V, D, 0)
	kernel.RMSNormBackward(g.dx, n.norm.G, g.dh, a.xs[c.L], n.norm.W, a.rstdF, N, D)
	done := func(int) {}
	if n.GradsDone != nil {
		groups := n.GradGroups()
		done = func(i int) { n.GradsDone(groups[i]) }
	}
	done(0)
	// Auxiliary losses: per-expert probability gradients and z scale.
	n.auxDProb, n.zScale = n.stats.Grad(n.auxDProb, c.AuxCoef*float64(scale), c.ZCoef*float64(scale))
	dx := g.dx
	for l := c.L - 1; l >= 0; l-- {
		s := n.slot(l)
		if err := n.useDense(ctx, c.L-l, true); err != nil {
			return err
		}
		if n.Recompute {
			if err := n.layerRecompute(ctx, l); err != nil {
				return err
			}
		}
		if n.tasks != nil && n.tasks[l] != nil {
			n.taskBackward(l, dx)
		}
		if err := n.ffnBackward(ctx, l, &a.ffn[s], dx, a.xMid[s], N); err != nil {
			return err
		}
		n.attnBackward(l, &a.attn[s], dx, a.xs[l], a.B, a.T, a.pos)
		done(c.L - l)
	}
	if err := n.useDense(ctx, c.L+1, true); err != nil {
		return err
	}
	if n.embedPart != nil {
		if err := n.embedBackward(ctx, dx, N); err != nil {
			return err
		}
	} else {
		kernel.EmbeddingBackward(n.embed.G, dx, a.ids, N, D)
	}
	done(c.L + 1)
	return nil
}

// GradGroups returns the Params in GradsDone's groups, in the order
// Backward reports them: group 0 the head and final norm, group 1+i layer
// L-1-i's, group L+1 the embedding.
func (n *Net) GradGroups() [][]*Param {
	if n.gradGroups != nil {
		return n.gradGroups
	}
	L := n.Cfg.L
	g := make([][]*Param, L+2)
	for _, p := range n.Params {
		switch {
		case p == n.embed:
			g[L+1] = append(g[L+1], p)
		case p == n.head || p == n.norm:
			g[0] = append(g[0], p)
		default:
			var l int
			if _, err := fmt.Sscanf(p.Name, "model.layers.%d.", &l); err != nil || l < 0 || l >= L {
				panic(fmt.Sprintf("model: parameter %q belongs to no layer", p.Name))
			}
			g[L-l] = append(g[L-l], p)
		}
	}
	n.gradGroups = g
	return g
}

// layerRecompute re-runs layer l's forward from its saved input to refill
// the shared activation slot. Its output (identical to xs[l+1]) goes to a
// scratch stream; the routing logits it rewrites are identical too.
func (n *Net) layerRecompute(ctx context.Context, l int) error {
	a := &n.acts
	N := a.B * a.T
	a.recomp = growF(a.recomp, N*n.Cfg.D)
	n.attnForward(l, &a.attn[0], a.xMid[0], a.xs[l], a.B, a.T, a.pos)
	return n.ffnForward(ctx, l, &a.ffn[0], a.recomp, a.xMid[0], N, a.step)
}

// fillJitter draws the router jitter of tokens base.. (noise holds D
// values per token) for (seed, step, layer): uniform in [1-eps, 1+eps],
// each token from its own stream, so a token's noise does not depend on
// which rank's share of the batch it is in.
func fillJitter(noise []float32, eps float64, seed, step uint64, l, base, D int) {
	for t := 0; t*D < len(noise); t++ {
		tok := uint64(base + t)
		rng := rand.New(rand.NewPCG(seed^0x6a6974746572^tok*0x9e3779b97f4a7c15, step<<16|uint64(l)))
		row := noise[t*D : (t+1)*D]
		for i := range row {
			row[i] = float32(1 - eps + 2*eps*rng.Float64())
		}
	}
}

// Logits returns the last Forward's logits (B*T, V), owned by the Net and
// valid until Backward (which overwrites them with their gradient) or the
// next Forward.
func (n *Net) Logits() []float32 {
	a := &n.acts
	return a.logits[:a.B*a.T*n.Cfg.V]
}

// RoutingIDs returns MoE layer l's expert ids (B*T, K) of the last Forward
// (the router's choice, dropped assignments included), or nil for a dense
// layer. Valid until the next Forward; nil when Recompute is set.
func (n *Net) RoutingIDs(l int) []int32 {
	if n.layers[l].experts == nil || n.Recompute {
		return nil
	}
	return n.acts.ffn[l].moe.Routing().IDsTK
}
