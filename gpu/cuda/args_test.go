package cuda

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestPackArgs(t *testing.T) {
	tests := []struct {
		name string
		arg  any
		want uint64
	}{
		{"DevPtr", DevPtr(0x7f0012345600), 0x7f0012345600},
		{"int", 7, 7},
		{"negative int as 32 bits", -5, 0xfffffffb},
		{"int max int32", math.MaxInt32, 0x7fffffff},
		{"int min int32", math.MinInt32, 0x80000000},
		{"int32", int32(-1), 0xffffffff},
		{"uint32", uint32(0xdeadbeef), 0xdeadbeef},
		{"int64", int64(-1 << 40), 0xffffff0000000000},
		{"uint64", uint64(1<<63 + 5), 1<<63 + 5},
		{"float32", float32(1.25), uint64(math.Float32bits(1.25))},
		{"float32 negative zero", float32(math.Copysign(0, -1)), 0x80000000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := packArgs([]any{tt.arg})
			if err != nil {
				t.Fatal(err)
			}
			if got[0] != tt.want {
				t.Errorf("packArgs(%T %v) = %#x, want %#x", tt.arg, tt.arg, got[0], tt.want)
			}
		})
	}
}

func TestPackArgsRejects(t *testing.T) {
	tests := []struct {
		name string
		args []any
		want string // in the error
	}{
		{"float64", []any{DevPtr(1), 2.5}, "argument 1: unsupported type float64"},
		{"uintptr", []any{uintptr(1)}, "argument 0: unsupported type uintptr"},
		{"Go slice", []any{1, 2, []float32{1}}, "argument 2: unsupported type []float32"},
		{"nil", []any{nil}, "argument 0: unsupported type <nil>"},
		{"int16", []any{int16(1)}, "argument 0: unsupported type int16"},
		{"int overflow", []any{math.MaxInt32 + 1}, "argument 0: int 2147483648 overflows"},
		{"int underflow", []any{DevPtr(0), math.MinInt32 - 1}, "argument 1: int -2147483649 overflows"},
		{"too many", make([]any, maxLaunchArgs+1), "65 arguments, at most 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := packArgs(tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("packArgs: error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestDim3(t *testing.T) {
	tests := []struct {
		d       Dim3
		x, y, z uint32
		bad     bool
	}{
		{Dim3{}, 1, 1, 1, false},
		{Dim3{X: 256}, 256, 1, 1, false},
		{Dim3{3, 4, 5}, 3, 4, 5, false},
		{Dim3{X: -1}, 0, 0, 0, true},
		{Dim3{Z: math.MaxUint32 + 1}, 0, 0, 0, true},
	}
	for _, tt := range tests {
		x, y, z, err := tt.d.dims()
		if (err != nil) != tt.bad || x != tt.x || y != tt.y || z != tt.z {
			t.Errorf("%v.dims() = %d, %d, %d, %v; want %d, %d, %d, error %v", tt.d, x, y, z, err, tt.x, tt.y, tt.z, tt.bad)
		}
	}
}

func TestCheckGemm(t *testing.T) {
	tests := []struct {
		name                       string
		ta, tb                     bool
		m, n, k, lda, ldb, ldc, bt int
		want                       string // "" for valid
	}{
		{"NN", false, false, 4, 3, 2, 4, 2, 4, 1, ""},
		{"TN", true, false, 4, 3, 2, 2, 2, 4, 1, ""},
		{"NT", false, true, 4, 3, 2, 4, 3, 4, 1, ""},
		{"padded", false, false, 4, 3, 2, 8, 8, 8, 1, ""},
		{"empty", false, false, 0, 0, 0, 1, 1, 1, 0, ""},
		{"lda too small", false, false, 4, 3, 2, 3, 2, 4, 1, "lda=3 < 4 rows of A"},
		{"lda for transposed A", true, false, 4, 3, 2, 1, 2, 4, 1, "lda=1 < 2 rows of A"},
		{"ldb too small", false, true, 4, 3, 2, 4, 2, 4, 1, "ldb=2 < 3 rows of B"},
		{"ldc too small", false, false, 4, 3, 2, 4, 2, 3, 1, "ldc=3 < m=4"},
		{"zero ld", false, false, 0, 0, 0, 0, 1, 1, 1, "lda=0 < 1"},
		{"negative", false, false, -1, 3, 2, 4, 2, 4, 1, "out of int32 range"},
		{"huge", false, false, 1 << 31, 1, 1, 1 << 31, 1, 1 << 31, 1, "out of int32 range"},
		{"negative batch", false, false, 1, 1, 1, 1, 1, 1, -1, "out of int32 range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkGemm("gemm", tt.ta, tt.tb, tt.m, tt.n, tt.k, tt.lda, tt.ldb, tt.ldc, tt.bt)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestDataType(t *testing.T) {
	tests := []struct {
		t    DataType
		s    string
		size int
	}{
		{F32, "f32", 4}, {F16, "f16", 2}, {BF16, "bf16", 2},
	}
	for _, tt := range tests {
		if tt.t.String() != tt.s || tt.t.Size() != tt.size {
			t.Errorf("%d: String %q Size %d, want %q %d", int(tt.t), tt.t.String(), tt.t.Size(), tt.s, tt.size)
		}
	}
	if got := DataType(99).String(); got != "cudaDataType(99)" {
		t.Errorf("DataType(99).String() = %q", got)
	}
	// The values are cudaDataType's, passed to cuBLAS as they are.
	if F32 != 0 || F16 != 2 || BF16 != 14 {
		t.Errorf("cudaDataType values: F32 %d F16 %d BF16 %d, want 0 2 14", F32, F16, BF16)
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{Call: "cuMemAlloc_v2", Code: 2, Name: "CUDA_ERROR_OUT_OF_MEMORY"}
	if got, want := e.Error(), "cuda: cuMemAlloc_v2: CUDA_ERROR_OUT_OF_MEMORY (2)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e = &Error{Call: "cublasGemmEx", Code: 99}
	if got, want := e.Error(), "cuda: cublasGemmEx: status 99"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if got := cublasStatusName(7); got != "CUBLAS_STATUS_INVALID_VALUE" {
		t.Errorf("cublasStatusName(7) = %q", got)
	}
	if got := cublasStatusName(12345); got != "" {
		t.Errorf("cublasStatusName(12345) = %q, want empty", got)
	}
}

func TestUnavailableWraps(t *testing.T) {
	inner := &Error{Call: "cuInit", Code: 100, Name: "CUDA_ERROR_NO_DEVICE"}
	err := error(&unavailable{msg: "cuInit failed", err: inner})
	if !errors.Is(err, ErrUnavailable) {
		t.Error("not ErrUnavailable")
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.Code != 100 {
		t.Errorf("errors.As *Error: %v", ce)
	}
	if got, want := err.Error(), "cuda: no usable GPU: cuInit failed: cuda: cuInit: CUDA_ERROR_NO_DEVICE (100)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// On a machine without a driver (this package's CI), Open and DeviceCount
// fail with ErrUnavailable and say what is missing.
func TestOpenUnavailable(t *testing.T) {
	d, err := Open(0)
	if err == nil {
		d.Close()
		t.Skip("a GPU is present")
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Skipf("Open(0) failed for another reason: %v", err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "cuda: no usable GPU: ") {
		t.Errorf("message %q lacks the ErrUnavailable prefix", msg)
	}
	known := []string{"libcuda.so.1", "cuInit", "no CUDA device", "built without cgo"}
	found := false
	for _, k := range known {
		found = found || strings.Contains(msg, k)
	}
	if !found {
		t.Errorf("message %q names none of %q", msg, known)
	}
	n, err2 := DeviceCount()
	if n != 0 || !errors.Is(err2, ErrUnavailable) || err2.Error() != msg {
		t.Errorf("DeviceCount() = %d, %v; want 0 and Open's error %q", n, err2, msg)
	}
	t.Logf("Open(0): %v", err)
}
