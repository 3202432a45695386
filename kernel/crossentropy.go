package kernel

import (
	"fmt"
	"math"
)

// CrossEntropy computes the per-token softmax cross-entropy of logits (T, V)
// against targets (T):
//
//	lse[t]    = log Σ_j exp(logits[t,j])        (saved for the backward pass)
//	losses[t] = lse[t] − logits[t, targets[t]]
//
// A negative target (−100 in PyTorch data) marks an ignored token: its loss
// is 0 (lse is still written). Targets ≥ V panic. The row maximum is subtracted
// before exponentiating; the exponentials (expPoly, ≤ 1 ulp) are summed in
// float64 and lse and the loss are formed in float64, then rounded once.
// Reductions (mean over non-ignored tokens, etc.) are the caller's.
func CrossEntropy(losses, lse, logits []float32, targets []int32, T, V int) {
	checkCrossEntropy("CrossEntropy", losses, lse, logits, targets, T, V)
	for t := 0; t < T; t++ {
		row := logits[t*V : t*V+V]
		m := rowMax(row)
		l := float64(m) + math.Log(expShiftSum64(row, m))
		lse[t] = float32(l)
		losses[t] = 0
		if y := targets[t]; y >= 0 {
			losses[t] = float32(l - float64(row[y]))
		}
	}
}

// CrossEntropyBackward computes the gradient of Σ_t dloss[t]·losses[t]
// with respect to the logits, given the lse that CrossEntropy saved:
//
//	dlogits[t,j] = (exp(logits[t,j] − lse[t]) − [j == targets[t]]) · dloss[t]
//
// overwriting dlogits (T, V); rows of ignored targets are zero. dloss (T) is
// the upstream gradient per token (1/count for a mean). dlogits may alias
// logits.
func CrossEntropyBackward(dlogits, logits, lse []float32, targets []int32, dloss []float32, T, V int) {
	checkCrossEntropy("CrossEntropyBackward", dlogits, lse, logits, targets, T, V)
	if len(dlogits) < T*V || len(dloss) < T {
		panic(fmt.Sprintf("kernel.CrossEntropyBackward: T=%d V=%d need len(dlogits) ≥ T·V, len(dloss) ≥ T; have dlogits %d, dloss %d",
			T, V, len(dlogits), len(dloss)))
	}
	for t := 0; t < T; t++ {
		row := logits[t*V : t*V+V]
		dr := dlogits[t*V : t*V+V]
		y := targets[t]
		if y < 0 {
			clear(dr)
			continue
		}
		expShiftInto(dr, row, lse[t])
		g := dloss[t]
		for j := range dr {
			dr[j] *= g
		}
		dr[y] -= g
	}
}

// checkCrossEntropy checks shapes and that every target is < V. out is
// losses (forward) or dlogits (backward; its length is checked there).
func checkCrossEntropy(op string, out, lse, logits []float32, targets []int32, T, V int) {
	if T < 0 || V < 1 || len(out) < T || len(lse) < T || len(logits) < T*V || len(targets) < T {
		panic(fmt.Sprintf("kernel.%s: T=%d V=%d need V ≥ 1, len(logits) ≥ T·V, len(losses), len(lse), len(targets) ≥ T; have out %d, lse %d, logits %d, targets %d",
			op, T, V, len(out), len(lse), len(logits), len(targets)))
	}
	for t, y := range targets[:T] {
		if int(y) >= V {
			panic(fmt.Sprintf("kernel.%s: targets[%d]=%d ≥ V=%d", op, t, y, V))
		}
	}
}
