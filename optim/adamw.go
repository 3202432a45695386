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
// its current gradient. Parameters are updated in parallel over the kernel
// pool.
func (o *AdamW) Step(lr float64) {
	o.steps++
	c := o.cfg
	kernel.Parallel(len(o.params), func(i int) {
		p := o.params[i]
		wd := c.WeightDecay
		if p.NoDecay {
			wd = 0
		}
		kernel.AdamW(p.W, p.G, p.M, p.V, o.steps, float32(lr), float32(c.Beta1), float32(c.Beta2), float32(c.Eps), float32(wd))
	})
}
