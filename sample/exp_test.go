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

// weigh repeats exp32 inline: the same bits for every token, and the sum of
// the weights.
func TestWeigh(t *testing.T) {
	z := randLogits(4, 1000, 20)
	z[7], z[8], z[9] = float32(math.Inf(-1)), -math.MaxFloat32, math.MaxFloat32
	ids := make([]int32, len(z))
	for i := range ids {
		ids[i] = int32(len(z) - 1 - i)
	}
	for _, invT := range []float32{1, 0.25, 3.7, math.MaxFloat32} {
		w := make([]float32, len(z))
		zmax := z[argmax(z)]
		got := weigh(w, z, ids, zmax, invT)
		var want float64
		for i := range z {
			e := exp32((z[i] - zmax) * invT)
			if math.Float32bits(w[i]) != math.Float32bits(e) {
				t.Fatalf("invT %v: w[%d] = %v, exp32 gives %v", invT, i, w[i], e)
			}
			want += float64(e)
		}
		if math.Abs(got-want) > 1e-12*want {
			t.Errorf("invT %v: sum %v, want %v", invT, got, want)
		}
	}
}
