package kernel

import (
	"fmt"
	"math"
)

// LayerNorm normalises each row of x to zero mean and unit variance, then
// scales and shifts (torch.nn.LayerNorm over the last dim, biased variance):
//
//	mean[t] = Σ_d x[t,d] / D
//	rstd[t] = 1/sqrt(Σ_d (x[t,d]−mean[t])² / D + eps)
//	out[t,d] = (x[t,d]−mean[t]) · rstd[t] · w[d] + b[d]
//
// Shapes: out, x (T, D); w, b (D), b nil for no bias; mean, rstd (T), nil
// when no backward follows (pass both or neither). The variance is two-pass,
// so rows with a large common offset lose no precision. out may alias x.
func LayerNorm(out, mean, rstd, x, w, b []float32, T, D int, eps float32) {
	checkLayerNorm("LayerNorm", out, mean, rstd, x, w, b, T, D)
	w = w[:D]
	for t := 0; t < T; t++ {
		xr := x[t*D : t*D+D]
		or := out[t*D : t*D+D]
		mu := rowSum(xr) / float32(D)
		v := rowSumSqDev(xr, mu) / float32(D)
		r := float32(1 / math.Sqrt(float64(v+eps)))
		if mean != nil {
			mean[t] = mu
		}
		if rstd != nil {
			rstd[t] = r
		}
		xr, wr := xr[:len(or)], w[:len(or)]
		if b == nil {
			for i := range or {
				or[i] = (xr[i] - mu) * r * wr[i]
			}
			continue
		}
		br := b[:len(or)]
		for i := range or {
			or[i] = (xr[i]-mu)*r*wr[i] + br[i]
		}
	}
}

// LayerNormBackward computes the gradients of LayerNorm given dout and the
// mean and rstd that the forward pass saved. With x̂ = (x−mean)·rstd and
// g = dout·w:
//
//	dx[t,d] = rstd · (g[d] − mean_j g[j] − x̂[d] · mean_j g[j]·x̂[j])   (overwritten)
//	dw[d]  += Σ_t dout[t,d]·x̂[t,d]                                    (accumulated)
//	db[d]  += Σ_t dout[t,d]                                           (accumulated; db may be nil)
//
// Shapes: dx, dout, x (T, D); w, dw, db (D); mean, rstd (T). dx may alias dout.
func LayerNormBackward(dx, dw, db, dout, x, w, mean, rstd []float32, T, D int) {
	checkLayerNormBackward(dx, dw, db, dout, x, w, mean, rstd, T, D)
	w, dw = w[:D], dw[:D]
	for t := 0; t < T; t++ {
		xr := x[t*D : t*D+D]
		gr := dout[t*D : t*D+D]
		dr := dx[t*D : t*D+D]
		mu, r := mean[t], rstd[t]
		// Σ dout·w and Σ dout·w·x̂, four partial sums each.
		var a0, a1, a2, a3, c0, c1, c2, c3 float32
		xr, wr := xr[:len(gr)], w[:len(gr)]
		i, n := 0, len(gr)
		for ; i < n-3; i += 4 {
			g0, g1, g2, g3 := gr[i]*wr[i], gr[i+1]*wr[i+1], gr[i+2]*wr[i+2], gr[i+3]*wr[i+3]
			a0 += g0
			a1 += g1
			a2 += g2
			a3 += g3
			c0 += g0 * (xr[i] - mu)
			c1 += g1 * (xr[i+1] - mu)
			c2 += g2 * (xr[i+2] - mu)
			c3 += g3 * (xr[i+3] - mu)
		}
		for ; i < n; i++ {
			g := gr[i] * wr[i]
			a0 += g
			c0 += g * (xr[i] - mu)
		}
		invD := 1 / float32(D)
		meanG := ((a0 + a1) + (a2 + a3)) * invD
		meanGX := ((c0 + c1) + (c2 + c3)) * r * invD
		dr, dwr := dr[:len(gr)], dw[:len(gr)]
		if db != nil {
			dbr := db[:len(gr)]
			for i, g := range gr {
				dbr[i] += g
			}
		}
		for i, g := range gr {
			xh := (xr[i] - mu) * r
			dwr[i] += g * xh
			dr[i] = r * (g*wr[i] - meanG - xh*meanGX)
		}
	}
}

func checkLayerNorm(op string, out, mean, rstd, x, w, b []float32, T, D int) {
	n := T * D
	if T < 0 || D < 1 || len(out) < n || len(x) < n || len(w) < D || (b != nil && len(b) < D) ||
		(mean != nil && len(mean) < T) || (rstd != nil && len(rstd) < T) {
		panic(fmt.Sprintf("kernel.%s: T=%d D=%d need len(out), len(x) ≥ T·D, len(w) ≥ D, len(b) ≥ D or nil, len(mean), len(rstd) ≥ T or nil; have out %d, mean %d, rstd %d, x %d, w %d, b %d",
			op, T, D, len(out), len(mean), len(rstd), len(x), len(w), len(b)))
	}
}

func checkLayerNormBackward(dx, dw, db, dout, x, w, mean, rstd []float32, T, D int) {
	n := T * D
	if T < 0 || D < 1 || len(dx) < n || len(dout) < n || len(x) < n || len(w) < D || len(dw) < D ||
		(db != nil && len(db) < D) || len(mean) < T || len(rstd) < T {
		panic(fmt.Sprintf("kernel.LayerNormBackward: T=%d D=%d need len(dx), len(dout), len(x) ≥ T·D, len(w), len(dw) ≥ D, len(db) ≥ D or nil, len(mean), len(rstd) ≥ T; have dx %d, dw %d, db %d, dout %d, x %d, w %d, mean %d, rstd %d",
			T, D, len(dx), len(dw), len(db), len(dout), len(x), len(w), len(mean), len(rstd)))
	}
}
