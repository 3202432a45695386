package kernel

import "math"

// SoftmaxRef is the naive twin of Softmax (float64 exp and sums).
func SoftmaxRef(out, x []float32, T, N int) {
	checkSoftmax("SoftmaxRef", out, x, T, N)
	softmaxRef(out, x, T, N)
}

// SoftmaxBackwardRef is the naive twin of SoftmaxBackward (float64 sums).
func SoftmaxBackwardRef(dx, dout, out []float32, T, N int) {
	softmaxBackwardRef(dx, dout, out, T, N)
}

func softmaxRef[F refFloat](out, x []F, T, N int) {
	for t := 0; t < T; t++ {
		row := x[t*N : t*N+N]
		m := math.Inf(-1)
		for _, v := range row {
			if v != v {
				m = math.NaN()
				break
			}
			m = math.Max(m, float64(v))
		}
		sum := 0.0
		for _, v := range row {
			sum += math.Exp(float64(v) - m)
		}
		for i, v := range row {
			out[t*N+i] = F(math.Exp(float64(v)-m) / sum)
		}
	}
}

func softmaxBackwardRef[F refFloat](dx, dout, out []F, T, N int) {
	for t := 0; t < T; t++ {
		dot := 0.0
		for i := 0; i < N; i++ {
			dot += float64(dout[t*N+i]) * float64(out[t*N+i])
		}
		for i := 0; i < N; i++ {
			dx[t*N+i] = F(float64(out[t*N+i]) * (float64(dout[t*N+i]) - dot))
		}
	}
}
