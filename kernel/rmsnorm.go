package kernel

import (
	"fmt"
	"math"
)

// RMSNorm normalises each row of x by its root mean square and scales by w:
//
//	rstd[t] = 1/sqrt(mean_d x[t,d]² + eps)
//	out[t,d] = x[t,d] · rstd[t] · w[d]
//
// as Llama/Mixtral/Qwen do (the Hugging Face LlamaRMSNorm order: normalise,
// then multiply by the weight). Shapes: out (T, D), rstd (T) or nil when no
// backward follows, x (T, D), w (D), all row-major. out may alias x. For the
// per-head q/k norm of Qwen3 pass the (T·H, Dh) view.
func RMSNorm(out, rstd, x, w []float32, T, D int, eps float32) {
	checkRMSNorm("RMSNorm", out, rstd, x, w, T, D)
	w = w[:D]
	for t := 0; t < T; t++ {
		xr := x[t*D : t*D+D]
		or := out[t*D : t*D+D]
		ms := rowSumSq(xr) / float32(D)
		r := float32(1 / math.Sqrt(float64(ms+eps)))
		if rstd != nil {
			rstd[t] = r
		}
		xr = xr[:len(or)]
		wr := w[:len(or)]
		for i := range or {
			or[i] = xr[i] * r * wr[i]
		}
	}
}

// RMSNormBackward computes the gradients of RMSNorm given dout and the rstd
// that the forward pass saved:
//
//	dx[t,d] = rstd·w[d]·dout[t,d] − x[t,d]·rstd³/D · Σ_j dout[t,j]·w[j]·x[t,j]   (overwritten)
//	dw[d]  += Σ_t dout[t,d]·x[t,d]·rstd[t]                                      (accumulated)
//
// Shapes: dx, dout, x (T, D); w, dw (D); rstd (T). dx may alias dout.
func RMSNormBackward(dx, dw, dout, x, w, rstd []float32, T, D int) {
	checkRMSNormBackward(dx, dw, dout, x, w, rstd, T, D)
	w = w[:D]
	dw = dw[:D]
	for t := 0; t < T; t++ {
		xr := x[t*D : t*D+D]
		gr := dout[t*D : t*D+D]
		dr := dx[t*D : t*D+D]
		r := rstd[t]
		// Σ dout·w·x in four partial sums.
		var s0, s1, s2, s3 float32
		xr, wr := xr[:len(gr)], w[:len(gr)]
		i, n := 0, len(gr)
		for ; i < n-3; i += 4 {
			s0 += gr[i] * wr[i] * xr[i]
			s1 += gr[i+1] * wr[i+1] * xr[i+1]
			s2 += gr[i+2] * wr[i+2] * xr[i+2]
			s3 += gr[i+3] * wr[i+3] * xr[i+3]
		}
		for ; i < n; i++ {
			s0 += gr[i] * wr[i] * xr[i]
		}
		c := ((s0 + s1) + (s2 + s3)) * r * r * r / float32(D)
		dr, dwr := dr[:len(gr)], dw[:len(gr)]
		for i, g := range gr {
			xi := xr[i]
			dwr[i] += g * xi * r
			dr[i] = r*wr[i]*g - c*xi
		}
	}
}

func checkRMSNorm(op string, out, rstd, x, w []float32, T, D int) {
	if T < 0 || D < 1 || len(out) < T*D || len(x) < T*D || len(w) < D || (rstd != nil && len(rstd) < T) {
		panic(fmt.Sprintf("kernel.%s: T=%d D=%d need len(out), len(x) ≥ T·D, len(w) ≥ D, len(rstd) ≥ T or nil; have out %d, rstd %d, x %d, w %d",
			op, T, D, len(out), len(rstd), len(x), len(w)))
	}
}

func checkRMSNormBackward(dx, dw, dout, x, w, rstd []float32, T, D int) {
	n := T * D
	if T < 0 || D < 1 || len(dx) < n || len(dout) < n || len(x) < n || len(w) < D || len(dw) < D || len(rstd) < T {
		panic(fmt.Sprintf("kernel.RMSNormBackward: T=%d D=%d need len(dx), len(dout), len(x) ≥ T·D, len(w), len(dw) ≥ D, len(rstd) ≥ T; have dx %d, dw %d, dout %d, x %d, w %d, rstd %d",
			T, D, len(dx), len(dw), len(dout), len(x), len(w), len(rstd)))
	}
}
