package tensor_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/moesys/moesys/tensor"
)

// The references below are independent of convert.go: values are computed
// from the IEEE field definitions in float64, and rounding picks the nearest
// entry of a table of every representable value (ties to the even bit
// pattern) instead of using bit tricks.

// bf16Ref returns the value of bfloat16 bit pattern h: 1 sign, 8 exponent
// (bias 127), 7 mantissa bits.
func bf16Ref(h uint16) float64 { return ieeeRef(uint32(h), 8, 7) }

// f16Ref returns the value of IEEE half bit pattern h: 1 sign, 5 exponent
// (bias 15), 10 mantissa bits.
func f16Ref(h uint16) float64 { return ieeeRef(uint32(h), 5, 10) }

// ieeeRef evaluates an IEEE-style binary float with expBits exponent and
// manBits mantissa bits.
func ieeeRef(bits uint32, expBits, manBits uint) float64 {
	bias := 1<<(expBits-1) - 1
	exp := int(bits>>manBits) & (1<<expBits - 1)
	man := float64(bits & (1<<manBits - 1))
	neg := bits>>(expBits+manBits)&1 == 1
	var v float64
	switch exp {
	case 1<<expBits - 1:
		if man != 0 {
			return math.NaN()
		}
		v = math.Inf(1)
	case 0: // subnormal: man * 2^(1-bias-manBits)
		v = math.Ldexp(man, 1-bias-int(manBits))
	default:
		v = math.Ldexp(1+man/float64(uint(1)<<manBits), exp-bias)
	}
	if neg {
		v = -v
	}
	return v
}

// roundTable lists, for a 16-bit format, the value of every non-negative
// finite bit pattern in increasing order (index = pattern), followed by the
// value the infinity pattern stands for when rounding: the next power of two
// past the largest finite value, as if the exponent range were unbounded.
type roundTable struct {
	vals []float64
}

func newRoundTable(ref func(uint16) float64, inf uint16, unbounded float64) roundTable {
	vals := make([]float64, int(inf)+1)
	for p := range vals[:inf] {
		vals[p] = ref(uint16(p))
	}
	vals[inf] = unbounded
	return roundTable{vals}
}

// nearest returns the pattern nearest to x under round-to-nearest-even.
func (t roundTable) nearest(x float32) uint16 {
	inf := uint16(len(t.vals) - 1)
	var sign uint16
	if math.Signbit(float64(x)) {
		sign = 0x8000
	}
	a := math.Abs(float64(x))
	if math.IsNaN(a) {
		panic("nearest: NaN")
	}
	i := sort.SearchFloat64s(t.vals, a) // first vals[i] >= a
	switch {
	case i == len(t.vals): // beyond even the unbounded next value
		return sign | inf
	case t.vals[i] == a:
		return sign | uint16(i)
	}
	// vals[i-1] < a < vals[i]; both differences are exact in float64.
	lo, hi := a-t.vals[i-1], t.vals[i]-a
	switch {
	case lo < hi:
		return sign | uint16(i-1)
	case hi < lo:
		return sign | uint16(i)
	case i%2 == 0:
		return sign | uint16(i)
	default:
		return sign | uint16(i-1)
	}
}

var (
	bf16Table = newRoundTable(bf16Ref, 0x7f80, math.Ldexp(1, 128))
	f16Table  = newRoundTable(f16Ref, 0x7c00, 65536)
)

func isNaN16(h uint16, expMask uint16) bool {
	return h&expMask == expMask && h&^(0x8000|expMask) != 0
}

func TestBF16ToF32Exhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := tensor.BF16ToF32(h)
		want := bf16Ref(h)
		if math.IsNaN(want) {
			if !math.IsNaN(float64(f)) {
				t.Fatalf("BF16ToF32(%#04x) = %v, want NaN", h, f)
			}
			continue
		}
		if float64(f) != want || math.Signbit(float64(f)) != math.Signbit(want) {
			t.Fatalf("BF16ToF32(%#04x) = %v, want %v", h, f, want)
		}
	}
}

