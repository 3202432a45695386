package kernel

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/moesys/moesys/tensor"
	"golang.org/x/sys/cpu"
)

// levels returns the kernel tiers this machine can run, best first, so each
// test checks the SIMD paths (AVX-512 and, where the CPU has it, AVX2) and
// the portable path against the same twin.
func levels() []Level {
	ls := []Level{Detected}
	if Detected > LevelAVX2 && cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		ls = append(ls, LevelAVX2)
	}
	if Detected > LevelGeneric {
		ls = append(ls, LevelGeneric)
	}
	return ls
}

// forLevels runs f once per available tier, restoring the tier afterwards.
func forLevels(t *testing.T, f func(t *testing.T)) {
	for _, l := range levels() {
		t.Run(l.String(), func(t *testing.T) {
			prev := SetLevel(l)
			defer SetLevel(prev)
			f(t)
		})
	}
}

func toBF16(s []float32) []uint16 {
	b := make([]uint16, len(s))
	tensor.F32SliceToBF16(b, s)
	return b
}

// gemmShapes covers awkward sizes: 1, primes, non-multiples of the 16-lane
// vector and of the 12 x 32 tile, K across the 512-deep packing blocks.
var gemmShapes = []struct{ M, N, K int }{
	{1, 1, 1}, {1, 3, 17}, {3, 1, 5}, {17, 33, 3}, {12, 32, 256}, {13, 31, 257},
	{16, 64, 1000}, {25, 97, 513}, {100, 700, 40}, {64, 1000, 17}, {130, 650, 300},
}

func TestGemmMatchesRef(t *testing.T) {
	forLevels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(7, 8))
		for _, s := range gemmShapes {
			for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
				for _, ab := range [][2]float32{{1, 0}, {0.5, 1}, {-2, 0.25}} {
					name := fmt.Sprintf("M%d_N%d_K%d_tA%v_tB%v_a%g_b%g", s.M, s.N, s.K, tr[0], tr[1], ab[0], ab[1])
					lda, ldb, ldc := s.K+2, s.N+1, s.N+3 // padded strides
					if tr[0] {
						lda = s.M + 2
					}
					if tr[1] {
						ldb = s.K + 1
					}
					ar, br := s.M, s.K
					if tr[0] {
						ar = s.K
					}
					if tr[1] {
						br = s.N
					}
					a := randSlice(rng, ar*lda)
					b := randSlice(rng, br*ldb)
					c0 := randSlice(rng, s.M*ldc)
					if ab[1] == 0 {
						for i := range c0 {
							c0[i] = float32(math.NaN()) // beta = 0 must not read C
						}
					}
					want := append([]float32(nil), c0...)
					got := append([]float32(nil), c0...)
					GemmRef(tr[0], tr[1], s.M, s.N, s.K, ab[0], a, lda, b, ldb, ab[1], want, ldc)
					Gemm(tr[0], tr[1], s.M, s.N, s.K, ab[0], a, lda, b, ldb, ab[1], got, ldc)
					if e := relErr(got, want); !(e < 1e-5) {
						t.Fatalf("%s: rel err %g", name, e)
					}
					// The padding between rows of C must be untouched.
					for i := 0; i < s.M; i++ {
						for j := s.N; j < ldc && i*ldc+j < len(got); j++ {
							if g, w := got[i*ldc+j], c0[i*ldc+j]; math.Float32bits(g) != math.Float32bits(w) {
								t.Fatalf("%s: C padding (%d,%d) changed", name, i, j)
							}
						}
					}

					// bf16 weights: exact mode equals the f32 GEMM on widened weights.
					bb := toBF16(b)
					gotB := append([]float32(nil), c0...)
					wantB := append([]float32(nil), c0...)
					GemmBF16Ref(tr[0], tr[1], s.M, s.N, s.K, ab[0], a, lda, bb, ldb, ab[1], wantB, ldc)
					GemmBF16(BF16Exact, tr[0], tr[1], s.M, s.N, s.K, ab[0], a, lda, bb, ldb, ab[1], gotB, ldc)
					if e := relErr(gotB, wantB); !(e < 1e-5) {
						t.Fatalf("%s bf16 exact: rel err %g", name, e)
					}
					// Dot mode rounds A to bf16 (where the CPU has the dot
					// instruction), then every product is exact in f32.
					wantD := append([]float32(nil), c0...)
					GemmBF16Ref(tr[0], tr[1], s.M, s.N, s.K, ab[0], dotA(a), lda, bb, ldb, ab[1], wantD, ldc)
					gotD := append([]float32(nil), c0...)
					GemmBF16(BF16Dot, tr[0], tr[1], s.M, s.N, s.K, ab[0], a, lda, bb, ldb, ab[1], gotD, ldc)
					if e := relErr(gotD, wantD); !(e < 1e-5) {
						t.Fatalf("%s bf16 dot: rel err %g", name, e)
					}
				}
			}
		}
	})
}

