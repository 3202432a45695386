package optim

import (
	"fmt"

	"github.com/moesys/moesys/kernel"
)

// Param is one trainable tensor: its weights, gradient and AdamW moments,
// all the same length, flat. The optimiser owns M and V.
type Param struct {
	Name    string
	W, G    []float32 // weights and gradient (accumulated by backward)
	M, V    []float32 // first and second moments
	NoDecay bool      // exempt from weight decay (norms, biases)
}

// AdamWConfig holds the hyperparameters (lr comes per step).
type AdamWConfig struct {
	Beta1, Beta2, Eps, WeightDecay float64
}

// AdamW is torch.optim.AdamW over a parameter list.
type AdamW struct {
	cfg    AdamWConfig
	params []*Param
	steps  int
}

// NewAdamW allocates the moments of params (zero, as at PyTorch's first
// step) and validates the config.
func NewAdamW(params []*Param, cfg AdamWConfig) (*AdamW, error) {
	if !(cfg.Beta1 >= 0 && cfg.Beta1 < 1) || !(cfg.Beta2 >= 0 && cfg.Beta2 < 1) || !(cfg.Eps > 0) || !(cfg.WeightDecay >= 0) {
		return nil, fmt.Errorf("optim: AdamW config %+v: want betas in [0, 1), eps > 0, weight decay >= 0", cfg)
	}
	for _, p := range params {
		if len(p.G) != len(p.W) {
			return nil, fmt.Errorf("optim: parameter %s: %d weights, %d gradients", p.Name, len(p.W), len(p.G))
		}
		if p.M == nil {
			p.M = make([]float32, len(p.W))
			p.V = make([]float32, len(p.W))
		}
		if len(p.M) != len(p.W) || len(p.V) != len(p.W) {
			return nil, fmt.Errorf("optim: parameter %s: moments of %d/%d for %d weights", p.Name, len(p.M), len(p.V), len(p.W))
		}
	}
	return &AdamW{cfg: cfg, params: params}, nil
}

// Steps returns the number of updates done (the state to checkpoint).
func (o *AdamW) Steps() int { return o.steps }

// SetSteps restores the update count when resuming from a checkpoint.
func (o *AdamW) SetSteps(n int) { o.steps = n }

// Step applies one update with learning rate lr to every parameter, using
// its current gradient. The update is elementwise; parameters are cut into
// pieces that the kernel pool's threads take as they come (forPieces).
func (o *AdamW) Step(lr float64) {
	o.steps++
	c := o.cfg
	forPieces(o.params, func(p *Param) int { return len(p.W) }, func(p *Param, lo, hi int) {
		wd := c.WeightDecay
		if p.NoDecay {
			wd = 0
		}
		kernel.AdamW(p.W[lo:hi], p.G[lo:hi], p.M[lo:hi], p.V[lo:hi], o.steps, float32(lr), float32(c.Beta1), float32(c.Beta2), float32(c.Eps), float32(wd))
	})
}

// pieceElems is the least elements of a piece of an elementwise pass over
// the parameters: far above the kernels' native threshold, so a piece runs
// the kernel the whole tensor would, and large enough to amortise a hand-out.
const pieceElems = 1 << 16

// forPieces calls fn over every parameter's elements [0, n(p)) cut into
// pieces of at least pieceElems (a smaller tensor is one piece), which the
// kernel pool's threads take in turn from a shared counter: a parameter
// list of a few large tensors (stacked experts) and many small ones keeps
// every thread busy to the end, whatever the tensors' order. The pieces
// are disjoint, so fn may write them concurrently.
func forPieces(params []*Param, n func(*Param) int, fn func(p *Param, lo, hi int)) {
	type piece struct{ i, lo, hi int }
	var pieces []piece
	for i, p := range params {
		m := n(p)
		k := max(1, m/pieceElems)
		for j := 0; j < k; j++ {
			pieces = append(pieces, piece{i, m * j / k, m * (j + 1) / k})
		}
	}
	kernel.ParallelTake(len(pieces), func(j int) {
		pc := pieces[j]
		fn(params[pc.i], pc.lo, pc.hi)
	})
}
