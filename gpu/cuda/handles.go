//go:build linux && cgo

package cuda

import "sync"

// Device is an opened GPU: its primary context, retained by Open and
// released by Close. Its methods may be called from any goroutine.
type Device struct {
	ordinal int
	dev     int32   // CUdevice
	ctx     uintptr // CUcontext (the primary context)
	info    Info

	mu     sync.Mutex // guards blas and closed
	blas   *Blas
	closed bool
}

// Stream is a CUDA stream (created non-blocking: it does not synchronise
// with the legacy default stream). Work queued on one stream runs in
// order; Sync waits for it.
type Stream struct {
	d *Device
	h uintptr // CUstream
}

// Event marks a point in a stream: other streams can wait for it and the
// host can poll or wait for it; two timing events measure GPU time.
type Event struct {
	d      *Device
	h      uintptr // CUevent
	timing bool
}

// Module is loaded device code (a CUBIN or PTX image).
type Module struct {
	d *Device
	h uintptr // CUmodule
}

// Function is a kernel of a Module, valid until the Module is closed.
type Function struct {
	m    *Module
	h    uintptr // CUfunction
	name string
}

// Name returns the kernel's name as given to Module.Function.
func (f *Function) Name() string { return f.name }

// Blas is a device's cuBLAS handle. Calls are serialised by a mutex, so
// one Blas may be shared by goroutines queueing work on different streams.
type Blas struct {
	d  *Device
	h  uintptr // cublasHandle_t
	mu sync.Mutex
}

// Ordinal returns the device's index as given to Open.
func (d *Device) Ordinal() int { return d.ordinal }
