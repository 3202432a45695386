package kernel

import (
	"fmt"
	"math"
)

// GemmRef is the naive twin of Gemm: C = alpha·op(A)·op(B) + beta·C in
// row-major storage, each element a float64 dot product rounded once.
//
//	op(A) (M, K): A stored (M, K) with row stride lda, or (K, M) if transA
//	op(B) (K, N): B stored (K, N) with row stride ldb, or (N, K) if transB
//	C     (M, N) with row stride ldc
//
// BLAS conventions: with beta == 0, C is only written (NaN in C does not
// propagate); with alpha == 0, A and B are not read; K == 0 gives beta·C.
func GemmRef(transA, transB bool, M, N, K int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkGemmRef("GemmRef", transA, transB, M, N, K, len(a), lda, len(b), ldb, len(c), ldc)
	sai, sak, sbk, sbj := gemmRefStrides(transA, transB, lda, ldb)
	for i := 0; i < M; i++ {
		for j := 0; j < N; j++ {
			acc := 0.0
			if alpha != 0 {
				for k := 0; k < K; k++ {
					acc += float64(a[i*sai+k*sak]) * float64(b[k*sbk+j*sbj])
				}
			}
			c[i*ldc+j] = gemmRefOut(alpha, acc, beta, c[i*ldc+j])
		}
	}
}

// GemmBF16Ref is GemmRef with B given as bf16 bit patterns (weights), widened
// exactly to float32; A and C are float32.
func GemmBF16Ref(transA, transB bool, M, N, K int, alpha float32, a []float32, lda int, b []uint16, ldb int, beta float32, c []float32, ldc int) {
	checkGemmRef("GemmBF16Ref", transA, transB, M, N, K, len(a), lda, len(b), ldb, len(c), ldc)
	sai, sak, sbk, sbj := gemmRefStrides(transA, transB, lda, ldb)
	for i := 0; i < M; i++ {
		for j := 0; j < N; j++ {
			acc := 0.0
			if alpha != 0 {
				for k := 0; k < K; k++ {
					bkj := math.Float32frombits(uint32(b[k*sbk+j*sbj]) << 16)
					acc += float64(a[i*sai+k*sak]) * float64(bkj)
				}
			}
			c[i*ldc+j] = gemmRefOut(alpha, acc, beta, c[i*ldc+j])
		}
	}
}

// gemmRefStrides returns the element strides of op(A) (along i, along k) and
// op(B) (along k, along j) in their stored arrays.
func gemmRefStrides(transA, transB bool, lda, ldb int) (sai, sak, sbk, sbj int) {
	sai, sak = lda, 1 // A[i, k] at i·lda + k
	if transA {
		sai, sak = 1, lda // Aᵀ stored (K, M): op(A)[i, k] at k·lda + i
	}
	sbk, sbj = ldb, 1 // B[k, j] at k·ldb + j
	if transB {
		sbk, sbj = 1, ldb // Bᵀ stored (N, K): op(B)[k, j] at j·ldb + k
	}
	return sai, sak, sbk, sbj
}

// gemmRefOut returns alpha·acc + beta·old rounded once; old is not used when
// beta == 0, so NaN there does not propagate.
func gemmRefOut(alpha float32, acc float64, beta, old float32) float32 {
	v := float64(alpha) * acc
	if beta != 0 {
		v += float64(beta) * float64(old)
	}
	return float32(v)
}

// checkGemmRef panics unless every operand holds its (rows, cols, stride) matrix.
func checkGemmRef(op string, transA, transB bool, M, N, K, la, lda, lb, ldb, lc, ldc int) {
	ar, ac := M, K
	if transA {
		ar, ac = K, M
	}
	br, bc := K, N
	if transB {
		br, bc = N, K
	}
	minLen := func(rows, cols, ld int) int {
		if rows == 0 || cols == 0 {
			return 0
		}
		return (rows-1)*ld + cols
	}
	if M < 0 || N < 0 || K < 0 || (ar > 0 && lda < ac) || (br > 0 && ldb < bc) || (M > 0 && ldc < N) ||
		la < minLen(ar, ac, lda) || lb < minLen(br, bc, ldb) || lc < minLen(M, N, ldc) {
		panic(fmt.Sprintf("kernel.%s: M=%d N=%d K=%d transA=%v transB=%v: have len(a)=%d lda=%d, len(b)=%d ldb=%d, len(c)=%d ldc=%d",
			op, M, N, K, transA, transB, la, lda, lb, ldb, lc, ldc))
	}
}
