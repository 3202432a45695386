package cuda

import (
	"fmt"
	"math"
)

// maxLaunchArgs is the most kernel parameters Launch packs: one 8-byte
// slot each (the C shim's MS_MAX_ARGS); 64 slots is far below the
// driver's 4 KiB parameter limit.
const maxLaunchArgs = 64

// packArgs converts Launch's arguments into one 8-byte slot each, the
// value little-endian at the slot's start: the driver reads as many bytes
// as the kernel's parameter has (4 for int, unsigned, float; 8 for
// pointers, long long). int is passed as a 32-bit int and must fit.
func packArgs(args []any) ([]uint64, error) {
	if len(args) > maxLaunchArgs {
		return nil, fmt.Errorf("cuda: launch: %d arguments, at most %d", len(args), maxLaunchArgs)
	}
	slots := make([]uint64, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case DevPtr:
			slots[i] = uint64(v)
		case int:
			if v < math.MinInt32 || v > math.MaxInt32 {
				return nil, fmt.Errorf("cuda: launch argument %d: int %d overflows the kernel's 32-bit int (pass int64)", i, v)
			}
			slots[i] = uint64(uint32(int32(v)))
		case int32:
			slots[i] = uint64(uint32(v))
		case uint32:
			slots[i] = uint64(v)
		case int64:
			slots[i] = uint64(v)
		case uint64:
			slots[i] = v
		case float32:
			slots[i] = uint64(math.Float32bits(v))
		default:
			return nil, fmt.Errorf("cuda: launch argument %d: unsupported type %T (want DevPtr, int, int32, uint32, int64, uint64 or float32)", i, a)
		}
	}
	return slots, nil
}

// dims returns d with zero fields as 1, or an error for a negative or
// oversized field.
func (d Dim3) dims() (x, y, z uint32, err error) {
	f := [3]int{d.X, d.Y, d.Z}
	var out [3]uint32
	for i, v := range f {
		switch {
		case v == 0:
			out[i] = 1
		case v < 0 || v > math.MaxUint32:
			return 0, 0, 0, fmt.Errorf("cuda: dimension %v: field %d out of range", d, i)
		default:
			out[i] = uint32(v)
		}
	}
	return out[0], out[1], out[2], nil
}

// checkGemm checks a column-major GEMM's sizes and leading dimensions the
// way cuBLAS would, so a mistake is reported with the shapes instead of
// as CUBLAS_STATUS_INVALID_VALUE.
func checkGemm(op string, transA, transB bool, m, n, k, lda, ldb, ldc, batch int) error {
	for _, v := range []int{m, n, k, lda, ldb, ldc, batch} {
		if v < 0 || v > math.MaxInt32 {
			return fmt.Errorf("cuda: %s: m=%d n=%d k=%d lda=%d ldb=%d ldc=%d batch=%d: out of int32 range", op, m, n, k, lda, ldb, ldc, batch)
		}
	}
	rowsA, rowsB := m, k // rows of A and B as stored (column-major)
	if transA {
		rowsA = k
	}
	if transB {
		rowsB = n
	}
	switch {
	case lda < max(1, rowsA):
		return fmt.Errorf("cuda: %s: lda=%d < %d rows of A (m=%d n=%d k=%d transA=%v)", op, lda, max(1, rowsA), m, n, k, transA)
	case ldb < max(1, rowsB):
		return fmt.Errorf("cuda: %s: ldb=%d < %d rows of B (m=%d n=%d k=%d transB=%v)", op, ldb, max(1, rowsB), m, n, k, transB)
	case ldc < max(1, m):
		return fmt.Errorf("cuda: %s: ldc=%d < m=%d", op, ldc, m)
	}
	return nil
}

// cublasStatusName names a cublasStatus_t.
func cublasStatusName(code int) string {
	switch code {
	case 0:
		return "CUBLAS_STATUS_SUCCESS"
	case 1:
		return "CUBLAS_STATUS_NOT_INITIALIZED"
	case 3:
		return "CUBLAS_STATUS_ALLOC_FAILED"
	case 7:
		return "CUBLAS_STATUS_INVALID_VALUE"
	case 8:
		return "CUBLAS_STATUS_ARCH_MISMATCH"
	case 11:
		return "CUBLAS_STATUS_MAPPING_ERROR"
	case 13:
		return "CUBLAS_STATUS_EXECUTION_FAILED"
	case 14:
		return "CUBLAS_STATUS_INTERNAL_ERROR"
	case 15:
		return "CUBLAS_STATUS_NOT_SUPPORTED"
	case 16:
		return "CUBLAS_STATUS_LICENSE_ERROR"
	}
	return ""
}

// unavailable is an error meaning "no usable GPU": it wraps ErrUnavailable
// and, when there is one, the failed call's error.
type unavailable struct {
	msg string
	err error // may be nil
}

func (u *unavailable) Error() string {
	if u.err != nil {
		return ErrUnavailable.Error() + ": " + u.msg + ": " + u.err.Error()
	}
	return ErrUnavailable.Error() + ": " + u.msg
}

func (u *unavailable) Unwrap() []error {
	if u.err != nil {
		return []error{ErrUnavailable, u.err}
	}
	return []error{ErrUnavailable}
}

// isELF reports whether image is an ELF file (a CUBIN).
func isELF(image []byte) bool {
	return len(image) >= 4 && string(image[:4]) == "\x7fELF"
}
