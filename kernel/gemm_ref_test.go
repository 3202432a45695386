package kernel

import (
	"fmt"
	"math"
	"testing"

	"github.com/moesys/moesys/tensor"
)

// denseOp returns the (rows, cols) matrix stored with row stride ld, as
// float64, transposed if trans (so it always returns op(X)).
func denseOp(x []float32, rows, cols, ld int, trans bool) [][]float64 {
	r, c := rows, cols
	if trans {
		r, c = cols, rows
	}
	out := make([][]float64, r)
	for i := range out {
		out[i] = make([]float64, c)
		for j := range out[i] {
			if trans {
				out[i][j] = float64(x[j*ld+i])
			} else {
				out[i][j] = float64(x[i*ld+j])
			}
		}
	}
	return out
}

// TestGemmRefHandExample: [1 2; 3 4]·[5 6; 7 8] = [19 22; 43 50], with
// alpha = 2, beta = −1 on C = [1 1; 1 1].
func TestGemmRefHandExample(t *testing.T) {
	a := []float32{1, 2, 3, 4}
	b := []float32{5, 6, 7, 8}
	c := []float32{1, 1, 1, 1}
	GemmRef(false, false, 2, 2, 2, 2, a, 2, b, 2, -1, c, 2)
	checkRel(t, "C", c, []float32{37, 43, 85, 99}, 0)
	// Aᵀ stored as A: [1 3; 2 4]ᵀ·B again gives A·B.
	at := []float32{1, 3, 2, 4}
	bt := []float32{5, 7, 6, 8}
	c = []float32{0, 0, 0, 0}
	GemmRef(true, true, 2, 2, 2, 1, at, 2, bt, 2, 0, c, 2)
	checkRel(t, "CᵀT", c, []float32{19, 22, 43, 50}, 0)
}

// TestGemmRefMatchesDense checks the stride and transpose plumbing against
// explicit op(A)·op(B) on materialised matrices, for each transpose pair,
// padded strides, and alpha/beta including beta = 0 over a NaN-filled C.
func TestGemmRefMatchesDense(t *testing.T) {
	rng := newRNG(1200)
	for _, s := range []struct{ M, N, K int }{{1, 1, 1}, {3, 1, 5}, {1, 17, 3}, {17, 5, 33}, {8, 16, 1000}} {
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			for _, ab := range [][2]float32{{1, 0}, {0.5, 1}, {-2, 0.25}} {
				name := fmt.Sprintf("M%d_N%d_K%d_tA%v_tB%v_a%g_b%g", s.M, s.N, s.K, tr[0], tr[1], ab[0], ab[1])
				t.Run(name, func(t *testing.T) {
					ar, ac, lda := s.M, s.K, s.K+3
					if tr[0] {
						ar, ac, lda = s.K, s.M, s.M+1
					}
					br, bc, ldb := s.K, s.N, s.N+2
					if tr[1] {
						br, bc, ldb = s.N, s.K, s.K+5
					}
					ldc := s.N + 1
					a, b := randSlice(rng, ar*lda), randSlice(rng, br*ldb)
					c := randSlice(rng, s.M*ldc)
					if ab[1] == 0 {
						for i := range c {
							c[i] = float32(math.NaN())
						}
					}
					c0 := clone32(c)
					GemmRef(tr[0], tr[1], s.M, s.N, s.K, ab[0], a, lda, b, ldb, ab[1], c, ldc)
					opA, opB := denseOp(a, ar, ac, lda, tr[0]), denseOp(b, br, bc, ldb, tr[1])
					for i := 0; i < s.M; i++ {
						for j := 0; j < ldc; j++ {
							got := c[i*ldc+j]
							if j >= s.N { // padding: untouched
								if math.Float32bits(got) != math.Float32bits(c0[i*ldc+j]) {
									t.Fatalf("padding (%d,%d) changed", i, j)
								}
								continue
							}
							acc := 0.0
							for k := 0; k < s.K; k++ {
								acc += opA[i][k] * opB[k][j]
							}
							want := float64(ab[0]) * acc
							if ab[1] != 0 {
								want += float64(ab[1]) * float64(c0[i*ldc+j])
							}
							if float32(want) != got {
								t.Fatalf("C(%d,%d) = %g, want %g", i, j, got, want)
							}
						}
					}

					// The bf16 twin equals the f32 twin on the widened weights.
					bb := make([]uint16, len(b))
					tensor.F32SliceToBF16(bb, b)
					bw := make([]float32, len(b))
					tensor.BF16SliceToF32(bw, bb)
					cB, cW := clone32(c0), clone32(c0)
					GemmBF16Ref(tr[0], tr[1], s.M, s.N, s.K, ab[0], a, lda, bb, ldb, ab[1], cB, ldc)
					GemmRef(tr[0], tr[1], s.M, s.N, s.K, ab[0], a, lda, bw, ldb, ab[1], cW, ldc)
					checkRel(t, "bf16", cB, cW, 0)
				})
			}
		}
	}
}

func TestGemmRefEdgeCases(t *testing.T) {
	nan := float32(math.NaN())
	t.Run("K=0 scales C", func(t *testing.T) {
		c := []float32{1, 2}
		GemmRef(false, false, 1, 2, 0, 1, nil, 0, nil, 2, 3, c, 2)
		checkRel(t, "C", c, []float32{3, 6}, 0)
	})
	t.Run("alpha=0 does not read A or B", func(t *testing.T) {
		c := []float32{1, 2}
		GemmRef(false, false, 1, 2, 1, 0, []float32{nan}, 1, []float32{nan, nan}, 2, 2, c, 2)
		checkRel(t, "C", c, []float32{2, 4}, 0)
	})
	t.Run("beta=0 does not read C", func(t *testing.T) {
		c := []float32{nan}
		GemmRef(false, false, 1, 1, 1, 1, []float32{2}, 1, []float32{3}, 1, 0, c, 1)
		checkRel(t, "C", c, []float32{6}, 0)
	})
	t.Run("M=0 N=0", func(t *testing.T) {
		GemmRef(false, false, 0, 0, 5, 1, nil, 5, nil, 0, 0, nil, 0)
	})
}

func TestGemmRefPanics(t *testing.T) {
	x := make([]float32, 6)
	mustPanic(t, "short a", func() { GemmRef(false, false, 2, 2, 3, 1, x[:5], 3, x, 2, 0, x, 2) })
	mustPanic(t, "short b (transB)", func() { GemmRef(false, true, 2, 2, 3, 1, x, 3, x[:5], 3, 0, x, 2) })
	mustPanic(t, "lda < K", func() { GemmRef(false, false, 2, 2, 3, 1, x, 2, x, 2, 0, x, 2) })
	mustPanic(t, "short c", func() { GemmRef(false, false, 2, 2, 3, 1, x, 3, x, 2, 0, x[:3], 2) })
	mustPanic(t, "bf16 short b", func() { GemmBF16Ref(false, false, 2, 2, 3, 1, x, 3, make([]uint16, 5), 2, 0, x, 2) })
}
