package kernel

import "fmt"

// TopK writes, for each row of x (T, N), the K largest values in descending
// order and their column indices: vals (T, K), ids (T, K).
//
// Order: larger values first; equal values by lower index first (a stable
// descending sort; torch.topk does not promise a tie order, so routers that
// must agree with PyTorch on ties cannot rely on either). NaN ranks below
// every number, −Inf included, so NaNs are chosen only when a row has fewer
// than K non-NaN values, and then in index order. −0 and +0 tie.
//
// One pass per row keeps a sorted K-array and inserts by shifting, so the
// cost is about N compares for the small K (1..8) and N (≤ 256) of MoE
// routing; K = 1 is a plain argmax. For large K·N prefer a heap or a partial
// sort.
func TopK(vals []float32, ids []int32, x []float32, T, N, K int) {
	if T < 0 || K < 1 || N < K || len(vals) < T*K || len(ids) < T*K || len(x) < T*N {
		panic(fmt.Sprintf("kernel.TopK: T=%d N=%d K=%d need 1 ≤ K ≤ N, len(vals), len(ids) ≥ T·K, len(x) ≥ T·N; have vals %d, ids %d, x %d",
			T, N, K, len(vals), len(ids), len(x)))
	}
	if K == 1 {
		for t := 0; t < T; t++ {
			row := x[t*N : t*N+N]
			best, at := row[0], 0
			for j, v := range row {
				// v beats best if larger, or if best is NaN and v is not.
				if v > best || (best != best && v == v) {
					best, at = v, j
				}
			}
			vals[t], ids[t] = best, int32(at)
		}
		return
	}
	for t := 0; t < T; t++ {
		row := x[t*N : t*N+N]
		vr := vals[t*K : t*K+K]
		ir := ids[t*K : t*K+K : t*K+K]
		ir = ir[:len(vr)]
		// Fill with the first K columns, insertion-sorted.
		for j := 0; j < K; j++ {
			topkInsert(vr[:j+1], ir[:j+1], row[j], j)
		}
		// The rest only enter if they beat the current K-th.
		last := vr[K-1]
		for j, v := range row[K:] {
			if v > last || (last != last && v == v) {
				topkInsert(vr, ir, v, K+j)
				last = vr[K-1]
			}
		}
	}
}

// topkInsert places (v, j) into the sorted vr/ir, dropping the last entry:
// v moves up past every entry it beats (strictly larger, or a number
// against NaN), so equal values keep index order.
func topkInsert(vr []float32, ir []int32, v float32, j int) {
	ir = ir[:len(vr)]
	p := len(vr) - 1
	for p > 0 {
		u := vr[p-1]
		if !(v > u || (u != u && v == v)) {
			break
		}
		vr[p], ir[p] = u, ir[p-1]
		p--
	}
	vr[p], ir[p] = v, int32(j)
}
