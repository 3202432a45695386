package kernel

import "github.com/moesys/moesys/tensor"

// EmbeddingRef is the naive twin of Embedding.
func EmbeddingRef(out, table []float32, ids []int32, T, D int) {
	for t := 0; t < T; t++ {
		for d := 0; d < D; d++ {
			out[t*D+d] = table[int(ids[t])*D+d]
		}
	}
}

// EmbeddingBF16Ref is the naive twin of EmbeddingBF16.
func EmbeddingBF16Ref(out []float32, table []uint16, ids []int32, T, D int) {
	for t := 0; t < T; t++ {
		for d := 0; d < D; d++ {
			out[t*D+d] = tensor.BF16ToF32(table[int(ids[t])*D+d])
		}
	}
}

// EmbeddingBackwardRef is the naive twin of EmbeddingBackward: each table
// entry sums its tokens' gradients in float64 and adds once.
func EmbeddingBackwardRef(dtable, dout []float32, ids []int32, T, D int) {
	V := len(dtable) / D
	for v := 0; v < V; v++ {
		for d := 0; d < D; d++ {
			s, hit := 0.0, false
			for t := 0; t < T; t++ {
				if int(ids[t]) == v {
					s += float64(dout[t*D+d])
					hit = true
				}
			}
			if hit {
				dtable[v*D+d] = float32(float64(dtable[v*D+d]) + s)
			}
		}
	}
}
