package moe

import (
	"fmt"
	"math"

	"github.com/moesys/moesys/kernel"
)

// Routing is a router's decision for T tokens: for token t, slots
// t*K..t*K+K-1 hold its experts in descending weight and their combine
// weights. Produced by Router.Route; consumed by NewPlan and Combine.
type Routing struct {
	T, K      int
	IDsTK     []int32   // (T, K) expert ids, descending weight
	WeightsTK []float32 // (T, K) combine weights
	ProbsTE   []float32 // (T, E) softmax of the logits, kept for the aux loss and backward
}

// Router picks each token's top-K experts from its router logits.
type Router struct {
	K int
	// Normalize renormalises the K selected softmax weights to sum to 1
	// (Mixtral always; Qwen-MoE and OLMoE when norm_topk_prob is true).
	Normalize bool
}

// Route computes the softmax of logitsTE (T, E) in float64-accumulated
// float32 (as HF computes it in float32), the top-K experts per token (ties
// to the lower id) and their weights. It allocates the Routing.
func (r Router) Route(logitsTE []float32, T, E int) Routing {
	if r.K < 1 || r.K > E || len(logitsTE) < T*E {
		panic(fmt.Sprintf("moe.Router.Route: K=%d E=%d T=%d len(logits)=%d", r.K, E, T, len(logitsTE)))
	}
	out := Routing{T: T, K: r.K, IDsTK: make([]int32, T*r.K), WeightsTK: make([]float32, T*r.K), ProbsTE: make([]float32, T*E)}
	kernel.Softmax(out.ProbsTE, logitsTE[:T*E], T, E)
	kernel.TopK(out.WeightsTK, out.IDsTK, out.ProbsTE, T, E, r.K)
	if r.Normalize {
		for t := 0; t < T; t++ {
			w := out.WeightsTK[t*r.K : (t+1)*r.K]
			var s float64
			for _, v := range w {
				s += float64(v)
			}
			if s > 0 && !math.IsInf(s, 0) {
				for i := range w {
					w[i] = float32(float64(w[i]) / s)
				}
			}
		}
	}
	return out
}
