package kernel

import "fmt"

// Softmax computes a numerically stable softmax of each row of x:
//
//	out[t,i] = exp(x[t,i] − m) / Σ_j exp(x[t,j] − m),   m = max_j x[t,j]
//
// Shapes: out, x (T, N) row-major; out may alias x. exp is expPoly (≤ 1 ulp)
// and the row sum is accumulated in float64, so each output is within a few
// ulp of the exact value. As in PyTorch, a row containing NaN or +Inf, or a row
// of all −Inf, comes out all NaN; −Inf entries of other rows give exactly 0.
func Softmax(out, x []float32, T, N int) {
	checkSoftmax("Softmax", out, x, T, N)
	for t := 0; t < T; t++ {
		xr := x[t*N : t*N+N]
		or := out[t*N : t*N+N]
		m := rowMax(xr)
		sum := expShiftInto(or, xr, m)
		inv := float32(1 / sum)
		for i := range or {
			or[i] *= inv
		}
	}
}

// SoftmaxBackward maps the gradient with respect to Softmax's output to the
// gradient with respect to its input, given the forward output:
//
//	dx[t,i] = out[t,i] · (dout[t,i] − Σ_j dout[t,j]·out[t,j])
//
// Shapes: dx, dout, out (T, N); dx may alias dout.
func SoftmaxBackward(dx, dout, out []float32, T, N int) {
	if T < 0 || N < 1 || len(dx) < T*N || len(dout) < T*N || len(out) < T*N {
		panic(fmt.Sprintf("kernel.SoftmaxBackward: T=%d N=%d need N ≥ 1, len(dx), len(dout), len(out) ≥ T·N; have dx %d, dout %d, out %d",
			T, N, len(dx), len(dout), len(out)))
	}
	for t := 0; t < T; t++ {
		gr := dout[t*N : t*N+N]
		yr := out[t*N : t*N+N]
		dr := dx[t*N : t*N+N]
		dot := rowDot(gr, yr)
		yr, dr = yr[:len(gr)], dr[:len(gr)]
		for i, g := range gr {
			dr[i] = yr[i] * (g - dot)
		}
	}
}

func checkSoftmax(op string, out, x []float32, T, N int) {
	if T < 0 || N < 1 || len(out) < T*N || len(x) < T*N {
		panic(fmt.Sprintf("kernel.%s: T=%d N=%d need N ≥ 1, len(out), len(x) ≥ T·N; have out %d, x %d",
			op, T, N, len(out), len(x)))
	}
}
