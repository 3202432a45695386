package kernels_test

import (
	"testing"

	"github.com/moesys/moesys/gpu/cuda"
)

// gemvRef is out[r] = x[r]·W_eᵀ + beta·out[r] in float64 for the rows of
// each expert.
func gemvRef(out, x []float32, w [][]float32, rowOff []int32, N, Kd int, beta float32) []float32 {
	res := append([]float32(nil), out...)
	for e := range w {
		for r := int(rowOff[e]); r < int(rowOff[e+1]); r++ {
			for n := 0; n < N; n++ {
				s := 0.0
				for k := 0; k < Kd; k++ {
					s += float64(x[r*Kd+k]) * float64(w[e][n*Kd+k])
				}
				if beta != 0 {
					s += float64(beta) * float64(out[r*N+n])
				}
				res[r*N+n] = float32(s)
			}
		}
	}
	return res
}

func TestExpertsGemv(t *testing.T) {
	run(t, bothActs, func(t *testing.T, b *backend) {
		r := newRand(11)
		for _, c := range []struct {
			rows    []int // rows per expert
			N, Kd   int
			beta    float32
			maxRows int
		}{
			{[]int{1}, 40, 64, 0, 1},             // plain GEMV
			{[]int{3}, 70, 256, 1, 3},            // beta accumulates; N not a multiple of 32
			{[]int{0, 2, 0, 1, 4}, 33, 96, 0, 4}, // empty experts
			{[]int{5, 8}, 64, 520, 0.5, 8},       // Kd spans several x tiles at M = 8
			{[]int{17, 1}, 36, 72, 0, 16},        // more rows than a pass: two passes
			{[]int{2, 3}, 31, 30, 0, 3},          // Kd not a multiple of 4 or 8: scalar loads
			{[]int{1, 1}, 45, 1100, 0, 1},        // long rows at M = 1
		} {
			for _, wt := range []cuda.DataType{cuda.BF16, cuda.F32} {
				nE := len(c.rows)
				rowOff := make([]int32, nE+1)
				for i, n := range c.rows {
					rowOff[i+1] = rowOff[i] + int32(n)
				}
				R := int(rowOff[nE])
				x := roundTo(b.k.Act(), randF32(r, R*c.Kd, 1))
				w := make([][]float32, nE)
				ptrs := make([]uint64, nE)
				for e := range w {
					w[e] = roundTo(wt, randF32(r, c.N*c.Kd, 0.1))
					ptrs[e] = uint64(b.typed(wt, w[e]))
				}
				out0 := randF32(r, R*c.N, 1)
				want := gemvRef(out0, x, w, rowOff, c.N, c.Kd, c.beta)
				out := b.f32(out0)
				if err := b.k.ExpertsGemv(b.s, out, b.act(x), b.u64(ptrs), wt, b.i32(rowOff), nE, c.maxRows, c.N, c.Kd, c.beta); err != nil {
					t.Fatal(err)
				}
				near(t, name("rows", c.rows, "N", c.N, "Kd", c.Kd, "beta", c.beta, "w", wt), b.readF32(out, R*c.N), want, 1e-5, 1e-5)
			}
		}
	})
}
