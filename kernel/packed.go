package kernel

import (
	"fmt"
	"unsafe"
)

// PackedB is a weight matrix op(B) (K x N) rearranged once, at load time,
// into the panel layout the micro-kernels stream, so that skinny products
// (expert batches, decode) skip packing on every call. On the portable path it
// holds op(B) transposed, row-major (N x K).
type PackedB struct {
	K, N int
	kind int       // bkF32, bkBF16 (widened to f32 at pack time) or bkBF16Dot
	f32  []float32 // native (AVX2, AVX-512) f32/bf16-exact: [ceil(N/NR)][K][NR]; portable: (N, K)
	u16  []uint16  // native bf16-dot: [ceil(N/NR)][ceil(K/2)][NR][2]
	lvl  Level     // tier it was packed for
}

// Bytes returns the packed buffer's size.
func (p *PackedB) Bytes() int { return 4*len(p.f32) + 2*len(p.u16) }

// PackB packs op(B) (K x N): B stored K x N with row stride ldb, or N x K if
// transB (the Hugging Face Linear weight layout). It allocates the result.
func PackB(transB bool, K, N int, b []float32, ldb int) *PackedB {
	checkB("PackB", transB, K, N, len(b), ldb)
	p := &PackedB{K: K, N: N, kind: bkF32, lvl: level}
	if !useNative() {
		p.f32 = make([]float32, N*K)
		for j := 0; j < N; j++ {
			for k := 0; k < K; k++ {
				if transB {
					p.f32[j*K+k] = b[j*ldb+k]
				} else {
					p.f32[j*K+k] = b[k*ldb+j]
				}
			}
		}
		return p
	}
	p.f32 = makeAlignedF32((N + nr - 1) / nr * nr * K)
	nativePackB(ptr(p.f32), bkF32, transB, ptr(b), ldb, K, N)
	return p
}

// PackBF16 packs bf16 weights op(B) (K x N), as PackB. With BF16Exact (or on
// a CPU without AVX512_BF16) the weights are widened to f32 (twice the
// memory); with BF16Dot they stay bf16 in the dot-product pair layout.
func PackBF16(mode BF16Mode, transB bool, K, N int, b []uint16, ldb int) *PackedB {
	checkB("PackBF16", transB, K, N, len(b), ldb)
	if mode == BF16Dot && level >= LevelAVX512BF16 {
		p := &PackedB{K: K, N: N, kind: bkBF16Dot, lvl: level}
		p.u16 = makeAlignedU16((N + nr - 1) / nr * nr * ((K + 1) / 2) * 2)
		nativePackB(ptr(p.u16), bkBF16Dot, transB, ptr(b), ldb, K, N)
		return p
	}
	f := make([]float32, len(b))
	for i, v := range b {
		f[i] = bf16f(v)
	}
	return PackB(transB, K, N, f, ldb)
}

// GemmPacked computes C = alpha*op(A)*B + beta*C with B pre-packed (K x N);
// op(A) is M x K as in Gemm. Allocation as for Gemm.
func GemmPacked(transA bool, M int, alpha float32, a []float32, lda int, b *PackedB, beta float32, c []float32, ldc int) {
	N, K := b.N, b.K
	ar, ac := M, K
	if transA {
		ar, ac = K, M
	}
	if M < 0 || (ar > 0 && lda < ac) || len(a) < need(ar, ac, lda) || (M > 0 && ldc < N) || len(c) < need(M, N, ldc) {
		panic(fmt.Sprintf("kernel.GemmPacked: bad shapes M=%d N=%d K=%d len(a)=%d lda=%d len(c)=%d ldc=%d", M, N, K, len(a), lda, len(c), ldc))
	}
	// The layout depends on the tier only as native (AVX2 and AVX-512 share
	// the NR-panel layout) or portable; bf16-dot pairs need AVX512_BF16.
	if (b.lvl >= LevelAVX2) != useNative() || (b.kind == bkBF16Dot && level < LevelAVX512BF16) {
		panic(fmt.Sprintf("kernel.GemmPacked: B was packed at level %s, kernels run at %s", b.lvl, level))
	}
	if M == 0 || N == 0 {
		return
	}
	if alpha == 0 || K == 0 {
		scaleC(M, N, beta, c, ldc)
		return
	}
	if !useNative() {
		gemmGo(transA, true, M, N, K, alpha, a, lda, b.f32, nil, K, beta, c, ldc)
		return
	}
	var bp unsafe.Pointer
	if b.kind == bkBF16Dot {
		bp = ptr(b.u16)
	} else {
		bp = ptr(b.f32)
	}
	gemmNative(transA, false, M, N, K, alpha, a, lda, bp, b.kind, true, 0, beta, c, ldc)
}

