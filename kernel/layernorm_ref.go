package kernel

import "math"

// LayerNormRef is the naive twin of LayerNorm (float64 sums).
func LayerNormRef(out, mean, rstd, x, w, b []float32, T, D int, eps float32) {
	checkLayerNorm("LayerNormRef", out, mean, rstd, x, w, b, T, D)
	layerNormRef(out, mean, rstd, x, w, b, T, D, float64(eps))
}

// LayerNormBackwardRef is the naive twin of LayerNormBackward (float64 sums).
func LayerNormBackwardRef(dx, dw, db, dout, x, w, mean, rstd []float32, T, D int) {
	checkLayerNormBackward(dx, dw, db, dout, x, w, mean, rstd, T, D)
	layerNormBackwardRef(dx, dw, db, dout, x, w, mean, rstd, T, D)
}

func layerNormRef[F refFloat](out, mean, rstd, x, w, b []F, T, D int, eps float64) {
	for t := 0; t < T; t++ {
		mu := 0.0
		for d := 0; d < D; d++ {
			mu += float64(x[t*D+d])
		}
		mu /= float64(D)
		v := 0.0
		for d := 0; d < D; d++ {
			dev := float64(x[t*D+d]) - mu
			v += dev * dev
		}
		r := 1 / math.Sqrt(v/float64(D)+eps)
		if mean != nil {
			mean[t] = F(mu)
		}
		if rstd != nil {
			rstd[t] = F(r)
		}
		for d := 0; d < D; d++ {
			y := (float64(x[t*D+d]) - mu) * r * float64(w[d])
			if b != nil {
				y += float64(b[d])
			}
			out[t*D+d] = F(y)
		}
	}
}

func layerNormBackwardRef[F refFloat](dx, dw, db, dout, x, w, mean, rstd []F, T, D int) {
	xhat := func(t, d int) float64 { return (float64(x[t*D+d]) - float64(mean[t])) * float64(rstd[t]) }
	for t := 0; t < T; t++ {
		sg, sgx := 0.0, 0.0 // Σ g, Σ g·x̂ with g = dout·w
		for d := 0; d < D; d++ {
			g := float64(dout[t*D+d]) * float64(w[d])
			sg += g
			sgx += g * xhat(t, d)
		}
		for d := 0; d < D; d++ {
			g := float64(dout[t*D+d]) * float64(w[d])
			dx[t*D+d] = F(float64(rstd[t]) * (g - sg/float64(D) - xhat(t, d)*sgx/float64(D)))
		}
	}
	for d := 0; d < D; d++ {
		sw, sb := 0.0, 0.0
		for t := 0; t < T; t++ {
			sw += float64(dout[t*D+d]) * xhat(t, d)
			sb += float64(dout[t*D+d])
		}
		dw[d] += F(sw)
		if db != nil {
			db[d] += F(sb)
		}
	}
}
