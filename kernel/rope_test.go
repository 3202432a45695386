package kernel

import (
	"fmt"
	"math"
	"testing"
)

func TestRoPEFreqs(t *testing.T) {
	for _, c := range []struct {
		name           string
		maxPos, rotDim int
		theta          float64
	}{
		{"llama", 4096, 128, 1e4},
		{"mixtral", 300, 128, 1e6},
		{"partial", 100, 32, 1e4},
		{"tiny", 3, 2, 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			half := c.rotDim / 2
			cos, sin := nanSlice(c.maxPos*half), nanSlice(c.maxPos*half)
			RoPEFreqs(cos, sin, c.maxPos, c.rotDim, c.theta)
			cosRef, sinRef := nanSlice(c.maxPos*half), nanSlice(c.maxPos*half)
			RoPEFreqsRef(cosRef, sinRef, c.maxPos, c.rotDim, c.theta)
			// The two float64 routes differ by ~p·1e-16 rad before rounding to
			// float32: agree to within an absolute 1e-7 (about one float32 ulp of 1).
			for i := range cos {
				if d := math.Max(math.Abs(float64(cos[i]-cosRef[i])), math.Abs(float64(sin[i]-sinRef[i]))); !(d <= 1e-7) {
					t.Fatalf("entry %d (pos %d, i %d): cos %g vs %g, sin %g vs %g", i, i/half, i%half, cos[i], cosRef[i], sin[i], sinRef[i])
				}
			}
		})
	}
}

// TestRoPEHandExample pins the rotate_half convention on a worked example:
// Dh = 4, theta = 1e4, position 1, so the frequencies are 1 and 1e4^(−1/2) = 0.01.
func TestRoPEHandExample(t *testing.T) {
	cos, sin := make([]float32, 2*2), make([]float32, 2*2)
	RoPEFreqs(cos, sin, 2, 4, 1e4)
	x := []float32{1, 2, 3, 4}
	RoPE(x, []int32{1}, 1, 1, 4, 4, cos, sin)
	c1, s1, c2, s2 := math.Cos(1), math.Sin(1), math.Cos(0.01), math.Sin(0.01)
	want := []float32{
		float32(1*c1 - 3*s1), // x1[0]·c − x2[0]·s
		float32(2*c2 - 4*s2),
		float32(3*c1 + 1*s1), // x2[0]·c + x1[0]·s
		float32(4*c2 + 2*s2),
	}
	checkRel(t, "rotated", x, want, 1e-7)
}

func TestRoPEMatchesRef(t *testing.T) {
	for i, c := range []struct {
		name             string
		T, H, Dh, rotDim int
	}{
		{"1tok_1head_dh2", 1, 1, 2, 2},
		{"3tok_3head_dh6", 3, 3, 6, 6},
		{"17tok_4head_dh64", 17, 4, 64, 64},
		{"5tok_2head_partial", 5, 2, 34, 18}, // rotDim/2 = 9: odd, not a multiple of 4
		{"4tok_32head_dh128", 4, 32, 128, 128},
		{"1000tok_1head_partial", 1000, 1, 10, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			rng := newRNG(400 + uint64(i))
			const maxPos = 2048
			half := c.rotDim / 2
			cos, sin := make([]float32, maxPos*half), make([]float32, maxPos*half)
			RoPEFreqs(cos, sin, maxPos, c.rotDim, 1e4)
			pos := make([]int32, c.T)
			for j := range pos {
				pos[j] = int32(rng.IntN(maxPos))
			}
			n := c.T * c.H * c.Dh
			x0 := randSlice(rng, n)

			x, xRef := clone32(x0), clone32(x0)
			RoPE(x, pos, c.T, c.H, c.Dh, c.rotDim, cos, sin)
			RoPERef(xRef, pos, c.T, c.H, c.Dh, c.rotDim, cos, sin)
			checkRel(t, "forward", x, xRef, 1e-6)
			// Dims past rotDim are untouched.
			for j := 0; j < n; j++ {
				if j%c.Dh >= c.rotDim && x[j] != x0[j] {
					t.Fatalf("dim %d (≥ rotDim %d) changed: %g -> %g", j%c.Dh, c.rotDim, x0[j], x[j])
				}
			}

			dx, dxRef := clone32(x0), clone32(x0)
			RoPEBackward(dx, pos, c.T, c.H, c.Dh, c.rotDim, cos, sin)
			RoPEBackwardRef(dxRef, pos, c.T, c.H, c.Dh, c.rotDim, cos, sin)
			checkRel(t, "backward", dx, dxRef, 1e-6)

			// Backward undoes forward (the rotation is orthogonal).
			RoPEBackward(x, pos, c.T, c.H, c.Dh, c.rotDim, cos, sin)
			checkRel(t, "backward∘forward", x, x0, 1e-6)
		})
	}
}

