package optim

import (
	"math"

	"github.com/moesys/moesys/kernel"
)

// GradNorm returns the global L2 norm of all gradients, accumulated in
// float64 (as torch.nn.utils.clip_grad_norm_ reports it).
// Parameters are summed in parallel, each in float64, then added in order,
// so the result does not depend on the thread count.
func GradNorm(params []*Param) float64 { return math.Sqrt(GradSq(params)) }

// GradSq returns the sum of the squares of all gradients (float64, each
// parameter's sum in parallel, then added in parameter order): the square
// of GradNorm, which a caller holding part of the parameters adds to the
// other parts' before taking the root.
func GradSq(params []*Param) float64 {
	sums := make([]float64, len(params))
	kernel.Parallel(len(params), func(i int) { sums[i] = SqSum(params[i].G) })
	return SumInOrder(sums)
}

// SqSum is one gradient tensor's sum of squares in float64, as GradSq
// sums each Param: a tensor kept outside the Param list (train's
// hierarchical storage) gives the bit-identical figure.
func SqSum(g []float32) float64 {
	var s0, s1, s2, s3 float64
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
	return (s0 + s1) + (s2 + s3)
}

// SumInOrder adds per-tensor sums of squares in their order, as GradSq
// does.
func SumInOrder(sums []float64) float64 {
	var s float64
	for _, v := range sums {
		s += v
	}
	return s
}

// ClipScale returns the factor ClipTo scales the gradients by (1: none).
func ClipScale(norm, maxNorm float64) float32 {
	if maxNorm <= 0 || math.IsNaN(norm) || math.IsInf(norm, 0) || norm <= maxNorm {
		return 1
	}
	return float32(maxNorm / (norm + 1e-6))
}

// ClipGradNorm scales all gradients by maxNorm/(norm+1e-6) when their global
// norm exceeds maxNorm (PyTorch's formula) and returns the norm before
// clipping. maxNorm <= 0 disables clipping. A non-finite norm is returned
// unchanged and the gradients are left alone, so the caller can skip the step.
func ClipGradNorm(params []*Param, maxNorm float64) float64 {
	norm := GradNorm(params)
	ClipTo(params, norm, maxNorm)
	return norm
}

// ClipTo scales all gradients by maxNorm/(norm+1e-6) when norm, their
// global norm (computed by the caller, perhaps over several processes'
// shares of the parameters), exceeds maxNorm, as ClipGradNorm does.
// maxNorm <= 0 or a non-finite norm leaves them alone.
func ClipTo(params []*Param, norm, maxNorm float64) {
	scale := ClipScale(norm, maxNorm)
	if scale == 1 {
		return
	}
	forPieces(params, func(p *Param) int { return len(p.G) }, func(p *Param, lo, hi int) {
		g := p.G[lo:hi]
		for j := range g {
			g[j] *= scale
		}
	})
}
