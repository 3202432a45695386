package kernel

import "math"

// RMSNormRef is the naive twin of RMSNorm (float64 sums).
func RMSNormRef(out, rstd, x, w []float32, T, D int, eps float32) {
	checkRMSNorm("RMSNormRef", out, rstd, x, w, T, D)
	rmsNormRef(out, rstd, x, w, T, D, float64(eps))
}

// RMSNormBackwardRef is the naive twin of RMSNormBackward (float64 sums).
func RMSNormBackwardRef(dx, dw, dout, x, w, rstd []float32, T, D int) {
	checkRMSNormBackward(dx, dw, dout, x, w, rstd, T, D)
	rmsNormBackwardRef(dx, dw, dout, x, w, rstd, T, D)
}

func rmsNormRef[F refFloat](out, rstd, x, w []F, T, D int, eps float64) {
	for t := 0; t < T; t++ {
		ss := 0.0
		for d := 0; d < D; d++ {
			v := float64(x[t*D+d])
			ss += v * v
		}
		r := 1 / math.Sqrt(ss/float64(D)+eps)
		if rstd != nil {
			rstd[t] = F(r)
		}
		for d := 0; d < D; d++ {
			out[t*D+d] = F(float64(x[t*D+d]) * r * float64(w[d]))
		}
	}
}

func rmsNormBackwardRef[F refFloat](dx, dw, dout, x, w, rstd []F, T, D int) {
	for t := 0; t < T; t++ {
		r := float64(rstd[t])
		dot := 0.0 // Σ_j dout·w·x
		for d := 0; d < D; d++ {
			dot += float64(dout[t*D+d]) * float64(w[d]) * float64(x[t*D+d])
		}
		for d := 0; d < D; d++ {
			g, xv := float64(dout[t*D+d]), float64(x[t*D+d])
			dx[t*D+d] = F(r*float64(w[d])*g - xv*r*r*r*dot/float64(D))
		}
	}
	for d := 0; d < D; d++ {
		s := 0.0 // Σ_t dout·x·rstd
		for t := 0; t < T; t++ {
			s += float64(dout[t*D+d]) * float64(x[t*D+d]) * float64(rstd[t])
		}
		dw[d] += F(s)
	}
}