func TestRoPEGradFD(t *testing.T) {
	const T, H, Dh, rotDim, maxPos = 3, 2, 6, 4, 16
	rng := newRNG(450)
	cos, sin := make([]float32, maxPos*rotDim/2), make([]float32, maxPos*rotDim/2)
	RoPEFreqs(cos, sin, maxPos, rotDim, 100)
	pos := []int32{0, 5, 15}
	x, dout := randSlice64(rng, T*H*Dh), randSlice64(rng, T*H*Dh)
	y := make([]float64, len(x))
	loss := func() float64 {
		copy(y, x)
		ropeRef(y, pos, T, H, Dh, rotDim, cos, sin, 1)
		return dot64(y, dout)
	}
	dx := append([]float64(nil), dout...)
	ropeRef(dx, pos, T, H, Dh, rotDim, cos, sin, -1)
	checkGrad(t, "dx", dx, fdGrad(x, 1e-6, loss), 1e-8)
}

func TestRoPEPanics(t *testing.T) {
	cos, sin := make([]float32, 4*2), make([]float32, 4*2)
	RoPEFreqs(cos, sin, 4, 4, 1e4)
	x := make([]float32, 2*8)
	mustPanic(t, "pos out of range", func() { RoPE(x, []int32{0, 4}, 2, 1, 8, 4, cos, sin) })
	mustPanic(t, "negative pos", func() { RoPE(x, []int32{-1, 0}, 2, 1, 8, 4, cos, sin) })
	mustPanic(t, "odd rotDim", func() { RoPE(x, []int32{0, 1}, 2, 1, 8, 3, cos, sin) })
	mustPanic(t, "rotDim > Dh", func() { RoPE(x, []int32{0, 1}, 2, 1, 8, 10, cos, sin) })
	mustPanic(t, "short x", func() { RoPE(x[:15], []int32{0, 1}, 2, 1, 8, 4, cos, sin) })
	mustPanic(t, "short pos", func() { RoPE(x, []int32{0}, 2, 1, 8, 4, cos, sin) })
	mustPanic(t, "short tables", func() { RoPEFreqs(cos, sin, 5, 4, 1e4) })
}

func BenchmarkRoPE(b *testing.B) {
	for _, c := range []struct{ T, H, Dh int }{{512, 32, 128}, {1, 32, 128}} {
		b.Run(fmt.Sprintf("T%d_H%d_Dh%d", c.T, c.H, c.Dh), func(b *testing.B) {
			const maxPos = 4096
			rng := newRNG(1)
			cos, sin := make([]float32, maxPos*c.Dh/2), make([]float32, maxPos*c.Dh/2)
			RoPEFreqs(cos, sin, maxPos, c.Dh, 1e6)
			pos := make([]int32, c.T)
			for i := range pos {
				pos[i] = int32(i)
			}
			x := randSlice(rng, c.T*c.H*c.Dh)
			b.ReportAllocs()
			b.SetBytes(int64(8 * len(x))) // read and write x
			for b.Loop() {
				RoPE(x, pos, c.T, c.H, c.Dh, c.Dh, cos, sin)
			}
		})
	}
}
