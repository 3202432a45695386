package optim

import "math"

// GradNorm returns the global L2 norm of all gradients, accumulated in
// float64 (as torch.nn.utils.clip_grad_norm_ reports it).
func GradNorm(params []*Param) float64 {
	var s float64
	for _, p := range params {
		for _, g := range p.G {
			s += float64(g) * float64(g)
		}
	}
	return math.Sqrt(s)
}

// ClipGradNorm scales all gradients by maxNorm/(norm+1e-6) when their global
// norm exceeds maxNorm (PyTorch's formula) and returns the norm before
// clipping. maxNorm <= 0 disables clipping. A non-finite norm is returned
// unchanged and the gradients are left alone, so the caller can skip the step.
func ClipGradNorm(params []*Param, maxNorm float64) float64 {
	norm := GradNorm(params)
	if maxNorm <= 0 || math.IsNaN(norm) || math.IsInf(norm, 0) || norm <= maxNorm {
		return norm
	}
	scale := float32(maxNorm / (norm + 1e-6))
	for _, p := range params {
		for i := range p.G {
			p.G[i] *= scale
		}
	}
	return norm
}