// dotA returns what BF16Dot mode multiplies by: a rounded to bf16 where the
// CPU runs the dot instruction, a itself where it falls back to BF16Exact.
func dotA(a []float32) []float32 {
	if CurrentLevel() < LevelAVX512BF16 {
		return a
	}
	r := make([]float32, len(a))
	for i, v := range a {
		r[i] = tensor.BF16ToF32(tensor.F32ToBF16(v))
	}
	return r
}

func TestGemmPacked(t *testing.T) {
	forLevels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(5, 6))
		for _, s := range gemmShapes {
			for _, transB := range []bool{false, true} {
				name := fmt.Sprintf("M%d_N%d_K%d_tB%v", s.M, s.N, s.K, transB)
				ldb := s.N
				if transB {
					ldb = s.K
				}
				a := randSlice(rng, s.M*s.K)
				b := randSlice(rng, s.K*s.N)
				want := randSlice(rng, s.M*s.N)
				got := append([]float32(nil), want...)
				GemmRef(false, transB, s.M, s.N, s.K, 1, a, s.K, b, ldb, 1, want, s.N)
				GemmPacked(false, s.M, 1, a, s.K, PackB(transB, s.K, s.N, b, ldb), 1, got, s.N)
				if e := relErr(got, want); !(e < 1e-5) {
					t.Fatalf("%s: rel err %g", name, e)
				}
				bb := toBF16(b)
				for _, mode := range []BF16Mode{BF16Exact, BF16Dot} {
					wantB := make([]float32, s.M*s.N)
					aa := a
					if mode == BF16Dot {
						aa = dotA(a)
					}
					GemmBF16Ref(false, transB, s.M, s.N, s.K, 1, aa, s.K, bb, ldb, 0, wantB, s.N)
					gotB := make([]float32, s.M*s.N)
					GemmPacked(false, s.M, 1, a, s.K, PackBF16(mode, transB, s.K, s.N, bb, ldb), 0, gotB, s.N)
					if e := relErr(gotB, wantB); !(e < 1e-5) {
						t.Fatalf("%s mode %d: rel err %g", name, mode, e)
					}
				}
			}
		}
	})
}

func TestGemmPackedTransAStrided(t *testing.T) {
	forLevels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(45, 46))
		for _, s := range []struct{ M, N, K int }{{1, 5, 3}, {13, 40, 33}, {30, 70, 600}} {
			lda, ldc := s.M+3, s.N+5
			a := randSlice(rng, s.K*lda) // stored K x M
			b := randSlice(rng, s.N*s.K) // HF layout (N, K)
			c0 := randSlice(rng, s.M*ldc)
			want := append([]float32(nil), c0...)
			got := append([]float32(nil), c0...)
			GemmRef(true, true, s.M, s.N, s.K, 0.5, a, lda, b, s.K, 2, want, ldc)
			GemmPacked(true, s.M, 0.5, a, lda, PackB(true, s.K, s.N, b, s.K), 2, got, ldc)
			if e := relErr(got, want); !(e < 1e-5) {
				t.Fatalf("M%d N%d K%d: rel err %g", s.M, s.N, s.K, e)
			}
		}
	})
}

