package kernel

import (
	"fmt"
	"math"
	"testing"
)

func TestSoftmaxMatchesRef(t *testing.T) {
	for i, c := range []struct {
		name  string
		T, N  int
		scale float32 // logits are uniform in [−scale, scale)
	}{
		{"1x1", 1, 1, 1},
		{"1x3", 1, 3, 1},
		{"3x17", 3, 17, 5},
		{"2x1000", 2, 1000, 10},
		{"5x31", 5, 31, 1},
		{"4x64", 4, 64, 30},
		{"7x129", 7, 129, 100},
		{"2x50304", 2, 50304, 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			rng := newRNG(500 + uint64(i))
			T, N := c.T, c.N
			x := randSlice(rng, T*N)
			for j := range x {
				x[j] *= c.scale
			}
			if N > 2 {
				x[1] = float32(math.Inf(-1)) // a masked entry: exactly 0
			}
			out, ref := nanSlice(T*N), nanSlice(T*N)
			Softmax(out, x, T, N)
			SoftmaxRef(ref, x, T, N)
			checkRel(t, "out", out, ref, 1e-6)
			if N > 2 && out[1] != 0 {
				t.Errorf("masked entry: %g, want 0", out[1])
			}

			inPlace := clone32(x)
			Softmax(inPlace, inPlace, T, N)
			checkRel(t, "in place", inPlace, out, 0)

			dout := randSlice(rng, T*N)
			dx, dxRef := nanSlice(T*N), nanSlice(T*N)
			SoftmaxBackward(dx, dout, out, T, N)
			SoftmaxBackwardRef(dxRef, dout, ref, T, N)
			checkRel(t, "dx", dx, dxRef, 1e-6)
		})
	}
}

func TestSoftmaxSpecialRows(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	for _, c := range []struct {
		name    string
		row     []float32
		wantNaN bool
	}{
		{"all -inf", []float32{-inf, -inf, -inf}, true},
		{"has +inf", []float32{0, inf, 1}, true},
		{"has nan", []float32{0, nan, 1}, true},
		{"huge", []float32{1e30, 1e30, -1e30}, false},
		{"one finite", []float32{-inf, 2, -inf}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, ref := make([]float32, len(c.row)), make([]float32, len(c.row))
			Softmax(out, c.row, 1, len(c.row))
			SoftmaxRef(ref, c.row, 1, len(c.row))
			for i := range out {
				if isNaN := out[i] != out[i]; isNaN != c.wantNaN || (!isNaN && out[i] != ref[i]) {
					t.Fatalf("out %v, ref %v, want NaN %v", out, ref, c.wantNaN)
				}
			}
		})
	}
}

func TestSoftmaxGradFD(t *testing.T) {
	const T, N = 3, 7
	rng := newRNG(550)
	x, dout := randSlice64(rng, T*N), randSlice64(rng, T*N)
	out := make([]float64, T*N)
	loss := func() float64 {
		softmaxRef(out, x, T, N)
		return dot64(out, dout)
	}
	loss()
	dx := make([]float64, T*N)
	softmaxBackwardRef(dx, dout, out, T, N)
	checkGrad(t, "dx", dx, fdGrad(x, 1e-6, loss), 1e-7)
}

func TestSoftmaxPanics(t *testing.T) {
	x := make([]float32, 6)
	mustPanic(t, "short out", func() { Softmax(x[:5], x, 2, 3) })
	mustPanic(t, "short x", func() { Softmax(x, x[:5], 2, 3) })
	mustPanic(t, "N=0", func() { Softmax(x, x, 2, 0) })
	mustPanic(t, "backward short", func() { SoftmaxBackward(x, x[:5], x, 2, 3) })
}

func BenchmarkSoftmax(b *testing.B) {
	for _, c := range []struct{ T, N int }{{512, 2048}, {32, 50304}, {4096, 64}} {
		b.Run(fmt.Sprintf("T%d_N%d", c.T, c.N), func(b *testing.B) {
			x := randSlice(newRNG(1), c.T*c.N)
			out := make([]float32, len(x))
			b.ReportAllocs()
			b.SetBytes(int64(8 * len(x))) // read x, write out
			for b.Loop() {
				Softmax(out, x, c.T, c.N)
			}
		})
	}
}

func BenchmarkSoftmaxBackward(b *testing.B) {
	T, N := 512, 2048
	rng := newRNG(1)
	x, dout := randSlice(rng, T*N), randSlice(rng, T*N)
	out, dx := make([]float32, T*N), make([]float32, T*N)
	Softmax(out, x, T, N)
	b.ReportAllocs()
	b.SetBytes(int64(12 * T * N)) // read dout and out, write dx
	for b.Loop() {
		SoftmaxBackward(dx, dout, out, T, N)
	}
}

func ExampleSoftmax() {
	x := []float32{0, float32(math.Log(3)), float32(math.Inf(-1))} // one row, last entry masked
	Softmax(x, x, 1, 3)                                            // in place
	fmt.Printf("%.4f\n", x)
	// Output: [0.2500 0.7500 0.0000]
}
