package kernel

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func benchGemm(b *testing.B, M, K, N, threads int, transB bool) {
	prev := SetThreads(threads)
	defer SetThreads(prev)
	rng := rand.New(rand.NewPCG(1, 2))
	a := make([]float32, M*K)
	w := make([]float32, K*N)
	c := make([]float32, M*N)
	for i := range a {
		a[i] = rng.Float32()
	}
	for i := range w {
		w[i] = rng.Float32()
	}
	ldb := N
	if transB {
		ldb = K
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		Gemm(false, transB, M, N, K, 1, a, K, w, ldb, 0, c, N)
	}
	b.ReportMetric(2*float64(M*N*K)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

func BenchmarkGemmF32(b *testing.B) {
	for _, s := range []struct{ M, K, N, t int }{{2048, 2048, 2048, 1}, {2048, 2048, 2048, 2}, {512, 1024, 4096, 1}} {
		b.Run(fmt.Sprintf("%dx%dx%d_t%d", s.M, s.K, s.N, s.t), func(b *testing.B) { benchGemm(b, s.M, s.K, s.N, s.t, false) })
	}
}

// BenchmarkGemmF32Levels runs the 2048^3 single-thread GEMM at every tier
// this machine has (levels(): e.g. avx512bf16, avx2, generic), so the tiers
// are compared in one run.
func BenchmarkGemmF32Levels(b *testing.B) {
	for _, l := range levels() {
		b.Run(fmt.Sprintf("2048x2048x2048_t1_%s", l), func(b *testing.B) {
			prev := SetLevel(l)
			defer SetLevel(prev)
			benchGemm(b, 2048, 2048, 2048, 1, false)
		})
	}
}

func BenchmarkGemmBF16(b *testing.B) {
	for _, mode := range []BF16Mode{BF16Exact, BF16Dot} {
		b.Run(fmt.Sprintf("512x1024x4096_mode%d_t1", mode), func(b *testing.B) {
			prev := SetThreads(1)
			defer SetThreads(prev)
			rng := rand.New(rand.NewPCG(1, 2))
			M, K, N := 512, 1024, 4096
			a, w, c := randSlice(rng, M*K), toBF16(randSlice(rng, N*K)), make([]float32, M*N)
			b.ReportAllocs()
			for b.Loop() {
				GemmBF16(mode, false, true, M, N, K, 1, a, K, w, K, 0, c, N)
			}
			b.ReportMetric(2*float64(M*N*K)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkGemmPacked is the expert-batch shape: 16 tokens, weights packed at load.
func BenchmarkGemmPacked(b *testing.B) {
	prev := SetThreads(1)
	defer SetThreads(prev)
	rng := rand.New(rand.NewPCG(1, 2))
	M, K, N := 16, 1024, 4096
	a, c := randSlice(rng, M*K), make([]float32, M*N)
	pw := PackB(true, K, N, randSlice(rng, N*K), K)
	b.ReportAllocs()
	b.SetBytes(int64(pw.Bytes()))
	for b.Loop() {
		GemmPacked(false, M, 1, a, K, pw, 0, c, N)
	}
	b.ReportMetric(2*float64(M*N*K)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkGemvBF16 is decode against a Mixtral-sized projection (117 MB of
// bf16 weights, far beyond the caches); bytes are weight bytes.
func BenchmarkGemvBF16(b *testing.B) { benchGemvBF16(b) }

// BenchmarkGemvBF16Levels is BenchmarkGemvBF16 at every tier of levels().
func BenchmarkGemvBF16Levels(b *testing.B) {
	for _, l := range levels() {
		b.Run(l.String(), func(b *testing.B) {
			prev := SetLevel(l)
			defer SetLevel(prev)
			benchGemvBF16(b)
		})
	}
}

func benchGemvBF16(b *testing.B) {
	prev := SetThreads(1)
	defer SetThreads(prev)
	rng := rand.New(rand.NewPCG(1, 2))
	N, K := 14336, 4096
	w, x, y := toBF16(randSlice(rng, N*K)), randSlice(rng, K), make([]float32, N)
	b.ReportAllocs()
	b.SetBytes(int64(2 * N * K))
	for b.Loop() {
		GemvBF16(y, w, K, x, N, K, 1, 0)
	}
}

func BenchmarkAttention(b *testing.B) {
	for _, s := range []struct {
		name           string
		T, S, H, G, Dh int
	}{{"prefill_T2048_H32_G8_Dh128", 2048, 2048, 32, 8, 128}, {"decode_S4096_H32_G8_Dh128", 1, 4096, 32, 8, 128},
		{"decode_S80_H4_G2_Dh64", 1, 80, 4, 2, 64}} { // the small preset's decode step in moesys bench serve
		b.Run(s.name+"_t1", func(b *testing.B) {
			prev := SetThreads(1)
			defer SetThreads(prev)
			rng := rand.New(rand.NewPCG(1, 2))
			q, k, v := randSlice(rng, s.T*s.H*s.Dh), randSlice(rng, s.S*s.G*s.Dh), randSlice(rng, s.S*s.G*s.Dh)
			out := make([]float32, s.T*s.H*s.Dh)
			ws := make([]float32, AttentionWorkspace(s.T, s.S, s.H, s.G, s.Dh))
			b.ReportAllocs()
			b.SetBytes(int64(4 * 2 * s.S * s.G * s.Dh)) // KV bytes read
			for b.Loop() {
				Attention(out, nil, q, k, v, s.T, s.S, s.H, s.G, s.Dh, s.S-s.T, 0, 0.088, ws)
			}
			pairs := float64(s.T)*float64(s.S-s.T) + float64(s.T)*float64(s.T+1)/2
			b.ReportMetric(4*float64(s.Dh*s.H)*pairs*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

func BenchmarkAttentionBackward(b *testing.B) {
	prev := SetThreads(1)
	defer SetThreads(prev)
	rng := rand.New(rand.NewPCG(1, 2))
	T, H, G, Dh := 512, 8, 4, 64
	q, k, v, dout := randSlice(rng, T*H*Dh), randSlice(rng, T*G*Dh), randSlice(rng, T*G*Dh), randSlice(rng, T*H*Dh)
	out, lse := make([]float32, T*H*Dh), make([]float32, H*T)
	Attention(out, lse, q, k, v, T, T, H, G, Dh, 0, 0, 0.125, make([]float32, AttentionWorkspace(T, T, H, G, Dh)))
	dq, dk, dv := make([]float32, len(q)), make([]float32, len(k)), make([]float32, len(v))
	ws := make([]float32, AttentionBackwardWorkspace(T, T, H, G, Dh))
	b.ReportAllocs()
	for b.Loop() {
		AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse, T, T, H, G, Dh, 0, 0, 0.125, ws)
	}
	b.ReportMetric(10*float64(Dh*H)*float64(T)*float64(T+1)/2*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

// BenchmarkGemvPackedBF16 is BenchmarkGemvBF16 over weights packed at load
// in the bf16 pair layout (one contiguous stream per 32 columns).
func BenchmarkGemvPackedBF16(b *testing.B) {
	if CurrentLevel() < LevelAVX512BF16 {
		b.Skip("the bf16 pair layout needs AVX512_BF16")
	}
	prev := SetThreads(1)
	defer SetThreads(prev)
	rng := rand.New(rand.NewPCG(1, 2))
	N, K := 14336, 4096
	w := toBF16(randSlice(rng, N*K))
	pw := PackBF16(BF16Dot, true, K, N, w, K)
	x, y := randSlice(rng, K), make([]float32, N)
	b.ReportAllocs()
	b.SetBytes(int64(2 * N * K))
	for b.Loop() {
		GemvPacked(y, pw, x, 1, 0)
	}
}
