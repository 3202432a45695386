package cuda

import (
	"errors"
	"fmt"
)

// ErrUnavailable is wrapped by every error that means "no usable GPU here":
// the driver library is missing, no device is present, or the binary was
// built without cgo. Callers fall back to the CPU backend on it.
var ErrUnavailable = errors.New("cuda: no usable GPU")

// DevPtr is a device address (CUdeviceptr).
type DevPtr uint64

// Add returns p advanced by n bytes.
func (p DevPtr) Add(n int64) DevPtr { return p + DevPtr(n) }

// DataType names an element type for cuBLAS (cudaDataType).
type DataType int

// Element types cuBLAS is asked about.
const (
	F32  DataType = 0  // CUDA_R_32F
	F16  DataType = 2  // CUDA_R_16F
	BF16 DataType = 14 // CUDA_R_16BF
)

// String returns the type's short name: "f32", "f16" or "bf16".
func (t DataType) String() string {
	switch t {
	case F32:
		return "f32"
	case F16:
		return "f16"
	case BF16:
		return "bf16"
	}
	return fmt.Sprintf("cudaDataType(%d)", int(t))
}

// Size returns the element size in bytes.
func (t DataType) Size() int {
	if t == F32 {
		return 4
	}
	return 2
}

// Dim3 is a launch grid or block shape; zero fields mean 1.
type Dim3 struct{ X, Y, Z int }

// Error is a failed CUDA, cuBLAS or NVRTC call: the entry point, its
// status code and, when the library has one, the status's name.
type Error struct {
	Call string // e.g. "cuMemAlloc_v2"
	Code int
	Name string // e.g. "CUDA_ERROR_OUT_OF_MEMORY"; may be empty
}

// Error formats the call, status name and code.
func (e *Error) Error() string {
	if e.Name != "" {
		return fmt.Sprintf("cuda: %s: %s (%d)", e.Call, e.Name, e.Code)
	}
	return fmt.Sprintf("cuda: %s: status %d", e.Call, e.Code)
}

// Info describes an opened device.
type Info struct {
	Ordinal      int
	Name         string
	Major, Minor int    // compute capability
	TotalMem     int64  // bytes of device memory
	SMs          int    // multiprocessors
	Driver       int    // driver API version, e.g. 12040
	NVRTC        [2]int // NVRTC major, minor; zero until NVRTC is loaded
	Cublas       int    // cuBLAS version, 0 until Blas is first used
	MaxThreads   int    // threads per block
	SharedOptin  int    // bytes of shared memory per block a kernel may opt in to (Function.SetMaxDynamicShared)
}
