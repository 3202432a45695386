//go:build linux && cgo

package cuda

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
)

// Blas returns the device's cuBLAS handle, creating it (and loading
// cuBLAS) on first use. It is destroyed by Close on the Blas or the
// Device. The error wraps ErrUnavailable if cuBLAS cannot be loaded.
func (d *Device) Blas() (*Blas, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, errors.New("cuda: blas: device closed")
	}
	if d.blas != nil {
		return d.blas, nil
	}
	if err := loadCublas(); err != nil {
		return nil, err
	}
	var h C.uintptr_t
	if err := check(C.ms_cublas_create(d.cctx(), &h)); err != nil {
		return nil, err
	}
	b := &Blas{d: d, h: uintptr(h)}
	var v C.int
	if err := check(C.ms_cublas_version(d.cctx(), C.uintptr_t(h), &v)); err != nil {
		return nil, errors.Join(err, b.destroy())
	}
	d.info.Cublas = int(v)
	d.blas = b
	return b, nil
}

// destroy destroys the handle; the caller holds d.mu.
func (b *Blas) destroy() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.h == 0 {
		return nil
	}
	err := check(C.ms_cublas_destroy(b.d.cctx(), C.uintptr_t(b.h)))
	b.h = 0
	return err
}

// Close destroys the handle; a later Device.Blas creates a new one.
func (b *Blas) Close() error {
	b.d.mu.Lock()
	defer b.d.mu.Unlock()
	if b.d.blas == b {
		b.d.blas = nil
	}
	return b.destroy()
}

func streamHandle(s *Stream) C.uintptr_t {
	if s == nil {
		return 0
	}
	return s.ch()
}

func op(trans bool) C.int {
	if trans {
		return 1 // CUBLAS_OP_T
	}
	return 0 // CUBLAS_OP_N
}

// Gemm queues C = alpha·op(A)·op(B) + beta·C on s (nil: the legacy
// default stream) with cublasGemmEx, in cuBLAS's column-major layout:
// op(A) is m×k, op(B) is k×n, C is m×n; op(X) is X transposed when
// trans is set; lda, ldb, ldc are the stored matrices' column strides in
// elements. Accumulation is in float32 (CUBLAS_COMPUTE_32F); alpha and
// beta are read on the host. A row-major product C = A·B is the
// column-major C' = B'·A': swap the operands and m, n.
func (b *Blas) Gemm(s *Stream, transA, transB bool, m, n, k int, alpha float32, a DevPtr, at DataType, lda int, bm DevPtr, bt DataType, ldb int, beta float32, c DevPtr, ct DataType, ldc int) error {
	if err := checkGemm("gemm", transA, transB, m, n, k, lda, ldb, ldc, 1); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.h == 0 {
		return errors.New("cuda: gemm: blas closed")
	}
	st := C.ms_gemm(b.d.cctx(), C.uintptr_t(b.h), streamHandle(s), op(transA), op(transB),
		C.int(m), C.int(n), C.int(k), C.float(alpha),
		C.uint64_t(a), C.int(at), C.int(lda),
		C.uint64_t(bm), C.int(bt), C.int(ldb), C.float(beta),
		C.uint64_t(c), C.int(ct), C.int(ldc))
	if err := check(st); err != nil {
		return fmt.Errorf("cuda: gemm m=%d n=%d k=%d %v·%v→%v transA=%v transB=%v: %w", m, n, k, at, bt, ct, transA, transB, err)
	}
	return nil
}

// GemmStridedBatched queues batch independent Gemms (see Gemm) with
// cublasGemmStridedBatchedEx: product i reads A at a + i·strideA elements,
// B at bm + i·strideB and writes C at c + i·strideC.
func (b *Blas) GemmStridedBatched(s *Stream, transA, transB bool, m, n, k int, alpha float32, a DevPtr, at DataType, lda int, strideA int64, bm DevPtr, bt DataType, ldb int, strideB int64, beta float32, c DevPtr, ct DataType, ldc int, strideC int64, batch int) error {
	if err := checkGemm("gemm batched", transA, transB, m, n, k, lda, ldb, ldc, batch); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.h == 0 {
		return errors.New("cuda: gemm batched: blas closed")
	}
	st := C.ms_gemm_strided(b.d.cctx(), C.uintptr_t(b.h), streamHandle(s), op(transA), op(transB),
		C.int(m), C.int(n), C.int(k), C.float(alpha),
		C.uint64_t(a), C.int(at), C.int(lda), C.longlong(strideA),
		C.uint64_t(bm), C.int(bt), C.int(ldb), C.longlong(strideB), C.float(beta),
		C.uint64_t(c), C.int(ct), C.int(ldc), C.longlong(strideC), C.int(batch))
	if err := check(st); err != nil {
		return fmt.Errorf("cuda: gemm batched m=%d n=%d k=%d batch=%d %v·%v→%v transA=%v transB=%v: %w", m, n, k, batch, at, bt, ct, transA, transB, err)
	}
	return nil
}
