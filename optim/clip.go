package optim

import (
	"math"

	"github.com/moesys/moesys/kernel"
)

// GradNorm returns the global L2 norm of all gradients, accumulated in
// float64 (as torch.nn.utils.clip_grad_norm_ reports it).
// Parameters are summed in parallel, each in float64, then added in order,
// so the result does not depend on the thread count.
func GradNorm(params []*Param) float64 {
	sums := make([]float64, len(params))
	kernel.Parallel(len(params), func(i int) {
		var s0, s1, s2, s3 float64
		g := params[i].G
		j := 0
		for ; j+4 <= len(g); j += 4 {
			s0 += float64(g[j]) * float64(g[j])
			s1 += float64(g[j+1]) * float64(g[j+1])
			s2 += float64(g[j+2]) * float64(g[j+2])
			s3 += float64(g[j+3]) * float64(g[j+3])
		}
		for ; j < len(g); j++ {
			s0 += float64(g[j]) * float64(g[j])
		}
		sums[i] = (s0 + s1) + (s2 + s3)
	})
	var s float64
	for _, v := range sums {
		s += v
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
	kernel.Parallel(len(params), func(i int) {
		g := params[i].G
		for j := range g {
			g[j] *= scale
		}
	})
	return norm
}
