package kernel

import "math"

// SiLURef is the naive twin of SiLU (float64).
func SiLURef(out, x []float32) { checkEltwise("SiLURef", out, x); siluRef(out, x) }

// SiLUBackwardRef is the naive twin of SiLUBackward (float64).
func SiLUBackwardRef(dx, dout, x []float32) {
	checkEltwise2("SiLUBackwardRef", dx, dout, x)
	siluBackwardRef(dx, dout, x)
}

// GELURef is the naive twin of GELU: x/2·(1 + erf(x/√2)) in float64.
func GELURef(out, x []float32) { checkEltwise("GELURef", out, x); geluRef(out, x) }

// GELUBackwardRef is the naive twin of GELUBackward (float64).
func GELUBackwardRef(dx, dout, x []float32) {
	checkEltwise2("GELUBackwardRef", dx, dout, x)
	geluBackwardRef(dx, dout, x)
}

// GELUTanhRef is the naive twin of GELUTanh: the textbook form
// x/2·(1 + tanh(√(2/π)(x + 0.044715x³))) in float64.
func GELUTanhRef(out, x []float32) { checkEltwise("GELUTanhRef", out, x); geluTanhRef(out, x) }

// GELUTanhBackwardRef is the naive twin of GELUTanhBackward (float64,
// differentiating the tanh form directly).
func GELUTanhBackwardRef(dx, dout, x []float32) {
	checkEltwise2("GELUTanhBackwardRef", dx, dout, x)
	geluTanhBackwardRef(dx, dout, x)
}

func sigmoid64(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

func siluRef[F refFloat](out, x []F) {
	for i, v := range x {
		out[i] = F(float64(v) * sigmoid64(float64(v)))
	}
}

func siluBackwardRef[F refFloat](dx, dout, x []F) {
	for i, v := range x {
		f := float64(v)
		s := sigmoid64(f)
		dx[i] = F(float64(dout[i]) * (s + f*s*(1-s)))
	}
}

func geluRef[F refFloat](out, x []F) {
	for i, v := range x {
		f := float64(v)
		out[i] = F(0.5 * f * (1 + math.Erf(f/math.Sqrt2)))
	}
}

func geluBackwardRef[F refFloat](dx, dout, x []F) {
	for i, v := range x {
		f := float64(v)
		cdf := 0.5 * (1 + math.Erf(f/math.Sqrt2))
		pdf := math.Exp(-f*f/2) / math.Sqrt(2*math.Pi)
		dx[i] = F(float64(dout[i]) * (cdf + f*pdf))
	}
}

func geluTanhRef[F refFloat](out, x []F) {
	for i, v := range x {
		f := float64(v)
		out[i] = F(0.5 * f * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(f+0.044715*f*f*f))))
	}
}

func geluTanhBackwardRef[F refFloat](dx, dout, x []F) {
	for i, v := range x {
		f := float64(v)
		k := math.Sqrt(2 / math.Pi)
		th := math.Tanh(k * (f + 0.044715*f*f*f))
		d := 0.5*(1+th) + 0.5*f*(1-th*th)*k*(1+3*0.044715*f*f)
		dx[i] = F(float64(dout[i]) * d)
	}
}
