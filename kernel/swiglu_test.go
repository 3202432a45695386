package kernel

import (
	"fmt"
	"math"
	"testing"
)

// swigluSizes are below and above nativeMinElems, with tails of several
// widths mod 16 (and mod 8), plus a few random sizes.
func swigluSizes() []int {
	ns := []int{1, 3, 17, 1000, 4099, 255, 256, 257, 263, 1031}
	rng := newRNG(730)
	for range 4 {
		ns = append(ns, nativeMinElems+rng.IntN(5000))
	}
	return ns
}

func TestSwiGLUMatchesRef(t *testing.T) { forLevels(t, testSwiGLUMatchesRef) }

func testSwiGLUMatchesRef(t *testing.T) {
	for _, n := range swigluSizes() {
		t.Run(fmt.Sprintf("n%d", n), func(t *testing.T) {
			gate, up := actInputs(uint64(n), n, 8), randSlice(newRNG(uint64(n)+7), n)
			out, ref := nanSlice(n), nanSlice(n)
			SwiGLU(out, gate, up)
			SwiGLURef(ref, gate, up)
			checkRel(t, "out", out, ref, 1e-6)
			inPlace := clone32(gate)
			SwiGLU(inPlace, inPlace, up)
			checkRel(t, "in place", inPlace, out, 0)

			dout := randSlice(newRNG(uint64(n)+9), n)
			dg, du, dgRef, duRef := nanSlice(n), nanSlice(n), nanSlice(n), nanSlice(n)
			SwiGLUBackward(dg, du, dout, gate, up)
			SwiGLUBackwardRef(dgRef, duRef, dout, gate, up)
			checkRel(t, "dgate", dg, dgRef, 1e-6)
			checkRel(t, "dup", du, duRef, 1e-6)
		})
	}
}

func TestSwiGLUFusedMatchesRef(t *testing.T) { forLevels(t, testSwiGLUFusedMatchesRef) }

func testSwiGLUFusedMatchesRef(t *testing.T) {
	for i, c := range []struct {
		name string
		T, F int
	}{{"1x1", 1, 1}, {"3x3", 3, 3}, {"5x17", 5, 17}, {"2x1000", 2, 1000}, {"7x1408", 7, 1408},
		{"16x16", 16, 16}, {"9x37", 9, 37}, {"300x1", 300, 1}, {"3x263", 3, 263}} {
		t.Run(c.name, func(t *testing.T) {
			T, F := c.T, c.F
			gu := actInputs(700+uint64(i), 2*T*F, 6)
			out, ref := nanSlice(T*F), nanSlice(T*F)
			SwiGLUFused(out, gu, T, F)
			SwiGLUFusedRef(ref, gu, T, F)
			checkRel(t, "out", out, ref, 1e-6)

			// Same numbers as the unfused kernel on the split halves.
			gate, up := make([]float32, T*F), make([]float32, T*F)
			for r := 0; r < T; r++ {
				copy(gate[r*F:], gu[2*r*F:2*r*F+F])
				copy(up[r*F:], gu[2*r*F+F:2*r*F+2*F])
			}
			split := nanSlice(T * F)
			SwiGLU(split, gate, up)
			checkRel(t, "fused vs split", out, split, 0)

			dout := randSlice(newRNG(710+uint64(i)), T*F)
			dgu, dguRef := nanSlice(2*T*F), nanSlice(2*T*F)
			SwiGLUFusedBackward(dgu, dout, gu, T, F)
			SwiGLUFusedBackwardRef(dguRef, dout, gu, T, F)
			checkRel(t, "dgu", dgu, dguRef, 1e-6)
			inPlace := clone32(gu)
			SwiGLUFusedBackward(inPlace, dout, inPlace, T, F)
			checkRel(t, "dgu in place", inPlace, dgu, 0)
		})
	}
}

// TestSwiGLUSpecialInputs: gates at the edges of the exp range match the
// twin elementwise and give finite gradients. The specials repeat, shifted by
// one lane each time, past nativeMinElems so the vector kernels see them in
// every lane and in the tail.
func TestSwiGLUSpecialInputs(t *testing.T) { forLevels(t, testSwiGLUSpecialInputs) }

