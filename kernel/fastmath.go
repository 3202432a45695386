package kernel

import "math"

// A float32 exponential for the elementwise kernels (softmax, cross-entropy,
// SiLU, SwiGLU, GELU-tanh).
//
// Method (Cephes expf): n = round(x·log2 e); r = x − n·ln2 with ln2 split in
// two (Cody–Waite) so r is exact to float32; exp(r) = 1 + r + r²·P(r) with a
// degree-5 minimax P on |r| ≤ ln2/2; the result is scaled by 2^n as two
// factors 2^(n/2)·2^(n−n/2) so that n = 128 (x close to ln MaxFloat32) and
// gradual underflow (x below −87.3) need no special case.
//
// Accuracy, measured against math.Exp over every float32 in [−87.3, 88.7]
// (TestExpPolyULP samples them): at most 1 ulp (worst 0.99), about 93% of
// results correctly rounded. x > ln(MaxFloat32) gives +Inf, x < −104 gives 0,
// NaN gives NaN. Where the compiler fuses multiply-adds (arm64, GOAMD64=v3)
// the last bit may differ from an amd64 v1 build; the test checks the bound
// on whatever arithmetic the build uses.
//
// expPoly is too large for Go's inliner, so the two hot loops below
// (expShiftInto, expShiftSum64) repeat its body inline; TestExpPolyLoops holds
// them bit-identical to expPoly.

const (
	expPolyHi   = 88.72283905206835 // ln(MaxFloat32): above, exp overflows
	expPolyLo   = -104.0            // below ln(smallest subnormal) − 0.7: exp rounds to 0
	expLog2e    = 1.44269504088896341
	expLn2Hi    = 0.693359375 // ln 2 = expLn2Hi + expLn2Lo; expLn2Hi has 9 significant bits
	expLn2Lo    = -2.12194440e-4
	expRound    = 12582912.0 // 1.5·2^23: adding it rounds a float32 to an integer (ties to even)
	expRoundInt = 0x4B400000 // bits of expRound
	expP0       = 1.9875691500e-4
	expP1       = 1.3981999507e-3
	expP2       = 8.3334519073e-3
	expP3       = 4.1665795894e-2
	expP4       = 1.6666665459e-1
	expP5       = 5.0000001201e-1
)

// expPoly returns e^x; see the accuracy note above.
func expPoly(x float32) float32 {
	if x > expPolyHi {
		return float32(math.Inf(1))
	}
	if !(x >= expPolyLo) { // below range, or NaN
		if x != x {
			return x
		}
		return 0
	}
	k := x*expLog2e + expRound
	n := int32(math.Float32bits(k)) - expRoundInt
	nf := k - expRound
	r := x - nf*expLn2Hi
	r -= nf * expLn2Lo
	p := float32(expP0)
	p = p*r + expP1
	p = p*r + expP2
	p = p*r + expP3
	p = p*r + expP4
	p = p*r + expP5
	p = p*(r*r) + r + 1
	n1 := n >> 1
	return p * math.Float32frombits(uint32(n1+127)<<23) * math.Float32frombits(uint32(n-n1+127)<<23)
}

// expShiftInto sets dst[i] = e^(src[i]−shift) for i < len(src) and returns
// the sum of the results, accumulated in float64 in four interleaved partial
// sums. The caller guarantees src[i]−shift ≤ ln(MaxFloat32) (softmax passes
// the row maximum, cross-entropy the row's log-sum-exp); larger values would
// not overflow to +Inf here. dst may alias src.
func expShiftInto(dst, src []float32, shift float32) float64 {
	n := len(src)
	if n == 0 {
		return 0
	}
	dst = dst[:n]
	var acc [4]float64
	for i, v := range src {
		x := v - shift
		var e float32
		if x >= expPolyLo {
			k := x*expLog2e + expRound
			m := int32(math.Float32bits(k)) - expRoundInt
			nf := k - expRound
			r := x - nf*expLn2Hi
			r -= nf * expLn2Lo
			p := float32(expP0)
			p = p*r + expP1
			p = p*r + expP2
			p = p*r + expP3
			p = p*r + expP4
			p = p*r + expP5
			p = p*(r*r) + r + 1
			m1 := m >> 1
			e = p * math.Float32frombits(uint32(m1+127)<<23) * math.Float32frombits(uint32(m-m1+127)<<23)
		} else if x != x {
			e = x
		}
		dst[i] = e
		acc[i&3] += float64(e)
	}
	return (acc[0] + acc[1]) + (acc[2] + acc[3])
}

// expShiftSum64 returns Σ e^(src[i]−shift), each term rounded to float32 as
// expPoly does and summed in float64 (four partial sums). Same precondition as
// expShiftInto.
func expShiftSum64(src []float32, shift float32) float64 {
	var acc [4]float64
	for i, v := range src {
		x := v - shift
		var e float32
		if x >= expPolyLo {
			k := x*expLog2e + expRound
			m := int32(math.Float32bits(k)) - expRoundInt
			nf := k - expRound
			r := x - nf*expLn2Hi
			r -= nf * expLn2Lo
			p := float32(expP0)
			p = p*r + expP1
			p = p*r + expP2
			p = p*r + expP3
			p = p*r + expP4
			p = p*r + expP5
			p = p*(r*r) + r + 1
			m1 := m >> 1
			e = p * math.Float32frombits(uint32(m1+127)<<23) * math.Float32frombits(uint32(m-m1+127)<<23)
		} else if x != x {
			e = x
		}
		acc[i&3] += float64(e)
	}
	return (acc[0] + acc[1]) + (acc[2] + acc[3])
}
