package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// near fails t unless |got−want| ≤ atol + rtol·|want| element-wise (NaN
// matches NaN), reporting the first few mismatches and the worst error.
func near(t *testing.T, what string, got, want []float32, rtol, atol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	bad, worst, at := 0, 0.0, 0
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(w) || math.IsNaN(g) {
			if math.IsNaN(w) != math.IsNaN(g) {
				bad++
				if bad <= 5 {
					t.Errorf("%s[%d] = %v, want %v", what, i, g, w)
				}
			}
			continue
		}
		if math.IsInf(w, 0) || math.IsInf(g, 0) {
			if g != w {
				bad++
				if bad <= 5 {
					t.Errorf("%s[%d] = %v, want %v", what, i, g, w)
				}
			}
			continue
		}
		d := math.Abs(g - w)
		if d > worst {
			worst, at = d, i
		}
		if d > atol+rtol*math.Abs(w) {
			bad++
			if bad <= 5 {
				t.Errorf("%s[%d] = %v, want %v (diff %.3g)", what, i, g, w, d)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values out of tolerance (rtol %g atol %g); worst diff %.3g at %d", what, bad, len(want), rtol, atol, worst, at)
	}
}

// exact fails t unless got and want are bit-identical.
func exact(t *testing.T, what string, got, want []float32) {
	t.Helper()
	bad := 0
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) && !(got[i] != got[i] && want[i] != want[i]) {
			bad++
			if bad <= 5 {
				t.Errorf("%s[%d] = %v (%#x), want %v (%#x)", what, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values differ", what, bad, len(want))
	}
}

func randF32(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return v
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x6d6f6573)) }

func name(kv ...any) string {
	s := ""
	for i := 0; i+1 < len(kv); i += 2 {
		if s != "" {
			s += ","
		}
		s += fmt.Sprintf("%v=%v", kv[i], kv[i+1])
	}
	return s
}

// actTol returns the relative tolerance for a value computed in float32
// and stored as the backend's activation type.
func actTol(b *backend, f32 float64) float64 {
	if b.k.Act() == 0 { // cuda.F32
		return f32
	}
	return 1.0 / 128 // one bf16 ulp: the f32 result may round either way
}
