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
// PyTorch's CPU kernel writes it (so x ≲ −88 gives −0 where the true value is
// a denormal, as there).
func SiLU(out, x []float32) {
	checkEltwise("SiLU", out, x)
	out = out[:len(x)]
	for i, v := range x {
		out[i] = v / (1 + expPoly(-v))
	}
}

// SiLUBackward computes dx[i] = dout[i] · s·(1 + x·(1−s)) with s =
// sigmoid(x[i]); 1−s is formed as e^(−x)·s to keep its relative accuracy
// where s is close to 1, and e^(−x) is capped at e^88 so that very negative x
// give a tiny derivative rather than ∞·0.
func SiLUBackward(dx, dout, x []float32) {
	checkEltwise2("SiLUBackward", dx, dout, x)
	dx, dout = dx[:len(x)], dout[:len(x)]
	for i, v := range x {
		e := expPoly(min(-v, expArgCap))
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
// no cancellation for negative x, no tanh call.
func GELUTanh(out, x []float32) {
	checkEltwise("GELUTanh", out, x)
	out = out[:len(x)]
	for i, v := range x {
		u := geluTanhK * (v + geluTanhC*v*v*v)
		out[i] = v / (1 + expPoly(-2*u))
	}
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
		v2 := v * v
		u := geluTanhK * (v + geluTanhC*v2*v)
		du := geluTanhK * (1 + 3*geluTanhC*v2)
		e := expPoly(min(-2*u, expArgCap))
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