// TestPackedBAcrossLevels: AVX2 and AVX-512 share the packed layout, the
// portable path has its own, and bf16-dot pairs need AVX512_BF16; a PackedB
// used at a tier with another layout panics instead of computing garbage.
func TestPackedBAcrossLevels(t *testing.T) {
	if !(Detected > LevelAVX2 && cpu.X86.HasAVX2 && cpu.X86.HasFMA) {
		t.Skip("needs a CPU with both the AVX-512 and AVX2 tiers")
	}
	cases := []struct {
		name          string
		packAt, runAt Level
		dot           bool
		wantPanic     bool
	}{
		{"avx512-to-avx2", Detected, LevelAVX2, false, false},
		{"avx2-to-avx512", LevelAVX2, Detected, false, false},
		{"generic-to-avx2", LevelGeneric, LevelAVX2, false, true},
		{"avx2-to-generic", LevelAVX2, LevelGeneric, false, true},
		{"dot-to-avx2", Detected, LevelAVX2, true, Detected >= LevelAVX512BF16},
	}
	M, N, K := 5, 70, 33
	rng := rand.New(rand.NewPCG(13, 14))
	a, b := randSlice(rng, M*K), randSlice(rng, N*K) // b in the HF layout (N, K)
	bb := toBF16(b)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			prev := SetLevel(c.packAt)
			defer SetLevel(prev)
			var pb *PackedB
			if c.dot {
				pb = PackBF16(BF16Dot, true, K, N, bb, K)
			} else {
				pb = PackB(true, K, N, b, K)
			}
			SetLevel(c.runAt)
			got := make([]float32, M*N)
			panicked := func() (p bool) {
				defer func() { p = recover() != nil }()
				GemmPacked(false, M, 1, a, K, pb, 0, got, N)
				return false
			}()
			if panicked != c.wantPanic {
				t.Fatalf("panicked = %v, want %v", panicked, c.wantPanic)
			}
			if panicked || c.dot {
				return
			}
			want := make([]float32, M*N)
			GemmRef(false, true, M, N, K, 1, a, K, b, K, 0, want, N)
			if e := relErr(got, want); !(e < 1e-5) {
				t.Fatalf("rel err %g", e)
			}
		})
	}
}

func TestGemvMatchesRef(t *testing.T) {
	forLevels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(9, 10))
		for _, s := range []struct{ N, K int }{{1, 1}, {3, 17}, {5, 31}, {17, 1000}, {1000, 3}, {333, 257}, {4096, 64}} {
			ldw := s.K + 5
			w := randSlice(rng, s.N*ldw)
			x := randSlice(rng, s.K)
			y0 := randSlice(rng, s.N)
			want := append([]float32(nil), y0...)
			got := append([]float32(nil), y0...)
			// y = 0.5*W x + 2 y, with x as a 1 x K row against W^T.
			GemmRef(false, true, 1, s.N, s.K, 0.5, x, s.K, w, ldw, 2, want, s.N)
			Gemv(got, w, ldw, x, s.N, s.K, 0.5, 2)
			if e := relErr(got, want); !(e < 1e-5) {
				t.Fatalf("N%d K%d f32: rel err %g", s.N, s.K, e)
			}
			wb := toBF16(w)
			GemmBF16Ref(false, true, 1, s.N, s.K, 1, x, s.K, wb, ldw, 0, want, s.N)
			GemvBF16(got, wb, ldw, x, s.N, s.K, 1, 0)
			if e := relErr(got, want); !(e < 1e-5) {
				t.Fatalf("N%d K%d bf16: rel err %g", s.N, s.K, e)
			}
		}
	})
}

