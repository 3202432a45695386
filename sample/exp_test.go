package sample

import (
	"math"
	"testing"
)

// exp32 against math.Exp: within 1 ulp of the correctly rounded float32 for
// normal results, within one subnormal step below, 0 under −104.
func TestExp32(t *testing.T) {
	check := func(x float32) {
		got := exp32(x)
		want := float32(math.Exp(float64(x)))
		if want >= math.SmallestNonzeroFloat32*(1<<23) { // normal
			ulp := math.Nextafter32(want, 1) - want
			if d := math.Abs(float64(got - want)); d > float64(ulp) {
				t.Fatalf("exp32(%v) = %v, want %v (%.2f ulp)", x, got, want, d/float64(ulp))
			}
		} else if d := math.Abs(float64(got - want)); d > math.SmallestNonzeroFloat32 {
			t.Fatalf("exp32(%v) = %v, want %v", x, got, want)
		}
	}
	// Every 997th float32 in [−104, 0], plus the edges.
	for b := uint32(0x80000000); ; b += 997 {
		x := math.Float32frombits(b)
		if x < -104 {
			break
		}
		check(x)
	}
	for _, x := range []float32{0, -0.5, -1, -87.3, -103.9, -104} {
		check(x)
	}
	for _, x := range []float32{-104.01, -1e30, float32(math.Inf(-1))} {
		if got := exp32(x); got != 0 {
			t.Errorf("exp32(%v) = %v, want 0", x, got)
		}
	}
	if exp32(0) != 1 {
		t.Errorf("exp32(0) = %v, want exactly 1", exp32(0))
	}
}
