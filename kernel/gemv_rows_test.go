package kernel

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// sameBits fails unless got and want hold the same float32 bit patterns.
func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: [%d] = %g (%#x), want %g (%#x) bit for bit", what, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

func abs32(v float32) float32 { return float32(math.Abs(float64(v))) }

func absSlice(s []float32) []float32 {
	out := make([]float32, len(s))
	for i, v := range s {
		out[i] = abs32(v)
	}
	return out
}

func fromBF16(s []uint16) []float32 {
	out := make([]float32, len(s))
	for i, v := range s {
		out[i] = bf16f(v)
	}
	return out
}

// packedKinds packs w (N, K, the HF layout) in every layout the current level
// has: bf16 widened to f32 panels, bf16 pairs (AVX512_BF16), and f32.
func packedKinds(w []float32, N, K int) map[string]*PackedB {
	wb := toBF16(w)
	return map[string]*PackedB{
		"bf16-exact": PackBF16(BF16Exact, true, K, N, wb, K),
		"bf16-dot":   PackBF16(BF16Dot, true, K, N, wb, K),
		"f32":        PackB(true, K, N, w, K),
	}
}

// TestGemvPackedRows: M rows at once give each row GemvPacked's result on it
// alone bit for bit (strided rows, alpha and beta, odd K, partial panels, 1
// and 2 threads), and the naive reference's within rounding.
func TestGemvPackedRows(t *testing.T) {
	forLevels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(71, 72))
		for _, threads := range []int{1, 2} {
			prev := SetThreads(threads)
			for _, s := range []struct{ N, K int }{{1, 1}, {5, 3}, {33, 17}, {64, 64}, {100, 65}, {512, 256}, {257, 512}} {
				w := randSlice(rng, s.N*s.K)
				for kind, pb := range packedKinds(w, s.N, s.K) {
					for _, M := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 13} {
						for _, ab := range [][2]float32{{1, 0}, {0.5, 2}, {-1.5, 1}} {
							ldx, ldy := s.K+3, s.N+5
							x := randSlice(rng, M*ldx)
							y0 := randSlice(rng, M*ldy)
							got := clone32(y0)
							GemvPackedRows(got, ldy, pb, x, ldx, M, ab[0], ab[1])
							name := fmt.Sprintf("t%d N%d K%d %s M%d alpha %g beta %g", threads, s.N, s.K, kind, M, ab[0], ab[1])
							for r := 0; r < M; r++ {
								want := clone32(y0[r*ldy : r*ldy+s.N])
								GemvPacked(want, pb, x[r*ldx:r*ldx+s.K], ab[0], ab[1])
								sameBits(t, fmt.Sprintf("%s row %d against GemvPacked", name, r), got[r*ldy:r*ldy+s.N], want)
								// Columns past N in the stride are not touched.
								sameBits(t, name+" stride gap", got[r*ldy+s.N:r*ldy+ldy], y0[r*ldy+s.N:r*ldy+ldy])
								// The naive reference, within rounding of the
								// magnitudes summed (|alpha| |x| |w| + |beta y|).
								wr := w
								if kind != "f32" {
									wr = fromBF16(toBF16(w))
								}
								ref, mag := clone32(y0[r*ldy:r*ldy+s.N]), absSlice(y0[r*ldy:r*ldy+s.N])
								GemmRef(false, true, 1, s.N, s.K, ab[0], x[r*ldx:], s.K, wr, s.K, ab[1], ref, s.N)
								GemmRef(false, true, 1, s.N, s.K, abs32(ab[0]), absSlice(x[r*ldx:r*ldx+s.K]), s.K, absSlice(wr), s.K, abs32(ab[1]), mag, s.N)
								for i, v := range got[r*ldy : r*ldy+s.N] {
									if d := math.Abs(float64(v - ref[i])); d > 1e-5*float64(mag[i])+1e-30 {
										t.Fatalf("%s row %d col %d: %g, reference %g (magnitude %g)", name, r, i, v, ref[i], mag[i])
									}
								}
							}
						}
					}
				}
			}
			SetThreads(prev)
		}
	})
}