func checkB(op string, transB bool, K, N, lb, ldb int) {
	br, bc := K, N
	if transB {
		br, bc = N, K
	}
	if K < 0 || N < 0 || (br > 0 && ldb < bc) || lb < need(br, bc, ldb) {
		panic(fmt.Sprintf("kernel.%s: bad shapes K=%d N=%d transB=%v len(b)=%d ldb=%d", op, K, N, transB, lb, ldb))
	}
}

// GemvPacked computes y (N) = alpha * x (K) * B + beta * y for a pre-packed
// B (K x N): the decode-time product with weights packed at load. Each
// 32-column panel is one contiguous stream; panels are split over the pool.
// bf16 panels are widened exactly (x stays f32), in either packing mode.
func GemvPacked(y []float32, b *PackedB, x []float32, alpha, beta float32) {
	N, K := b.N, b.K
	if len(y) < N || len(x) < K {
		panic(fmt.Sprintf("kernel.GemvPacked: len(y)=%d len(x)=%d for %dx%d", len(y), len(x), K, N))
	}
	if (b.lvl >= LevelAVX2) != useNative() || (b.kind == bkBF16Dot && level < LevelAVX512BF16) {
		panic(fmt.Sprintf("kernel.GemvPacked: B was packed at level %s, kernels run at %s", b.lvl, level))
	}
	if N == 0 {
		return
	}
	if K == 0 || alpha == 0 {
		scaleC(1, N, beta, y, N)
		return
	}
	if !useNative() { // portable layout: B^T row-major (N, K)
		gemvRows(y, b.f32, nil, K, x, 0, N, K, alpha, beta)
		return
	}
	panels := (N + nr - 1) / nr
	parts := 1
	if N*K >= minParallelGemv {
		parts = min(Threads(), panels)
	}
	run := func(p0, p1 int) {
		j0, j1 := p0*nr, min(N, p1*nr)
		if j0 >= j1 {
			return
		}
		if b.kind == bkBF16Dot {
			nativeGemvPacked(y[j0:j1], ptr(b.u16[p0*((K+1)/2)*nr*2:]), bkBF16Dot, j1-j0, K, x, alpha, beta)
		} else if useAVX512() {
			nativeGemvPacked(y[j0:j1], ptr(b.f32[p0*K*nr:]), bkF32, j1-j0, K, x, alpha, beta)
		} else {
			gemvPackedGo(y[j0:j1], b.f32[p0*K*nr:], j1-j0, K, x, alpha, beta)
		}
	}
	if parts == 1 {
		run(0, panels)
		return
	}
	parallel(parts, func(p int) { run(panels*p/parts, panels*(p+1)/parts) })
}

// gemvPackedGo is GemvPacked over f32 panels in Go (the AVX2 tier).
func gemvPackedGo(y, b []float32, N, K int, x []float32, alpha, beta float32) {
	for p := 0; p*nr < N; p++ {
		var acc [nr]float32
		panel := b[p*K*nr : (p+1)*K*nr]
		for k, xk := range x[:K] {
			row := panel[k*nr : (k+1)*nr]
			for j := range acc {
				acc[j] += xk * row[j]
			}
		}
		for j := 0; j < nr && p*nr+j < N; j++ {
			y[p*nr+j] = scaleAdd(alpha*acc[j], beta, y[p*nr+j])
		}
	}
}
