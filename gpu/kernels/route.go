package kernels

import (
	"fmt"

	"github.com/moesys/moesys/gpu/cuda"
)

// Router limits, as in route.cu.
const (
	routeMaxE  = 1024 // experts per row (the probabilities are held in shared memory)
	routeWarps = 4    // token rows per block, one warp each
)

// SoftmaxTopK queues moe.Router.Route for T rows of logits: the softmax
// (float32 exp, double sum), the K largest probabilities per row in
// descending order with ties to the lower id and NaN last (kernel.TopK),
// and with normalize their renormalisation by their double sum. It differs
// from the CPU only through exp (CUDA's expf within 2 ulp, the CPU's
// within 1): weights agree to a few ulp, and ids can differ only between
// experts whose probabilities are that close. Shapes: ids (T, K) int32;
// weights (T, K) f32; logits (T, E) f32; 1 ≤ K ≤ E ≤ 1024.
func (k *Set) SoftmaxTopK(s *cuda.Stream, ids, weights, logits cuda.DevPtr, T, E, K int, normalize bool) error {
	const op = "SoftmaxTopK"
	if err := checkDims(op, "T", T, "E", E, "K", K); err != nil {
		return err
	}
	if K < 1 || K > E {
		return errorf(op, "K=%d E=%d: need 1 ≤ K ≤ E", K, E)
	}
	if E > routeMaxE {
		return fmt.Errorf("kernels.%s: E=%d experts exceeds %d: %w", op, E, routeMaxE, ErrUnsupported)
	}
	if T == 0 {
		return nil
	}
	norm := 0
	if normalize {
		norm = 1
	}
	grid := (T + routeWarps - 1) / routeWarps
	return k.launch(op, s, "softmax_topk", cuda.Dim3{X: grid}, cuda.Dim3{X: routeWarps * 32}, 0, ids, weights, logits, T, E, K, norm)
}