// TestGemvPackedJobs: several products of different shapes in one call (the
// split by work crosses products) give each row GemvPacked's result bit for
// bit; empty and alpha = 0 products scale y as GemvPacked does.
func TestGemvPackedJobs(t *testing.T) {
	forLevels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(73, 74))
		for _, threads := range []int{1, 2, 3} {
			prev := SetThreads(threads)
			shapes := []struct {
				N, K, M     int
				alpha, beta float32
			}{{512, 256, 2, 1, 0}, {512, 256, 1, 1, 0}, {256, 512, 3, 1, 1}, {8, 256, 8, 1, 0}, {100, 33, 0, 1, 0},
				{96, 40, 4, 0, 0.5}, {1000, 300, 5, 0.25, 0}, {256, 256, 8, 1, 1}}
			jobs := make([]PackedGemv, len(shapes))
			y0s := make([][]float32, len(shapes))
			for i, s := range shapes {
				w := randSlice(rng, s.N*s.K)
				pb := PackBF16(BF16Dot, true, s.K, s.N, toBF16(w), s.K)
				if i%3 == 2 {
					pb = PackB(true, s.K, s.N, w, s.K)
				}
				x, y0 := randSlice(rng, max(s.M, 1)*s.K), randSlice(rng, max(s.M, 1)*s.N)
				y0s[i] = y0
				jobs[i] = PackedGemv{B: pb, X: x, Y: clone32(y0), LdX: s.K, LdY: s.N, M: s.M, Alpha: s.alpha, Beta: s.beta}
			}
			GemvPackedJobs(jobs)
			for i, j := range jobs {
				N, K := j.B.N, j.B.K
				for r := 0; r < max(j.M, 1); r++ {
					want := clone32(y0s[i][r*N : (r+1)*N])
					if j.M > 0 {
						GemvPacked(want, j.B, j.X[r*K:(r+1)*K], j.Alpha, j.Beta)
					}
					sameBits(t, fmt.Sprintf("threads %d job %d row %d", threads, i, r), j.Y[r*N:(r+1)*N], want)
				}
			}
			SetThreads(prev)
		}
	})
}

func TestGemvPackedJobsShapesPanic(t *testing.T) {
	pb := PackB(true, 4, 3, make([]float32, 12), 4)
	mustPanic(t, "short x", func() { GemvPackedRows(make([]float32, 6), 3, pb, make([]float32, 7), 4, 2, 1, 0) })
	mustPanic(t, "short y", func() { GemvPackedRows(make([]float32, 5), 3, pb, make([]float32, 8), 4, 2, 1, 0) })
	mustPanic(t, "overlapping rows", func() { GemvPackedRows(make([]float32, 6), 2, pb, make([]float32, 8), 4, 2, 1, 0) })
}

// BenchmarkGemvPackedRows: an expert's product (256 -> 512, bf16 pairs) for
// M decode rows, as M GemvPacked calls, one GemvPackedRows, and the
// bf16-dot GemmPacked the multi-token path used.
func BenchmarkGemvPackedRows(b *testing.B) {
	if CurrentLevel() < LevelAVX512BF16 {
		b.Skip("the bf16 pair layout needs AVX512_BF16")
	}
	prev := SetThreads(1)
	defer SetThreads(prev)
	rng := rand.New(rand.NewPCG(1, 2))
	N, K := 512, 256
	pb := PackBF16(BF16Dot, true, K, N, toBF16(randSlice(rng, N*K)), K)
	for _, M := range []int{1, 2, 4, 8} {
		x, y := randSlice(rng, M*K), make([]float32, M*N)
		flops := func(b *testing.B) {
			b.ReportMetric(2*float64(M*N*K)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		}
		b.Run(fmt.Sprintf("M%d/rows", M), func(b *testing.B) {
			for b.Loop() {
				GemvPackedRows(y, N, pb, x, K, M, 1, 0)
			}
			flops(b)
		})
		b.Run(fmt.Sprintf("M%d/each", M), func(b *testing.B) {
			for b.Loop() {
				for r := 0; r < M; r++ {
					GemvPacked(y[r*N:], pb, x[r*K:], 1, 0)
				}
			}
			flops(b)
		})
		b.Run(fmt.Sprintf("M%d/gemm", M), func(b *testing.B) {
			for b.Loop() {
				GemmPacked(false, M, 1, x, K, pb, 0, y, N)
			}
			flops(b)
		})
	}
}
