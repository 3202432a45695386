package kernel

import (
	"math"
	"math/rand/v2"
	"testing"
)

// groupOffsets builds E+1 offsets from group sizes.
func groupOffsets(sizes []int) []int {
	offs := make([]int, len(sizes)+1)
	for e, s := range sizes {
		offs[e+1] = offs[e] + s
	}
	return offs
}

var groupCases = []struct {
	name  string
	sizes []int
	N, K  int
}{
	{"one", []int{5}, 7, 3},
	{"empty-groups", []int{0, 3, 0, 0, 17, 1, 0}, 33, 20},
	{"all-empty", []int{0, 0}, 8, 8},
	{"many-small", []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, 40, 24},
	{"skewed", []int{100, 1, 0, 37}, 64, 130},
}

func TestGroupedGemm(t *testing.T) {
	forLevels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(21, 22))
		for _, c := range groupCases {
			offs := groupOffsets(c.sizes)
			E, R := len(c.sizes), offs[len(c.sizes)]
			a := randSlice(rng, R*c.K)
			w := randSlice(rng, E*c.N*c.K) // (E, N, K): HF expert layout
			c0 := randSlice(rng, R*c.N)
			want := append([]float32(nil), c0...)
			for e := 0; e < E; e++ {
				r0, r1 := offs[e], offs[e+1]
				if r1 > r0 {
					GemmRef(false, true, r1-r0, c.N, c.K, 0.5, a[r0*c.K:], c.K, w[e*c.N*c.K:], c.K, 1, want[r0*c.N:], c.N)
				}
			}
			got := append([]float32(nil), c0...)
			GroupedGemm(true, offs, c.N, c.K, 0.5, a, w, c.N*c.K, 1, got)
			if e := relErr(got, want); !(e < 1e-5) {
				t.Fatalf("%s: rel err %g", c.name, e)
			}
			gotB := append([]float32(nil), c0...)
			wb := toBF16(w)
			wantB := append([]float32(nil), c0...)
			for e := 0; e < E; e++ {
				r0, r1 := offs[e], offs[e+1]
				if r1 > r0 {
					GemmBF16Ref(false, true, r1-r0, c.N, c.K, 0.5, a[r0*c.K:], c.K, wb[e*c.N*c.K:], c.K, 1, wantB[r0*c.N:], c.N)
				}
			}
			GroupedGemmBF16(BF16Exact, true, offs, c.N, c.K, 0.5, a, wb, c.N*c.K, 1, gotB)
			if e := relErr(gotB, wantB); !(e < 1e-5) {
				t.Fatalf("%s bf16: rel err %g", c.name, e)
			}
			// Dot mode: each expert's GEMM on bf16-rounded activations.
			wantD := append([]float32(nil), c0...)
			for e := 0; e < E; e++ {
				r0, r1 := offs[e], offs[e+1]
				if r1 > r0 {
					GemmBF16Ref(false, true, r1-r0, c.N, c.K, 0.5, dotA(a[r0*c.K:r1*c.K]), c.K, wb[e*c.N*c.K:], c.K, 1, wantD[r0*c.N:], c.N)
				}
			}
			gotD := append([]float32(nil), c0...)
			GroupedGemmBF16(BF16Dot, true, offs, c.N, c.K, 0.5, a, wb, c.N*c.K, 1, gotD)
			if e := relErr(gotD, wantD); !(e < 1e-5) {
				t.Fatalf("%s bf16 dot: rel err %g", c.name, e)
			}
			packed := make([]*PackedB, E)
			for e := range packed {
				packed[e] = PackB(true, c.K, c.N, w[e*c.N*c.K:(e+1)*c.N*c.K], c.K)
			}
			gotP := append([]float32(nil), c0...)
			GroupedGemmPacked(offs, 0.5, a, packed, 1, gotP)
			if e := relErr(gotP, want); !(e < 1e-5) {
				t.Fatalf("%s packed: rel err %g", c.name, e)
			}

			// Weight gradient: dW_e = dC_e^T A_e, accumulated with beta = 1.
			dc := randSlice(rng, R*c.N)
			dw0 := randSlice(rng, E*c.N*c.K)
			wantW := append([]float32(nil), dw0...)
			for e := 0; e < E; e++ {
				r0, r1 := offs[e], offs[e+1]
				GemmRef(true, false, c.N, c.K, r1-r0, 1, dc[r0*c.N:], c.N, a[r0*c.K:], c.K, 1, wantW[e*c.N*c.K:], c.K)
			}
			gotW := append([]float32(nil), dw0...)
			GroupedGemmWeightGrad(offs, c.N, c.K, 1, dc, a, 1, gotW, c.N*c.K)
			if e := relErr(gotW, wantW); !(e < 1e-5) {
				t.Fatalf("%s weight grad: rel err %g", c.name, e)
			}
			// beta = 0.5 scales every expert's gradient, empty ones included.
			wantW = append([]float32(nil), dw0...)
			for e := 0; e < E; e++ {
				r0, r1 := offs[e], offs[e+1]
				GemmRef(true, false, c.N, c.K, r1-r0, 1, dc[r0*c.N:], c.N, a[r0*c.K:], c.K, 0.5, wantW[e*c.N*c.K:], c.K)
			}
			gotW = append([]float32(nil), dw0...)
			GroupedGemmWeightGrad(offs, c.N, c.K, 1, dc, a, 0.5, gotW, c.N*c.K)
			if e := relErr(gotW, wantW); !(e < 1e-5) {
				t.Fatalf("%s weight grad beta 0.5: rel err %g", c.name, e)
			}
		}
	})
}

