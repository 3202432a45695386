package kernel

import (
	"math"
	"math/rand/v2"
	"testing"
)

// relErr returns ‖a−b‖₂/‖b‖₂ over the first len(b) elements, computed in
// float64: 0 when both are all zeros, +Inf when only b is. Positions where
// both a and b are NaN count as equal (a kernel may legitimately produce NaN,
// or leave NaN padding untouched); a NaN on one side only makes the result
// NaN, which fails any "< tol" check.
func relErr(a, b []float32) float64 {
	var num, den float64
	for i := range b {
		x, y := float64(a[i]), float64(b[i])
		if x != x && y != y {
			continue
		}
		d := x - y
		num += d * d
		den += y * y
	}
	if den == 0 {
		if num == 0 {
			return 0
		}
		return math.Inf(1)
	}
	return math.Sqrt(num / den)
}

// randSlice returns n values uniform in [-1, 1).
func randSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.Float64()*2 - 1)
	}
	return s
}

// relErr64 is relErr for float64 slices.
func relErr64(a, b []float64) float64 {
	var num, den float64
	for i := range b {
		d := a[i] - b[i]
		num += d * d
		den += b[i] * b[i]
	}
	if den == 0 {
		if num == 0 {
			return 0
		}
		return math.Inf(1)
	}
	return math.Sqrt(num / den)
}

// randSlice64 returns n float64 values uniform in [-1, 1).
func randSlice64(rng *rand.Rand, n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = rng.Float64()*2 - 1
	}
	return s
}

// fdGrad returns the central-difference gradient of loss with respect to x,
// perturbing x in place by ±h (and restoring it). loss reads x.
func fdGrad(x []float64, h float64, loss func() float64) []float64 {
	g := make([]float64, len(x))
	for i := range x {
		x0 := x[i]
		x[i] = x0 + h
		lp := loss()
		x[i] = x0 - h
		lm := loss()
		x[i] = x0
		g[i] = (lp - lm) / (2 * h)
	}
	return g
}

// dot64 returns Σ a[i]·b[i]; it turns a vector output into the scalar loss
// Σ out·dout whose gradient the backward kernels compute.
func dot64(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// clone32 returns a copy of s.
func clone32(s []float32) []float32 { return append([]float32(nil), s...) }

// nanSlice returns n NaNs: output buffers start poisoned so a kernel that
// skips an element is caught.
func nanSlice(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(math.NaN())
	}
	return s
}

// checkRel fails the test when relErr(got, want) > tol.
func checkRel(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	e := relErr(got, want)
	if !(e <= tol) {
		t.Errorf("%s: relative error %.3g > %.3g", what, e, tol)
		return
	}
	if testing.Verbose() {
		t.Logf("%s: relative error %.3g (tol %.3g)", what, e, tol)
	}
}

// checkGrad fails the test when the analytic gradient differs from the
// finite-difference one by more than tol (relative, 2-norm).
func checkGrad(t *testing.T, what string, analytic, numeric []float64, tol float64) {
	t.Helper()
	e := relErr64(analytic, numeric)
	if !(e <= tol) {
		t.Errorf("%s: analytic vs finite-difference gradient relative error %.3g > %.3g", what, e, tol)
		return
	}
	if testing.Verbose() {
		t.Logf("%s: gradient relative error %.3g (tol %.3g)", what, e, tol)
	}
}

// mustPanic fails the test unless f panics.
func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: no panic", what)
		}
	}()
	f()
}

// newRNG returns a deterministic generator for test or benchmark seed.
func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x6d6f6573)) }
