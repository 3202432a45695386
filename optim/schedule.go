package optim

import "math"

// WarmupCosine is a learning-rate schedule: linear warmup from 0 to Peak
// over Warmup steps, then cosine decay to Min at step Total, then Min.
// Steps count from 0 (the first update uses LR(0)).
type WarmupCosine struct {
	Peak, Min     float64
	Warmup, Total int
}

// LR returns the learning rate of step.
func (s WarmupCosine) LR(step int) float64 {
	if step < s.Warmup {
		return s.Peak * float64(step+1) / float64(s.Warmup)
	}
	if step >= s.Total || s.Total <= s.Warmup {
		return s.Min
	}
	progress := float64(step-s.Warmup) / float64(s.Total-s.Warmup)
	return s.Min + 0.5*(s.Peak-s.Min)*(1+math.Cos(math.Pi*progress))
}