func testSwiGLUSpecialInputs(t *testing.T) {
	var finite []float32
	for _, v := range actSpecials {
		if !math.IsInf(float64(v), 0) {
			finite = append(finite, v)
		}
	}
	var gate []float32
	for len(gate) < nativeMinElems+20 {
		gate = append(gate, finite...)
		gate = append(gate, 0.5)
	}
	n := len(gate)
	up, dout := make([]float32, n), make([]float32, n)
	for i := range up {
		up[i], dout[i] = 0.5, 1
	}
	out, ref := make([]float32, n), make([]float32, n)
	SwiGLU(out, gate, up)
	SwiGLURef(ref, gate, up)
	dg, du, dgRef, duRef := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
	SwiGLUBackward(dg, du, dout, gate, up)
	SwiGLUBackwardRef(dgRef, duRef, dout, gate, up)
	for i, g := range gate {
		if !closeElem(out[i], ref[i]) {
			t.Errorf("forward gate=%g: %g, ref %g", g, out[i], ref[i])
		}
		for _, p := range [][2]float32{{dg[i], dgRef[i]}, {du[i], duRef[i]}} {
			if p[0] != p[0] || math.Abs(float64(p[0]-p[1])) > 1e-6*math.Max(1, math.Abs(float64(p[1]))) {
				t.Errorf("backward gate=%g: dgate %g (ref %g), dup %g (ref %g)", g, dg[i], dgRef[i], du[i], duRef[i])
			}
		}
	}
}

func TestSwiGLUGradFD(t *testing.T) {
	rng := newRNG(720)
	const n = 30
	gate, up, dout := randSlice64(rng, n), randSlice64(rng, n), randSlice64(rng, n)
	for i := range gate {
		gate[i] *= 6
	}
	out := make([]float64, n)
	loss := func() float64 {
		swigluRef(out, gate, up)
		return dot64(out, dout)
	}
	dg, du := make([]float64, n), make([]float64, n)
	swigluBackwardRef(dg, du, dout, gate, up)
	checkGrad(t, "dgate", dg, fdGrad(gate, 1e-6, loss), 1e-8)
	checkGrad(t, "dup", du, fdGrad(up, 1e-6, loss), 1e-8)
}

func TestSwiGLUPanics(t *testing.T) {
	x := make([]float32, 8)
	mustPanic(t, "short up", func() { SwiGLU(x, x, x[:7]) })
	mustPanic(t, "short out", func() { SwiGLU(x[:7], x, x) })
	mustPanic(t, "backward short dout", func() { SwiGLUBackward(x, x, x[:7], x, x) })
	mustPanic(t, "fused short gu", func() { SwiGLUFused(x, x[:7], 2, 2) })
	mustPanic(t, "fused backward short dgu", func() { SwiGLUFusedBackward(x[:7], x, x, 2, 2) })
}

func BenchmarkSwiGLU(b *testing.B) {
	const T, F = 512, 1408
	rng := newRNG(1)
	gate, up := randSlice(rng, T*F), randSlice(rng, T*F)
	out := make([]float32, T*F)
	b.ReportAllocs()
	b.SetBytes(12 * T * F) // read gate and up, write out
	for b.Loop() {
		SwiGLU(out, gate, up)
	}
}

func BenchmarkSwiGLUFused(b *testing.B) {
	const T, F = 512, 1408
	gu := randSlice(newRNG(1), 2*T*F)
	out := make([]float32, T*F)
	b.ReportAllocs()
	b.SetBytes(12 * T * F)
	for b.Loop() {
		SwiGLUFused(out, gu, T, F)
	}
}

func BenchmarkSwiGLUFusedBackward(b *testing.B) {
	const T, F = 512, 1408
	rng := newRNG(1)
	gu, dout := randSlice(rng, 2*T*F), randSlice(rng, T*F)
	dgu := make([]float32, 2*T*F)
	b.ReportAllocs()
	b.SetBytes(20 * T * F) // read gu and dout, write dgu
	for b.Loop() {
		SwiGLUFusedBackward(dgu, dout, gu, T, F)
	}
}

func BenchmarkSwiGLUBackward(b *testing.B) {
	const T, F = 512, 1408
	rng := newRNG(1)
	gate, up, dout := randSlice(rng, T*F), randSlice(rng, T*F), randSlice(rng, T*F)
	dg, du := make([]float32, T*F), make([]float32, T*F)
	b.ReportAllocs()
	b.SetBytes(20 * T * F) // read gate, up, dout; write dgate, dup
	for b.Loop() {
		SwiGLUBackward(dg, du, dout, gate, up)
	}
}