func TestAttentionBackwardMatchesRef(t *testing.T) {
	cases := []struct {
		name                         string
		T, S, H, G, Dh, pos0, window int
	}{
		{"tiny", 3, 3, 2, 1, 4, 0, 0},
		{"gqa", 70, 70, 4, 2, 16, 0, 0},
		{"window", 90, 90, 2, 2, 8, 0, 20},
		{"after-cache", 30, 100, 2, 1, 12, 70, 0},
		{"mqa-window-cache", 65, 130, 4, 1, 32, 65, 40},
	}
	forLevels(t, func(t *testing.T) {
		rng := rand.New(rand.NewPCG(31, 32))
		for _, c := range cases {
			q := randSlice(rng, c.T*c.H*c.Dh)
			k := randSlice(rng, c.S*c.G*c.Dh)
			v := randSlice(rng, c.S*c.G*c.Dh)
			dout := randSlice(rng, c.T*c.H*c.Dh)
			scale := float32(1 / math.Sqrt(float64(c.Dh)))
			wdq := make([]float32, len(q))
			wdk := make([]float32, len(k))
			wdv := make([]float32, len(v))
			AttentionBackwardRef(wdq, wdk, wdv, dout, q, k, v, c.T, c.S, c.H, c.G, c.Dh, c.pos0, c.window, scale)

			out := make([]float32, len(q))
			lse := make([]float32, c.H*c.T)
			Attention(out, lse, q, k, v, c.T, c.S, c.H, c.G, c.Dh, c.pos0, c.window, scale,
				make([]float32, AttentionWorkspace(c.T, c.S, c.H, c.G, c.Dh)))
			dq := randSlice(rng, len(q)) // overwritten
			dk := randSlice(rng, len(k))
			dv := randSlice(rng, len(v))
			AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse, c.T, c.S, c.H, c.G, c.Dh, c.pos0, c.window, scale,
				make([]float32, AttentionBackwardWorkspace(c.T, c.S, c.H, c.G, c.Dh)))
			for _, x := range []struct {
				name      string
				got, want []float32
			}{{"dq", dq, wdq}, {"dk", dk, wdk}, {"dv", dv, wdv}} {
				if e := relErr(x.got, x.want); !(e < 1e-4) {
					t.Fatalf("%s %s: rel err %g", c.name, x.name, e)
				}
			}
		}
	})
}

func BenchmarkGroupedGemm(b *testing.B) {
	// 64 experts, 512 tokens top-8 routed unevenly: OLMoE-like up projection.
	rng := rand.New(rand.NewPCG(1, 2))
	E, N, K := 64, 1024, 2048
	sizes := make([]int, E)
	for i := 0; i < 512*8; i++ {
		sizes[int(rng.ExpFloat64()*10)%E]++
	}
	offs := groupOffsets(sizes)
	R := offs[E]
	a, w, c := randSlice(rng, R*K), toBF16(randSlice(rng, E*N*K)), make([]float32, R*N)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		GroupedGemmBF16(BF16Dot, true, offs, N, K, 1, a, w, N*K, 0, c)
	}
	b.ReportMetric(2*float64(R*N*K)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
