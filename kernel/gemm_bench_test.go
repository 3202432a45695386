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
