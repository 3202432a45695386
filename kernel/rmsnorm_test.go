package kernel

import (
	"fmt"
	"testing"
)

// normShapes are the (T, D) cases the norm tests run: single elements, odd
// and prime widths, widths off a multiple of 4/8/16, and a realistic row.
var normShapes = []struct {
	name string
	T, D int
}{
	{"1x1", 1, 1},
	{"1x3", 1, 3},
	{"3x17", 3, 17},
	{"2x1000", 2, 1000},
	{"5x31", 5, 31},
	{"4x64", 4, 64},
	{"7x129", 7, 129},
	{"2x2048", 2, 2048},
}

func TestRMSNormMatchesRef(t *testing.T) {
	for i, c := range normShapes {
		t.Run(c.name, func(t *testing.T) {
			rng := newRNG(uint64(i))
			T, D := c.T, c.D
			x, w := randSlice(rng, T*D), randSlice(rng, D)
			// With D tiny, dx = rstd·w·dout·(1 − x²·rstd²) nearly cancels
			// when eps is small, and any float32 result is mostly rounding
			// error: use a large eps there so the comparison means something.
			eps := float32(1e-5)
			if D < 8 {
				eps = 0.1
			}

			out, rstd := nanSlice(T*D), nanSlice(T)
			RMSNorm(out, rstd, x, w, T, D, eps)
			outRef, rstdRef := nanSlice(T*D), nanSlice(T)
			RMSNormRef(outRef, rstdRef, x, w, T, D, eps)
			checkRel(t, "out", out, outRef, 1e-6)
			checkRel(t, "rstd", rstd, rstdRef, 1e-6)

			// Inference form (rstd nil) and in place (out aliases x) agree.
			inPlace := clone32(x)
			RMSNorm(inPlace, nil, inPlace, w, T, D, eps)
			checkRel(t, "in place", inPlace, out, 0)

			dout := randSlice(rng, T*D)
			dw0 := randSlice(rng, D) // dw accumulates onto what is there
			dx, dw := nanSlice(T*D), clone32(dw0)
			RMSNormBackward(dx, dw, dout, x, w, rstd, T, D)
			dxRef, dwRef := nanSlice(T*D), clone32(dw0)
			RMSNormBackwardRef(dxRef, dwRef, dout, x, w, rstdRef, T, D)
			checkRel(t, "dx", dx, dxRef, 5e-6)
			checkRel(t, "dw", dw, dwRef, 5e-6)
		})
	}
}

func TestRMSNormGradFD(t *testing.T) {
	for i, c := range []struct {
		name string
		T, D int
	}{{"1x1", 1, 1}, {"2x3", 2, 3}, {"3x8", 3, 8}, {"2x17", 2, 17}} {
		t.Run(c.name, func(t *testing.T) {
			rng := newRNG(100 + uint64(i))
			T, D := c.T, c.D
			x, w, dout := randSlice64(rng, T*D), randSlice64(rng, D), randSlice64(rng, T*D)
			const eps = 1e-3
			out, rstd := make([]float64, T*D), make([]float64, T)
			loss := func() float64 {
				rmsNormRef(out, rstd, x, w, T, D, eps)
				return dot64(out, dout)
			}
			loss()
			dx, dw := make([]float64, T*D), make([]float64, D)
			rmsNormBackwardRef(dx, dw, dout, x, w, rstd, T, D)
			checkGrad(t, "dx", dx, fdGrad(x, 1e-6, loss), 1e-7)
			checkGrad(t, "dw", dw, fdGrad(w, 1e-6, loss), 1e-7)
		})
	}
}

func TestRMSNormPanics(t *testing.T) {
	x := make([]float32, 6)
	mustPanic(t, "short out", func() { RMSNorm(x[:5], nil, x, x[:3], 2, 3, 1e-5) })
	mustPanic(t, "short w", func() { RMSNorm(x, nil, x, x[:2], 2, 3, 1e-5) })
	mustPanic(t, "short rstd", func() { RMSNorm(x, x[:1], x, x[:3], 2, 3, 1e-5) })
	mustPanic(t, "D=0", func() { RMSNorm(x, nil, x, x, 2, 0, 1e-5) })
	mustPanic(t, "backward nil rstd", func() { RMSNormBackward(x, x[:3], x, x, x[:3], nil, 2, 3) })
}

func BenchmarkRMSNorm(b *testing.B) {
	for _, c := range []struct{ T, D int }{{512, 2048}, {1, 4096}} {
		b.Run(fmt.Sprintf("T%d_D%d", c.T, c.D), func(b *testing.B) {
			rng := newRNG(1)
			x, w := randSlice(rng, c.T*c.D), randSlice(rng, c.D)
			out, rstd := make([]float32, c.T*c.D), make([]float32, c.T)
			b.ReportAllocs()
			b.SetBytes(int64(8 * c.T * c.D)) // read x, write out
			for b.Loop() {
				RMSNorm(out, rstd, x, w, c.T, c.D, 1e-5)
			}
		})
	}
}

func BenchmarkRMSNormBackward(b *testing.B) {
	T, D := 512, 2048
	rng := newRNG(1)
	x, w, dout := randSlice(rng, T*D), randSlice(rng, D), randSlice(rng, T*D)
	out, rstd, dx, dw := make([]float32, T*D), make([]float32, T), make([]float32, T*D), make([]float32, D)
	RMSNorm(out, rstd, x, w, T, D, 1e-5)
	b.ReportAllocs()
	b.SetBytes(int64(12 * T * D)) // read x and dout, write dx
	for b.Loop() {
		RMSNormBackward(dx, dw, dout, x, w, rstd, T, D)
	}
}

func ExampleRMSNorm() {
	x := []float32{3, 4, 0, 0} // one row, D = 4: mean square 25/4
	w := []float32{1, 1, 2, 2}
	out, rstd := make([]float32, 4), make([]float32, 1)
	RMSNorm(out, rstd, x, w, 1, 4, 0)
	fmt.Println(out, rstd)
	// Output: [1.2 1.6 0 0] [0.4]
}