func TestF16ToF32Exhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		f := tensor.F16ToF32(h)
		want := f16Ref(h)
		if math.IsNaN(want) {
			if !math.IsNaN(float64(f)) {
				t.Fatalf("F16ToF32(%#04x) = %v, want NaN", h, f)
			}
			continue
		}
		if float64(f) != want || math.Signbit(float64(f)) != math.Signbit(want) {
			t.Fatalf("F16ToF32(%#04x) = %v, want %v", h, f, want)
		}
	}
}

func TestBF16RoundTripExhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		got := tensor.F32ToBF16(tensor.BF16ToF32(h))
		if isNaN16(h, 0x7f80) {
			if !isNaN16(got, 0x7f80) || got&0x8000 != h&0x8000 {
				t.Fatalf("NaN %#04x round-tripped to %#04x, want a NaN of the same sign", h, got)
			}
			continue
		}
		if got != h {
			t.Fatalf("BF16 %#04x round-tripped to %#04x", h, got)
		}
	}
}

func TestF16RoundTripExhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		got := tensor.F32ToF16(tensor.F16ToF32(h))
		if isNaN16(h, 0x7c00) {
			if !isNaN16(got, 0x7c00) || got&0x8000 != h&0x8000 {
				t.Fatalf("NaN %#04x round-tripped to %#04x, want a NaN of the same sign", h, got)
			}
			continue
		}
		if got != h {
			t.Fatalf("F16 %#04x round-tripped to %#04x", h, got)
		}
	}
}

// checkRound compares conv(x) with the table reference, treating NaN apart.
func checkRound(t *testing.T, name string, conv func(float32) uint16, table roundTable, expMask uint16, x float32) {
	t.Helper()
	got := conv(x)
	if x != x {
		if !isNaN16(got, expMask) || (got&0x8000 != 0) != math.Signbit(float64(x)) {
			t.Fatalf("%s(NaN %#08x) = %#04x, want a NaN of the same sign", name, math.Float32bits(x), got)
		}
		return
	}
	if want := table.nearest(x); got != want {
		t.Fatalf("%s(%v = %#08x) = %#04x, want %#04x", name, x, math.Float32bits(x), got, want)
	}
}

func TestF32ToBF16Random(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1 << 20 {
		checkRound(t, "F32ToBF16", tensor.F32ToBF16, bf16Table, 0x7f80, math.Float32frombits(rng.Uint32()))
	}
}

func TestF32ToF16Random(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for range 1 << 20 {
		checkRound(t, "F32ToF16", tensor.F32ToF16, f16Table, 0x7c00, math.Float32frombits(rng.Uint32()))
	}
	// Uniform bit patterns rarely land in the half range; draw exponents
	// from just below the smallest subnormal to just past the largest value.
	for range 1 << 20 {
		exp := uint32(127-27) + rng.Uint32N(27+17+1)
		bits := rng.Uint32()&0x807fffff | exp<<23
		checkRound(t, "F32ToF16", tensor.F32ToF16, f16Table, 0x7c00, math.Float32frombits(bits))
	}
}

// TestRoundTiesExhaustive checks every midpoint between adjacent
// representable values (including the one between the largest finite value
// and the overflow threshold) and its float32 neighbours, for both signs.
func TestRoundTiesExhaustive(t *testing.T) {
	for _, c := range []struct {
		name    string
		conv    func(float32) uint16
		table   roundTable
		expMask uint16
	}{
		{"F32ToBF16", tensor.F32ToBF16, bf16Table, 0x7f80},
		{"F32ToF16", tensor.F32ToF16, f16Table, 0x7c00},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := c.table.vals
			for p := 0; p+1 < len(v); p++ {
				mid := (v[p] + v[p+1]) / 2
				m := float32(mid)
				if float64(m) != mid {
					t.Fatalf("midpoint %v between %#04x and %#04x is not a float32", mid, p, p+1)
				}
				even := uint16(p)
				if p%2 == 1 {
					even = uint16(p + 1)
				}
				for _, sign := range []float32{1, -1} {
					x := sign * m
					want := even
					if sign < 0 {
						want |= 0x8000
					}
					if got := c.conv(x); got != want {
						t.Fatalf("%s(tie %v) = %#04x, want %#04x (even)", c.name, x, got, want)
					}
					checkRound(t, c.name, c.conv, c.table, c.expMask, x)
					checkRound(t, c.name, c.conv, c.table, c.expMask, math.Nextafter32(x, 0))
					checkRound(t, c.name, c.conv, c.table, c.expMask, math.Nextafter32(x, sign*float32(math.Inf(1))))
				}
			}
		})
	}
}

