package kernel

import (
	"fmt"
	"math"
	"unsafe"
)

// BF16Mode selects how a GEMM with bf16 weights treats its f32 activations.
type BF16Mode int

const (
	// BF16Exact widens the bf16 weights to f32 and multiplies in f32: the
	// result is what an f32 GEMM on the widened weights gives. Use it where
	// outputs are compared with a reference (logit checks, training).
	BF16Exact BF16Mode = iota
	// BF16Dot rounds the activations to bf16 too and uses the AVX512_BF16
	// dot-product instruction (f32 accumulation): about 1.7x the speed of
	// BF16Exact, at bf16 precision of the activations (~3 significant digits
	// per product). Falls back to BF16Exact where the CPU lacks AVX512_BF16.
	BF16Dot
)

// B operand kinds shared with the C kernels (MK_B_*).
const (
	bkF32     = 0
	bkBF16    = 1
	bkBF16Dot = 2
)

// minParallelFlops is the work (multiply-adds) below which a GEMM runs on the
// calling goroutine: waking a worker costs a few microseconds.
const minParallelFlops = 1 << 18

// Gemm computes C = alpha*op(A)*op(B) + beta*C, the BLAS sgemm contract in
// row-major storage: op(A) is M x K (A stored M x K with row stride lda, or K x M
// if transA), op(B) is K x N (B stored K x N with row stride ldb, or N x K if
// transB: the Hugging Face Linear weight layout), C is M x N with row stride
// ldc. With beta == 0, C is only written (NaNs in it do not propagate).
// Parallel over the default pool: a parallel call allocates one small closure
// for the pool; a single-thread call allocates nothing.
func Gemm(transA, transB bool, M, N, K int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkGemm("Gemm", transA, transB, M, N, K, len(a), lda, len(b), ldb, len(c), ldc)
	if M == 0 || N == 0 {
		return
	}
	if alpha == 0 || K == 0 { // BLAS: A and B are not read
		scaleC(M, N, beta, c, ldc)
		return
	}
	if K == 0 || !useNative() {
		gemmGo(transA, transB, M, N, K, alpha, a, lda, b, nil, ldb, beta, c, ldc)
		return
	}
	gemmNative(transA, transB, M, N, K, alpha, a, lda, ptr(b), bkF32, false, ldb, beta, c, ldc)
}

// GemmBF16 is Gemm with B given as bf16 bit patterns (weights); A and C stay
// f32. mode chooses exact widening or the bf16 dot-product path.
func GemmBF16(mode BF16Mode, transA, transB bool, M, N, K int, alpha float32, a []float32, lda int, b []uint16, ldb int, beta float32, c []float32, ldc int) {
	checkGemm("GemmBF16", transA, transB, M, N, K, len(a), lda, len(b), ldb, len(c), ldc)
	if M == 0 || N == 0 {
		return
	}
	if alpha == 0 || K == 0 {
		scaleC(M, N, beta, c, ldc)
		return
	}
	if K == 0 || !useNative() {
		gemmGo(transA, transB, M, N, K, alpha, a, lda, nil, b, ldb, beta, c, ldc)
		return
	}
	kind := bkBF16
	if mode == BF16Dot && level >= LevelAVX512BF16 {
		kind = bkBF16Dot
	}
	gemmNative(transA, transB, M, N, K, alpha, a, lda, ptr(b), kind, false, ldb, beta, c, ldc)
}

// gemmNative splits C into column (or row) stripes, one per thread, and runs
// the C driver on each. Columns are split in whole NR panels so that each
// thread packs disjoint parts of B.
func gemmNative(transA, transB bool, M, N, K int, alpha float32, a []float32, lda int,
	b unsafe.Pointer, kind int, packed bool, ldb int, beta float32, c []float32, ldc int) {
	threads := Threads()
	if M*N*K < minParallelFlops || threads == 1 {
		nativeGemm(transA, transB, M, N, K, alpha, a, lda, b, kind, packed, ldb, beta, c, ldc)
		return
	}
	panels := (N + nr - 1) / nr
	if (panels >= 2*threads && N >= M) || M < 2*threads*12 {
		// Column stripes: whole panels per thread.
		parts := min(threads, panels)
		parallel(parts, func(p int) {
			j0 := panels * p / parts * nr
			j1 := min(N, panels*(p+1)/parts*nr)
			if j0 >= j1 {
				return
			}
			var bs unsafe.Pointer
			esz := 4
			if kind != bkF32 {
				esz = 2
			}
			switch {
			case packed && kind == bkBF16Dot:
				bs = unsafe.Add(b, esz*(j0/nr)*((K+1)/2)*nr*2)
			case packed:
				bs = unsafe.Add(b, esz*(j0/nr)*K*nr)
			case transB:
				bs = unsafe.Add(b, esz*j0*ldb)
			default:
				bs = unsafe.Add(b, esz*j0)
			}
			nativeGemm(transA, transB, M, j1-j0, K, alpha, a, lda, bs, kind, packed, ldb, beta, c[j0:], ldc)
		})
		return
	}
	// Row stripes: each thread its own rows of A and C.
	parts := threads
	parallel(parts, func(p int) {
		i0, i1 := M*p/parts, M*(p+1)/parts
		if i0 >= i1 {
			return
		}
		var as []float32
		if transA {
			as = a[i0:] // A is K x M: the stripe starts at column i0
		} else {
			as = a[i0*lda:]
		}
		nativeGemm(transA, transB, i1-i0, N, K, alpha, as, lda, b, kind, packed, ldb, beta, c[i0*ldc:], ldc)
	})
}

// need returns the minimum slice length for a rows x cols matrix with row
// stride ld, or MaxInt if that overflows (so any length check fails).
func need(rows, cols, ld int) int {
	if rows <= 0 || cols <= 0 {
		return 0
	}
	if ld < 0 || (rows > 1 && ld > (math.MaxInt-cols)/(rows-1)) {
		return math.MaxInt
	}
	return (rows-1)*ld + cols
}

// scaleC sets C (M x N, row stride ldc) = beta*C, writing zeros when beta
// is 0 (so NaNs in C do not survive): the whole GEMM when alpha == 0 or K == 0.
func scaleC(M, N int, beta float32, c []float32, ldc int) {
	for i := 0; i < M; i++ {
		row := c[i*ldc : i*ldc+N]
		switch beta {
		case 0:
			clear(row)
		case 1:
		default:
			for j := range row {
				row[j] *= beta
			}
		}
	}
}

func checkGemm(op string, transA, transB bool, M, N, K, la, lda, lb, ldb, lc, ldc int) {
	ar, ac := M, K
	if transA {
		ar, ac = K, M
	}
	br, bc := K, N
	if transB {
		br, bc = N, K
	}
	if M < 0 || N < 0 || K < 0 || (ar > 0 && lda < ac) || (br > 0 && ldb < bc) || (M > 0 && ldc < N) ||
		la < need(ar, ac, lda) || lb < need(br, bc, ldb) || lc < need(M, N, ldc) {
		panic(fmt.Sprintf("kernel.%s: bad shapes M=%d N=%d K=%d transA=%v transB=%v len(a)=%d lda=%d len(b)=%d ldb=%d len(c)=%d ldc=%d",
			op, M, N, K, transA, transB, la, lda, lb, ldb, lc, ldc))
	}
}