func TestAttentionMatchesRef(t *testing.T) {
	cases := []struct {
		name                         string
		T, S, H, G, Dh, pos0, window int
	}{
		{"single", 1, 1, 1, 1, 8, 0, 0},
		{"decode-cache", 1, 37, 4, 2, 16, 36, 0},
		{"decode-window", 3, 50, 4, 1, 24, 47, 8},
		{"decode-gqa-rows", 3, 60, 4, 2, 20, 57, 9},
		// Decode's multi-position score blocks: 4 positions for up to 2
		// heads a KV head, 2 for 3-4, with a tail of 1-3 positions.
		{"decode-rep2-block", 1, 83, 4, 2, 64, 82, 0},
		{"decode-rep4-block", 1, 41, 8, 2, 32, 40, 0},
		{"decode-rep3-window", 2, 45, 6, 2, 16, 43, 7},
		{"decode-rep8", 1, 19, 8, 1, 64, 18, 0},
		{"prefill-small", 5, 5, 2, 2, 8, 0, 0},
		{"prefill-gqa", 100, 100, 8, 2, 64, 0, 0},
		{"prefill-odd-dh", 45, 45, 3, 1, 17, 0, 0},
		{"prefill-window", 300, 300, 4, 2, 32, 0, 50},
		{"chunk-after-cache", 77, 300, 4, 4, 40, 223, 0},
		{"chunk-window", 64, 600, 2, 1, 128, 536, 100},
		{"long", 700, 700, 2, 1, 128, 0, 0},
	}
	forLevels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(11, 12))
		for _, c := range cases {
			q := randSlice(rng, c.T*c.H*c.Dh)
			k := randSlice(rng, c.S*c.G*c.Dh)
			v := randSlice(rng, c.S*c.G*c.Dh)
			scale := float32(1 / math.Sqrt(float64(c.Dh)))
			want := make([]float32, c.T*c.H*c.Dh)
			AttentionRef(want, q, k, v, c.T, c.S, c.H, c.G, c.Dh, c.pos0, c.window, scale)
			got := make([]float32, len(want))
			lse := make([]float32, c.H*c.T)
			ws := make([]float32, AttentionWorkspace(c.T, c.S, c.H, c.G, c.Dh))
			Attention(got, lse, q, k, v, c.T, c.S, c.H, c.G, c.Dh, c.pos0, c.window, scale, ws)
			if e := relErr(got, want); !(e < 1e-5) {
				t.Fatalf("%s: rel err %g", c.name, e)
			}
			// lse against a direct float64 computation for a few rows.
			for _, hr := range [][2]int{{0, 0}, {c.H - 1, c.T - 1}, {c.H / 2, c.T / 2}} {
				h, r := hr[0], hr[1]
				g := h / (c.H / c.G)
				pos := c.pos0 + r
				lo := 0
				if c.window > 0 {
					lo = max(0, pos-c.window+1)
				}
				var sum float64
				for j := lo; j <= pos; j++ {
					var d float64
					for i := 0; i < c.Dh; i++ {
						d += float64(q[(r*c.H+h)*c.Dh+i]) * float64(k[(j*c.G+g)*c.Dh+i])
					}
					sum += math.Exp(d * float64(scale))
				}
				if w := math.Log(sum); math.Abs(float64(lse[h*c.T+r])-w) > 1e-4*math.Max(1, math.Abs(w)) {
					t.Fatalf("%s: lse[h%d,t%d] = %g, want %g", c.name, h, r, lse[h*c.T+r], w)
				}
			}
		}
	})
}

func TestPoolRunsEveryPart(t *testing.T) {
	for _, threads := range []int{1, 2, 3, 8} {
		p := NewPool(threads)
		for _, parts := range []int{0, 1, 2, 3, 7, 100} {
			hits := make([]int, parts)
			p.Run(parts, func(i int) { hits[i]++ })
			for i, h := range hits {
				if h != 1 {
					t.Fatalf("threads %d parts %d: part %d ran %d times", threads, parts, i, h)
				}
			}
		}
		// A nested call runs inline instead of deadlocking.
		var n atomic.Int32
		p.Run(2, func(int) { p.Run(3, func(int) { n.Add(1) }) })
		if n.Load() != 6 {
			t.Fatalf("threads %d: nested parts ran %d times, want 6", threads, n.Load())
		}
	}
}

func TestSetThreadsWhileRunning(t *testing.T) {
	// Kernels keep running, correctly, while the pool is swapped under them.
	prev := Threads()
	defer SetThreads(prev)
	rng := rand.New(rand.NewPCG(41, 42))
	M, N, K := 64, 96, 80
	a, b := randSlice(rng, M*K), randSlice(rng, K*N)
	want := make([]float32, M*N)
	GemmRef(false, false, M, N, K, 1, a, K, b, N, 0, want, N)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			SetThreads(1 + i%3)
		}
	}()
	for i := 0; i < 200; i++ {
		got := make([]float32, M*N)
		Gemm(false, false, M, N, K, 1, a, K, b, N, 0, got, N)
		if e := relErr(got, want); !(e < 1e-5) {
			t.Fatalf("iteration %d: rel err %g", i, e)
		}
	}
	<-done
}