func TestF32ToBF16Edges(t *testing.T) {
	for _, c := range []struct {
		name string
		in   uint32 // float32 bits
		want uint16
	}{
		{"zero", 0x00000000, 0x0000},
		{"negative zero", 0x80000000, 0x8000},
		{"one", 0x3f800000, 0x3f80},
		{"tie down to even", 0x3f808000, 0x3f80},
		{"tie up to even", 0x3f818000, 0x3f82},
		{"above tie", 0x3f808001, 0x3f81},
		{"below tie", 0x3f807fff, 0x3f80},
		{"max finite", 0x7f7f0000, 0x7f7f},
		{"just below overflow tie", 0x7f7f7fff, 0x7f7f},
		{"overflow tie to inf", 0x7f7f8000, 0x7f80},
		{"float32 max to inf", 0x7f7fffff, 0x7f80},
		{"negative overflow", 0xff7fffff, 0xff80},
		{"inf", 0x7f800000, 0x7f80},
		{"negative inf", 0xff800000, 0xff80},
		{"smallest float32 subnormal", 0x00000001, 0x0000},
		{"bf16 smallest subnormal", 0x00010000, 0x0001},
		{"subnormal tie to even zero", 0x00008000, 0x0000},
		{"subnormal above tie", 0x00008001, 0x0001},
		{"largest subnormal rounds to normal", 0x007fffff, 0x0080},
		{"negative subnormal", 0x80018000, 0x8002},
	} {
		if got := tensor.F32ToBF16(math.Float32frombits(c.in)); got != c.want {
			t.Errorf("%s: F32ToBF16(%#08x) = %#04x, want %#04x", c.name, c.in, got, c.want)
		}
		checkRound(t, "F32ToBF16", tensor.F32ToBF16, bf16Table, 0x7f80, math.Float32frombits(c.in))
	}
	for _, in := range []uint32{0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fffffff, 0x7f80ffff} {
		got := tensor.F32ToBF16(math.Float32frombits(in))
		if !isNaN16(got, 0x7f80) || got>>15 != uint16(in>>31) {
			t.Errorf("F32ToBF16(NaN %#08x) = %#04x, want a NaN of the same sign", in, got)
		}
	}
}

