//go:build !(linux && cgo)

package cuda

import "time"

// errStub is every call's error in a build without cgo (or not on Linux).
var errStub = &unavailable{msg: "built without cgo (or not for linux): no CUDA binding"}

// LibDirEnv names the environment variable with directories searched for
// the CUDA libraries; unused in this build.
const LibDirEnv = "MOESYS_CUDA_LIBDIR"

// DeviceCount returns an error wrapping ErrUnavailable in this build.
func DeviceCount() (int, error) { return 0, errStub }

// Open returns an error wrapping ErrUnavailable in this build.
func Open(ordinal int) (*Device, error) { return nil, errStub }

// CompileImage returns an error wrapping ErrUnavailable in this build.
func CompileImage(src, name, arch string, opts []string) ([]byte, string, error) {
	return nil, "", errStub
}

// Elapsed returns an error wrapping ErrUnavailable in this build.
func Elapsed(start, end *Event) (time.Duration, error) { return 0, errStub }

// Device is an opened GPU; this build never opens one.
type Device struct{}

// Stream is a CUDA stream; this build has none.
type Stream struct{}

// Event marks a point in a stream; this build has none.
type Event struct{}

// Module is loaded device code; this build has none.
type Module struct{}

// Function is a kernel of a Module; this build has none.
type Function struct{}

// Blas is a device's cuBLAS handle; this build has none.
type Blas struct{}

// The methods below cannot be reached (Open never returns a Device) but
// keep the API identical across builds.

// Ordinal returns 0 in this build.
func (d *Device) Ordinal() int { return 0 }

// Name returns "" in this build.
func (f *Function) Name() string { return "" }

// Info returns the zero Info in this build.
func (d *Device) Info() Info { return Info{} }

// Close returns an error wrapping ErrUnavailable in this build.
func (d *Device) Close() error { return errStub }

// Sync returns an error wrapping ErrUnavailable in this build.
func (d *Device) Sync() error { return errStub }

// MemInfo returns an error wrapping ErrUnavailable in this build.
func (d *Device) MemInfo() (free, total int64, err error) { return 0, 0, errStub }

// Malloc returns an error wrapping ErrUnavailable in this build.
func (d *Device) Malloc(bytes int64) (DevPtr, error) { return 0, errStub }

// Free returns an error wrapping ErrUnavailable in this build.
func (d *Device) Free(p DevPtr) error { return errStub }

// HostAlloc returns an error wrapping ErrUnavailable in this build.
func (d *Device) HostAlloc(bytes int) ([]byte, error) { return nil, errStub }

// HostFree returns an error wrapping ErrUnavailable in this build.
func (d *Device) HostFree(b []byte) error { return errStub }

// HostRegister returns an error wrapping ErrUnavailable in this build.
func (d *Device) HostRegister(b []byte) error { return errStub }

// HostUnregister returns an error wrapping ErrUnavailable in this build.
func (d *Device) HostUnregister(b []byte) error { return errStub }

// NewStream returns an error wrapping ErrUnavailable in this build.
func (d *Device) NewStream() (*Stream, error) { return nil, errStub }

// NewEvent returns an error wrapping ErrUnavailable in this build.
func (d *Device) NewEvent(timing bool) (*Event, error) { return nil, errStub }

// Build returns an error wrapping ErrUnavailable in this build.
func (d *Device) Build(src, name string, opts []string) (*Module, string, error) {
	return nil, "", errStub
}

// LoadImage returns an error wrapping ErrUnavailable in this build.
func (d *Device) LoadImage(image []byte) (*Module, error) { return nil, errStub }

// Blas returns an error wrapping ErrUnavailable in this build.
func (d *Device) Blas() (*Blas, error) { return nil, errStub }

// Close returns an error wrapping ErrUnavailable in this build.
func (s *Stream) Close() error { return errStub }

// Sync returns an error wrapping ErrUnavailable in this build.
func (s *Stream) Sync() error { return errStub }

// CopyHtoD returns an error wrapping ErrUnavailable in this build.
func (s *Stream) CopyHtoD(dst DevPtr, src []byte) error { return errStub }

// CopyDtoH returns an error wrapping ErrUnavailable in this build.
func (s *Stream) CopyDtoH(dst []byte, src DevPtr) error { return errStub }

// CopyDtoD returns an error wrapping ErrUnavailable in this build.
func (s *Stream) CopyDtoD(dst, src DevPtr, bytes int64) error { return errStub }

// Memset returns an error wrapping ErrUnavailable in this build.
func (s *Stream) Memset(dst DevPtr, bytes int64, value byte) error { return errStub }

// Wait returns an error wrapping ErrUnavailable in this build.
func (s *Stream) Wait(e *Event) error { return errStub }

// Launch returns an error wrapping ErrUnavailable in this build.
func (s *Stream) Launch(f *Function, grid, block Dim3, sharedBytes int, args ...any) error {
	return errStub
}

// Record returns an error wrapping ErrUnavailable in this build.
func (e *Event) Record(s *Stream) error { return errStub }

// Sync returns an error wrapping ErrUnavailable in this build.
func (e *Event) Sync() error { return errStub }

// Done returns an error wrapping ErrUnavailable in this build.
func (e *Event) Done() (bool, error) { return false, errStub }

// Close returns an error wrapping ErrUnavailable in this build.
func (e *Event) Close() error { return errStub }

// Function returns an error wrapping ErrUnavailable in this build.
func (m *Module) Function(name string) (*Function, error) { return nil, errStub }

// Close returns an error wrapping ErrUnavailable in this build.
func (m *Module) Close() error { return errStub }

// SetMaxDynamicShared returns an error wrapping ErrUnavailable in this build.
func (f *Function) SetMaxDynamicShared(bytes int) error { return errStub }

// Gemm returns an error wrapping ErrUnavailable in this build.
func (b *Blas) Gemm(s *Stream, transA, transB bool, m, n, k int, alpha float32, a DevPtr, at DataType, lda int, bm DevPtr, bt DataType, ldb int, beta float32, c DevPtr, ct DataType, ldc int) error {
	return errStub
}

// GemmStridedBatched returns an error wrapping ErrUnavailable in this build.
func (b *Blas) GemmStridedBatched(s *Stream, transA, transB bool, m, n, k int, alpha float32, a DevPtr, at DataType, lda int, strideA int64, bm DevPtr, bt DataType, ldb int, strideB int64, beta float32, c DevPtr, ct DataType, ldc int, strideC int64, batch int) error {
	return errStub
}

// Close returns an error wrapping ErrUnavailable in this build.
func (b *Blas) Close() error { return errStub }
