package kernel

import "math"

// gemmGo is the portable GEMM: C = alpha*op(A)*op(B) + beta*C with B given
// either as f32 (bf == nil) or as bf16 bits (bf != nil). Rows of C are spread
// over the pool. It is the fallback for CPUs without AVX-512 and builds
// without cgo, and handles K == 0.
func gemmGo(transA, transB bool, M, N, K int, alpha float32, a []float32, lda int,
	bf32 []float32, bf []uint16, ldb int, beta float32, c []float32, ldc int) {
	parts := 1
	if M*N*K >= minParallelFlops {
		parts = min(Threads(), M)
	}
	if parts == 1 { // no closure: the single-thread path does not allocate
		for i := 0; i < M; i++ {
			gemmGoRow(transA, transB, i, N, K, alpha, a, lda, bf32, bf, ldb, beta, c[i*ldc:i*ldc+N])
		}
		return
	}
	parallel(parts, func(p int) {
		for i := M * p / parts; i < M*(p+1)/parts; i++ {
			gemmGoRow(transA, transB, i, N, K, alpha, a, lda, bf32, bf, ldb, beta, c[i*ldc:i*ldc+N])
		}
	})
}

// gemmGoRow computes one row i of C.
func gemmGoRow(transA, transB bool, i, N, K int, alpha float32, a []float32, lda int,
	bf32 []float32, bf []uint16, ldb int, beta float32, crow []float32) {
	aik := func(k int) float32 {
		if transA {
			return a[k*lda+i]
		}
		return a[i*lda+k]
	}
	if transB {
		// C[i,j] = dot(A[i,:], B[j,:]): contiguous rows of B.
		for j := range crow {
			var s0, s1, s2, s3 float32
			k := 0
			if bf == nil {
				brow := bf32[j*ldb : j*ldb+K]
				for ; k+4 <= K; k += 4 {
					s0 += aik(k) * brow[k]
					s1 += aik(k+1) * brow[k+1]
					s2 += aik(k+2) * brow[k+2]
					s3 += aik(k+3) * brow[k+3]
				}
				for ; k < K; k++ {
					s0 += aik(k) * brow[k]
				}
			} else {
				brow := bf[j*ldb : j*ldb+K]
				for ; k+4 <= K; k += 4 {
					s0 += aik(k) * bf16f(brow[k])
					s1 += aik(k+1) * bf16f(brow[k+1])
					s2 += aik(k+2) * bf16f(brow[k+2])
					s3 += aik(k+3) * bf16f(brow[k+3])
				}
				for ; k < K; k++ {
					s0 += aik(k) * bf16f(brow[k])
				}
			}
			crow[j] = scaleAdd(alpha*((s0+s1)+(s2+s3)), beta, crow[j])
		}
		return
	}
	// C[i,:] = beta*C[i,:] + sum_k alpha*A[i,k]*B[k,:]: axpy over rows of B.
	if beta == 0 {
		clear(crow)
	} else if beta != 1 {
		for j := range crow {
			crow[j] *= beta
		}
	}
	for k := 0; k < K; k++ {
		s := alpha * aik(k)
		if bf == nil {
			brow := bf32[k*ldb : k*ldb+len(crow)]
			for j, v := range brow {
				crow[j] += s * v
			}
		} else {
			brow := bf[k*ldb : k*ldb+len(crow)]
			for j, v := range brow {
				crow[j] += s * bf16f(v)
			}
		}
	}
}

func scaleAdd(v, beta, old float32) float32 {
	if beta == 0 {
		return v
	}
	return v + beta*old
}

func bf16f(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }
