package sample

import "math"

// exp32 returns e^x rounded to float32, for the token weights
// exp((z−max)/Temperature), whose arguments are ≤ 0. It is the Cephes expf
// scheme that kernel/fastmath.go uses (kernel keeps its copy unexported):
// n = round(x·log₂e); r = x − n·ln2 with ln2 split in two (Cody–Waite) so r
// is exact; e^r = 1 + r + r²·P(r), P a degree-5 minimax polynomial on
// |r| ≤ ln2/2; the result scaled by 2^n as two factors so that results down
// to the smallest subnormal need no special case.
//
// Why not math.Exp: one exp per token is the largest cost of Next at 150k
// tokens; inlined in weigh, this one costs about half as much as math.Exp
// with its float64 conversions. Accuracy: at most 1 ulp from the correctly
// rounded float32 of math.Exp (TestExp32 checks it); x < −104 gives 0. Every product is rounded by an explicit float32 conversion, which
// stops the compiler from fusing multiply-adds (Go does on arm64, ppc64,
// s390x), so the weights, and hence the sampled tokens, are the same bits on
// every architecture.
func exp32(x float32) float32 {
	if !(x >= expLo) { // below range (−Inf included); callers never pass NaN
		return 0
	}
	k := float32(x*expLog2e) + expRound
	n := int32(math.Float32bits(k)) - expRoundInt
	nf := k - expRound
	r := x - float32(nf*expLn2Hi)
	r -= float32(nf * expLn2Lo)
	p := float32(expP0)
	p = float32(p*r) + expP1
	p = float32(p*r) + expP2
	p = float32(p*r) + expP3
	p = float32(p*r) + expP4
	p = float32(p*r) + expP5
	p = float32(p*float32(r*r)) + r + 1
	n1 := n >> 1
	return float32(p*math.Float32frombits(uint32(n1+127)<<23)) * math.Float32frombits(uint32(n-n1+127)<<23)
}

const (
	expLo       = -104.0 // below ln(smallest subnormal) − 0.7: e^x rounds to 0
	expLog2e    = 1.44269504088896341
	expLn2Hi    = 0.693359375 // ln 2 = expLn2Hi + expLn2Lo; expLn2Hi has 9 significant bits
	expLn2Lo    = -2.12194440e-4
	expRound    = 12582912.0 // 1.5·2^23: adding it rounds a float32 to an integer
	expRoundInt = 0x4B400000 // bits of expRound
	expP0       = 1.9875691500e-4
	expP1       = 1.3981999507e-3
	expP2       = 8.3334519073e-3
	expP3       = 4.1665795894e-2
	expP4       = 1.6666665459e-1
	expP5       = 5.0000001201e-1
)
