package kernel

import (
	"math"
	"testing"
)

// ulpDiff returns |got − want| in units of the float32 spacing at want.
func ulpDiff(got float32, want float64) float64 {
	w := float32(want)
	a := float32(math.Abs(float64(w)))
	ulp := float64(math.Nextafter32(a, float32(math.Inf(1))) - a)
	return math.Abs(float64(got)-want) / ulp
}

func TestExpPolyULP(t *testing.T) {
	// Every 127th float32 in [−87.3, 88.7] (~2.2M values; the full sweep, run
	// once, gave the same worst case 0.99 ulp).
	worst, at := 0.0, float32(0)
	for _, span := range [][2]float32{{-87.3, 0}, {0, 88.7}} {
		for x := span[0]; x < span[1]; {
			if e := ulpDiff(expPoly(x), math.Exp(float64(x))); e > worst {
				worst, at = e, x
			}
			b := math.Float32bits(x)
			if x < 0 {
				b -= 127
			} else {
				b += 127
			}
			x = math.Float32frombits(b)
			if x == 0 {
				break
			}
		}
	}
	if worst > 1 {
		t.Errorf("expPoly: worst error %.3f ulp at x=%g, want ≤ 1", worst, at)
	}
	t.Logf("expPoly: worst error %.3f ulp at x=%g", worst, at)
}

func TestExpPolySpecial(t *testing.T) {
	inf := float32(math.Inf(1))
	for _, c := range []struct {
		name string
		x    float32
	}{
		{"zero", 0},
		{"negzero", float32(math.Copysign(0, -1))},
		{"one", 1},
		{"overflow", 89},
		{"+inf", inf},
		{"-inf", -inf},
		{"underflow", -105},
		{"largest-finite", 88.72283},
		{"n=128", 88.5},
		{"smallest-normal", -87.33654},
		{"subnormal", -100},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, want := expPoly(c.x), math.Exp(float64(c.x))
			if got != float32(want) && !(ulpDiff(got, want) <= 1) {
				t.Errorf("expPoly(%g) = %g, want %g", c.x, got, want)
			}
		})
	}
	if got := expPoly(float32(math.NaN())); got == got {
		t.Errorf("expPoly(NaN) = %g, want NaN", got)
	}
}

// TestExpPolyLoops holds the hand-inlined copies in expShiftInto and
// expShiftSum64 bit-identical to expPoly.
func TestExpPolyLoops(t *testing.T) {
	rng := newRNG(7)
	src := randSlice(rng, 1003)
	for i := range src {
		src[i] *= 120 // reach the underflow cut-off too
	}
	src[5] = float32(math.Inf(-1))
	for _, shift := range []float32{0, 3.5, -2} {
		dst := make([]float32, len(src))
		sum := expShiftInto(dst, src, shift)
		want := 0.0
		for i, v := range src {
			e := expPoly(v - shift)
			if v-shift <= expPolyHi && math.Float32bits(dst[i]) != math.Float32bits(e) {
				t.Fatalf("shift %g: expShiftInto[%d] = %g, expPoly = %g", shift, i, dst[i], e)
			}
			want += float64(dst[i])
		}
		if math.Abs(sum-want) > 1e-12*want {
			t.Errorf("shift %g: expShiftInto sum %g, want %g", shift, sum, want)
		}
		if s64 := expShiftSum64(src, shift); math.Abs(s64-want) > 1e-12*want {
			t.Errorf("shift %g: expShiftSum64 = %g, want %g", shift, s64, want)
		}
	}
}

func BenchmarkExpPoly(b *testing.B) {
	src := randSlice(newRNG(1), 4096)
	dst := make([]float32, len(src))
	b.ReportAllocs()
	b.SetBytes(int64(8 * len(src)))
	for b.Loop() {
		expShiftInto(dst, src, 1)
	}
}