func TestAttentionMisalignedWorkspace(t *testing.T) {
	// Workspaces carved out of an arena at any offset must work.
	rng := rand.New(rand.NewPCG(43, 44))
	T, H, G, Dh := 40, 2, 1, 16
	q, k, v := randSlice(rng, T*H*Dh), randSlice(rng, T*G*Dh), randSlice(rng, T*G*Dh)
	want := make([]float32, T*H*Dh)
	AttentionRef(want, q, k, v, T, T, H, G, Dh, 0, 0, 0.25)
	n := AttentionWorkspace(T, T, H, G, Dh)
	for off := 0; off < 16; off++ {
		ws := make([]float32, n+off)[off:]
		got := make([]float32, T*H*Dh)
		Attention(got, nil, q, k, v, T, T, H, G, Dh, 0, 0, 0.25, ws)
		if e := relErr(got, want); !(e < 1e-5) {
			t.Fatalf("offset %d: rel err %g", off, e)
		}
	}
}

func TestGemmAlphaZeroReadsNoInputs(t *testing.T) {
	// BLAS contract: alpha == 0 means C = beta*C, even with Inf/NaN in A or B.
	inf := float32(math.Inf(1))
	for _, beta := range []float32{0, 0.5, 1} {
		a := []float32{inf, float32(math.NaN()), 1, 2}
		b := []float32{inf, 1, 2, 3}
		c := []float32{2, 4, 6, 8}
		Gemm(false, false, 2, 2, 2, 0, a, 2, b, 2, beta, c, 2)
		for i, v := range c {
			if want := beta * []float32{2, 4, 6, 8}[i]; v != want {
				t.Fatalf("beta %g: C[%d] = %g, want %g", beta, i, v, want)
			}
		}
	}
}

func TestGemmShapeOverflowPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("a stride that overflows the bounds check must panic, not reach the kernel")
		}
	}()
	Gemm(false, false, 5, 1, 1, 1, make([]float32, 1), 1<<61, make([]float32, 1), 1, 0, make([]float32, 5), 1)
}

func TestGemvPacked(t *testing.T) {
	forLevels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(51, 52))
		for _, s := range []struct{ N, K int }{{1, 1}, {5, 3}, {33, 17}, {100, 64}, {700, 301}, {1024, 2048}} {
			w := randSlice(rng, s.N*s.K) // HF layout (N, K)
			x := randSlice(rng, s.K)
			y0 := randSlice(rng, s.N)
			wb := toBF16(w)
			want := append([]float32(nil), y0...)
			GemmBF16Ref(false, true, 1, s.N, s.K, 0.5, x, s.K, wb, s.K, 2, want, s.N)
			for _, mode := range []BF16Mode{BF16Exact, BF16Dot} {
				got := append([]float32(nil), y0...)
				GemvPacked(got, PackBF16(mode, true, s.K, s.N, wb, s.K), x, 0.5, 2)
				if e := relErr(got, want); !(e < 1e-5) {
					t.Fatalf("N%d K%d mode %d: rel err %g", s.N, s.K, mode, e)
				}
			}
			wantF := append([]float32(nil), y0...)
			GemmRef(false, true, 1, s.N, s.K, 1, x, s.K, w, s.K, 0, wantF, s.N)
			gotF := append([]float32(nil), y0...)
			GemvPacked(gotF, PackB(true, s.K, s.N, w, s.K), x, 1, 0)
			if e := relErr(gotF, wantF); !(e < 1e-5) {
				t.Fatalf("N%d K%d f32: rel err %g", s.N, s.K, e)
			}
		}
	})
}

// TestGemmTransARowStripesExactSlices: a transposed A (K x M) split into row
// stripes over threads, with A, B and C sliced to exactly the bytes they
// need (the shape AttentionBackward's dV product has: M = keys, small N).
func TestGemmTransARowStripesExactSlices(t *testing.T) {
	forLevels(t, func(t *testing.T) {
		old := SetThreads(2)
		defer SetThreads(old)
		rng := rand.New(rand.NewPCG(61, 62))
		for _, s := range []struct{ M, N, K int }{{192, 64, 64}, {300, 16, 40}, {97, 8, 33}} {
			a, b := randSlice(rng, s.K*s.M), randSlice(rng, s.K*s.N) // A (K, M), B (K, N)
			c, want := make([]float32, s.M*s.N), make([]float32, s.M*s.N)
			Gemm(true, false, s.M, s.N, s.K, 1, a, s.M, b, s.N, 0, c, s.N)
			GemmRef(true, false, s.M, s.N, s.K, 1, a, s.M, b, s.N, 0, want, s.N)
			if e := relErr(c, want); e > 1e-5 {
				t.Fatalf("%+v: rel err %g", s, e)
			}
		}
	})
}
