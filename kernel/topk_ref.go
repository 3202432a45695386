package kernel

import "sort"

// TopKRef is the naive twin of TopK: a stable sort of each row's column
// indices by value, descending, NaN last.
func TopKRef(vals []float32, ids []int32, x []float32, T, N, K int) {
	idx := make([]int, N)
	for t := 0; t < T; t++ {
		row := x[t*N : t*N+N]
		for j := range idx {
			idx[j] = j
		}
		sort.SliceStable(idx, func(a, b int) bool {
			va, vb := row[idx[a]], row[idx[b]]
			if va != va {
				return false // NaN is never before anything
			}
			return vb != vb || va > vb
		})
		for k := 0; k < K; k++ {
			vals[t*K+k], ids[t*K+k] = row[idx[k]], int32(idx[k])
		}
	}
}
