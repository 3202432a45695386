package kernel

import (
	"fmt"
	"math"
)

// Elementwise activations and their backward passes. out and x (or dx, dout
// and x) have the same length n; outputs may alias inputs. Accuracy against
// the float64 formulas: SiLU and GELU-tanh within a few ulp (expPoly is ≤ 1
// ulp); GELU (erf) is computed in float64 and rounded once.

// SiLU computes out[i] = x[i]·sigmoid(x[i]) = x[i] / (1 + e^(−x[i])), as
// PyTorch's CPU kernel writes it: for x < −88.7, e^(−x) overflows and the
// result is −0 where the true value is below 1e-36 in magnitude, as there.
func SiLU(out, x []float32) {
	checkEltwise("SiLU", out, x)
	out = out[:len(x)]
	for i, v := range x {
		out[i] = v / (1 + expPoly(-v))
	}
}

// SiLUBackward computes dx[i] = dout[i] · s·(1 + x·(1−s)) with s =
// sigmoid(x[i]); 1−s is formed as e^(−x)·s to keep its relative accuracy
// where s is close to 1. x is clamped below at −88 (the slope there is
// below 1e-36 in magnitude), so very negative x cannot make ∞·0.
func SiLUBackward(dx, dout, x []float32) {
	checkEltwise2("SiLUBackward", dx, dout, x)
	dx, dout = dx[:len(x)], dout[:len(x)]
	for i, v := range x {
		v = max(v, -expArgCap)
		e := expPoly(-v)
		s := 1 / (1 + e)
		dx[i] = dout[i] * s * (1 + v*(e*s))
	}
}

// GELU computes the exact (erf) GELU, torch.nn.functional.gelu's default:
//
//	out[i] = x·Φ(x) = x/2 · erfc(−x/√2)
//
// in float64 (erfc keeps the negative tail accurate) and rounds once.
func GELU(out, x []float32) {
	checkEltwise("GELU", out, x)
	out = out[:len(x)]
	for i, v := range x {
		f := float64(v)
		out[i] = float32(0.5 * f * math.Erfc(-f*(1/math.Sqrt2)))
	}
}

// GELUBackward computes dx[i] = dout[i] · (Φ(x) + x·φ(x)), φ the standard
// normal density, in float64.
func GELUBackward(dx, dout, x []float32) {
	checkEltwise2("GELUBackward", dx, dout, x)
	dx, dout = dx[:len(x)], dout[:len(x)]
	const invSqrt2Pi = 0.3989422804014327 // 1/√(2π)
	for i, v := range x {
		f := float64(v)
		d := 0.5*math.Erfc(-f*(1/math.Sqrt2)) + f*invSqrt2Pi*math.Exp(-0.5*f*f)
		dx[i] = float32(float64(dout[i]) * d)
	}
}

const (
	geluTanhK     = 0.7978845608028654 // √(2/π)
	geluTanhC     = 0.044715           // cubic coefficient of the tanh GELU
	geluTanhClamp = 20                 // |x| past which the tanh GELU's slope is 0 or 1 in float32
	expArgCap     = 88                 // largest e^a argument the backward passes form: e^88 < MaxFloat32
)

// GELUTanh computes the tanh approximation of GELU (gelu(x,
// approximate="tanh"), "gelu_pytorch_tanh" in Hugging Face configs):
//
//	out = x/2 · (1 + tanh(u)),  u = √(2/π)·(x + 0.044715·x³)
//
// using the identity (1 + tanh u)/2 = sigmoid(2u), so out = x / (1 + e^(−2u)):
// no cancellation for negative x, no tanh call. e^(−2u) is ill-conditioned in
// its argument (relative error ≈ |2u|·δ), so −2u is formed in float64 and
// split a + b, a its float32 rounding, e^(a+b) ≈ expPoly(a)·(1+b): each
// output stays within a few ulp (≤ 4 checked) instead of losing |2u|·2⁻²⁴.
func GELUTanh(out, x []float32) {
	checkEltwise("GELUTanh", out, x)
	out = out[:len(x)]
	for i, v := range x {
		out[i] = v / (1 + expNeg2U(float64(v), expPolyHi+1))
	}
}

// expNeg2U returns e^(−2u) for the tanh GELU's u at x, the exponent clamped
// to [expPolyLo−1, hi]: the forward lets e^(−2u) overflow to +Inf (x/Inf =
// −0), the backward caps it at e^88 to keep (1−s) = e·s finite.
func expNeg2U(x, hi float64) float32 {
	a64 := max(expPolyLo-1, min(-2*geluTanhK*(x+geluTanhC*x*x*x), hi))
	a := float32(a64)
	return expPoly(a) * (1 + float32(a64-float64(a)))
}

// GELUTanhBackward computes dx[i] = dout[i] · (s + x·2s(1−s)·u′) with s =
// sigmoid(2u), u′ = √(2/π)·(1 + 3·0.044715·x²); 1−s is formed as e^(−2u)·s.
// x is clamped to ±geluTanhClamp (beyond it the derivative is 1 or 0 to
// float32 precision) and e^(−2u) capped, so huge |x| cannot make ∞·0.
func GELUTanhBackward(dx, dout, x []float32) {
	checkEltwise2("GELUTanhBackward", dx, dout, x)
	dx, dout = dx[:len(x)], dout[:len(x)]
	for i, v := range x {
		v = max(-geluTanhClamp, min(v, geluTanhClamp))
		du := geluTanhK * (1 + 3*geluTanhC*v*v)
		e := expNeg2U(float64(v), expArgCap)
		s := 1 / (1 + e)
		dx[i] = dout[i] * (s + v*2*s*(e*s)*du)
	}
}

func checkEltwise(op string, out, x []float32) {
	if len(out) < len(x) {
		panic(fmt.Sprintf("kernel.%s: len(out)=%d < len(x)=%d", op, len(out), len(x)))
	}
}

func checkEltwise2(op string, dx, dout, x []float32) {
	if len(dx) < len(x) || len(dout) < len(x) {
		panic(fmt.Sprintf("kernel.%s: need len(dx), len(dout) ≥ len(x)=%d; have dx %d, dout %d", op, len(x), len(dx), len(dout)))
	}
}