func TestF32ToF16Edges(t *testing.T) {
	for _, c := range []struct {
		name string
		in   float32
		want uint16
	}{
		{"zero", 0, 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"one", 1, 0x3c00},
		{"tie down to even", 1 + 1.0/2048, 0x3c00},
		{"tie up to even", 1 + 3.0/2048, 0x3c02},
		{"max finite", 65504, 0x7bff},
		{"rounds to max finite", 65519, 0x7bff},
		{"overflow tie to inf", 65520, 0x7c00},
		{"overflow", 1e6, 0x7c00},
		{"negative overflow", -1e6, 0xfc00},
		{"float32 max", math.MaxFloat32, 0x7c00},
		{"inf", float32(math.Inf(1)), 0x7c00},
		{"negative inf", float32(math.Inf(-1)), 0xfc00},
		{"smallest normal", 0x1p-14, 0x0400},
		{"largest subnormal", 0x3ffp-24, 0x03ff},
		{"subnormal rounds up to normal", 0x7ffp-25, 0x0400},
		{"smallest subnormal", 0x1p-24, 0x0001},
		{"half smallest subnormal ties to zero", 0x1p-25, 0x0000},
		{"above half smallest subnormal", 0x1.000002p-25, 0x0001},
		{"1.5 smallest subnormal ties to 2", 0x3p-25, 0x0002},
		{"2.5 smallest subnormal ties to 2", 0x5p-25, 0x0002},
		{"tiny", 0x1p-30, 0x0000},
		{"negative tiny", -0x1p-30, 0x8000},
		{"float32 smallest subnormal", 0x1p-149, 0x0000},
		{"negative subnormal", -0x3p-24, 0x8003},
	} {
		if got := tensor.F32ToF16(c.in); got != c.want {
			t.Errorf("%s: F32ToF16(%v) = %#04x, want %#04x", c.name, c.in, got, c.want)
		}
		checkRound(t, "F32ToF16", tensor.F32ToF16, f16Table, 0x7c00, c.in)
	}
	// NaN payloads that live only in the low 13 bits must not collapse to inf.
	for _, in := range []uint32{0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fffffff, 0x7f801fff} {
		got := tensor.F32ToF16(math.Float32frombits(in))
		if !isNaN16(got, 0x7c00) || got>>15 != uint16(in>>31) {
			t.Errorf("F32ToF16(NaN %#08x) = %#04x, want a NaN of the same sign", in, got)
		}
	}
}

func TestSliceConversions(t *testing.T) {
	src := []float32{0, 1, -2.5, 3.14159, 65504, 1e-7, float32(math.Inf(-1))}
	bf := make([]uint16, len(src))
	hf := make([]uint16, len(src))
	tensor.F32SliceToBF16(bf, src)
	tensor.F32SliceToF16(hf, src)
	back := make([]float32, len(src))
	tensor.BF16SliceToF32(back, bf)
	for i, x := range src {
		if bf[i] != tensor.F32ToBF16(x) || back[i] != tensor.BF16ToF32(bf[i]) {
			t.Errorf("bf16 slice [%d]: %#04x -> %v, want %#04x -> %v", i, bf[i], back[i], tensor.F32ToBF16(x), tensor.BF16ToF32(bf[i]))
		}
	}
	tensor.F16SliceToF32(back, hf)
	for i, x := range src {
		if hf[i] != tensor.F32ToF16(x) || back[i] != tensor.F16ToF32(hf[i]) {
			t.Errorf("f16 slice [%d]: %#04x -> %v, want %#04x -> %v", i, hf[i], back[i], tensor.F32ToF16(x), tensor.F16ToF32(hf[i]))
		}
	}
}

func ExampleF32ToBF16() {
	// 1 + 2^-8 lies exactly halfway between the bfloat16 values 1 and
	// 1 + 2^-7: the tie goes to the even mantissa, 1.
	for _, x := range []float32{1 + 1.0/256, 3.14159265, -0.1} {
		b := tensor.F32ToBF16(x)
		fmt.Printf("%v -> %#04x -> %v\n", x, b, tensor.BF16ToF32(b))
	}
	// Output:
	// 1.0039062 -> 0x3f80 -> 1
	// 3.1415927 -> 0x4049 -> 3.140625
	// -0.1 -> 0xbdcd -> -0.100097656
}

func ExampleF32ToF16() {
	for _, x := range []float32{65504, 65519, 65520, 0x1p-25, 0x3p-25} {
		h := tensor.F32ToF16(x)
		fmt.Printf("%v -> %#04x -> %v\n", x, h, tensor.F16ToF32(h))
	}
	// Output:
	// 65504 -> 0x7bff -> 65504
	// 65519 -> 0x7bff -> 65504
	// 65520 -> 0x7c00 -> +Inf
	// 2.9802322e-08 -> 0x0000 -> 0
	// 8.940697e-08 -> 0x0002 -> 1.1920929e-07
}
