//go:build linux && cgo

package cuda

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// LibDirEnv names the environment variable with directories
// (colon-separated) searched for libcuda.so.1, libcublas and libnvrtc
// before the dynamic loader's default search.
const LibDirEnv = "MOESYS_CUDA_LIBDIR"

// Library names tried, in order, in each directory and then bare.
var (
	driverNames = []string{"libcuda.so.1"}
	cublasNames = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so"}
	nvrtcNames  = []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11", "libnvrtc.so"}
)

// lib is a library loaded once per process; a failure is remembered too.
type lib struct {
	once   sync.Once
	path   string // the file that loaded
	err    error
	loaded atomic.Bool // set once path is
}

var (
	driver, cublas, nvrtc lib

	initOnce sync.Once
	initErr  error
)

// open loads the first of names (in LibDirEnv's directories, then by
// the loader's search) that loads with all its symbols.
func (l *lib) open(what string, names []string, load func(*C.char) *C.char) error {
	l.once.Do(func() {
		var cands []string
		for _, dir := range filepath.SplitList(os.Getenv(LibDirEnv)) {
			if dir != "" {
				for _, n := range names {
					cands = append(cands, filepath.Join(dir, n))
				}
			}
		}
		cands = append(cands, names...)
		var msgs []string
		for _, p := range cands {
			cp := C.CString(p)
			msg := load(cp)
			C.free(unsafe.Pointer(cp))
			if msg == nil {
				l.path = p
				l.loaded.Store(true)
				return
			}
			msgs = append(msgs, C.GoString(msg))
			C.free(unsafe.Pointer(msg))
		}
		l.err = &unavailable{msg: what + " not loaded: " + strings.Join(msgs, "; ")}
		if what == "driver" {
			// The common case, no driver at all: say just that.
			l.err = &unavailable{msg: strings.Join(msgs, "; ")}
		}
	})
	return l.err
}

func loadDriver() error {
	return driver.open("driver", driverNames, func(p *C.char) *C.char { return C.ms_load_driver(p) })
}

func loadCublas() error {
	return cublas.open("cuBLAS", cublasNames, func(p *C.char) *C.char { return C.ms_load_cublas(p) })
}

func loadNVRTC() error {
	return nvrtc.open("NVRTC", nvrtcNames, func(p *C.char) *C.char { return C.ms_load_nvrtc(p) })
}

// check converts a shim status into nil or an *Error.
func check(s C.ms_status) error {
	if s.code == 0 {
		return nil
	}
	e := &Error{Call: C.GoString(s.call), Code: int(s.code)}
	switch s.lib {
	case C.MS_LIB_DRIVER:
		if n := C.ms_error_name(s.code); n != nil {
			e.Name = C.GoString(n)
		}
	case C.MS_LIB_CUBLAS:
		e.Name = cublasStatusName(e.Code)
	case C.MS_LIB_NVRTC:
		if n := C.ms_nvrtc_error_string(s.code); n != nil {
			e.Name = C.GoString(n)
		}
	}
	return e
}

// ensureInit loads the driver and runs cuInit once per process. Any
// failure means no usable GPU.
func ensureInit() error {
	if err := loadDriver(); err != nil {
		return err
	}
	initOnce.Do(func() {
		if err := check(C.ms_init()); err != nil {
			initErr = &unavailable{msg: "cuInit failed (driver " + driver.path + ")", err: err}
		}
	})
	return initErr
}

// DeviceCount returns the number of CUDA devices. The error wraps
// ErrUnavailable when the driver cannot be loaded or initialised (which
// includes a machine with no device).
func DeviceCount() (int, error) {
	if err := ensureInit(); err != nil {
		return 0, err
	}
	var n C.int
	if err := check(C.ms_device_count(&n)); err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, &unavailable{msg: "no CUDA device"}
	}
	return int(n), nil
}

// Open loads the driver, initialises it and retains device ordinal's
// primary context. The error wraps ErrUnavailable, and says what is
// missing, when there is no driver or no device.
func Open(ordinal int) (*Device, error) {
	n, err := DeviceCount()
	if err != nil {
		return nil, err
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("cuda: open device %d: have %d devices", ordinal, n)
	}
	var dev C.int
	if err := check(C.ms_device_get(C.int(ordinal), &dev)); err != nil {
		return nil, fmt.Errorf("cuda: open device %d: %w", ordinal, err)
	}
	d := &Device{ordinal: ordinal, dev: int32(dev)}
	if err := d.query(); err != nil {
		return nil, fmt.Errorf("cuda: open device %d: %w", ordinal, err)
	}
	var ctx C.uintptr_t
	if err := check(C.ms_ctx_retain(dev, &ctx)); err != nil {
		return nil, fmt.Errorf("cuda: open device %d (%s): %w", ordinal, d.info.Name, err)
	}
	d.ctx = uintptr(ctx)
	return d, nil
}

// query fills d.info from the driver.
func (d *Device) query() error {
	dev := C.int(d.dev)
	var name [256]C.char
	if err := check(C.ms_device_name(dev, &name[0], C.int(len(name)))); err != nil {
		return err
	}
	var total C.size_t
	if err := check(C.ms_device_total_mem(dev, &total)); err != nil {
		return err
	}
	var ver C.int
	if err := check(C.ms_driver_version(&ver)); err != nil {
		return err
	}
	attrs := []struct {
		attr int
		dst  *int
	}{
		{attrComputeCapabilityMajor, &d.info.Major},
		{attrComputeCapabilityMinor, &d.info.Minor},
		{attrMultiprocessorCount, &d.info.SMs},
		{attrMaxThreadsPerBlock, &d.info.MaxThreads},
		{attrMaxSharedPerBlockOptin, &d.info.SharedOptin},
	}
	for _, a := range attrs {
		var v C.int
		if err := check(C.ms_device_attr(dev, C.int(a.attr), &v)); err != nil {
			return fmt.Errorf("attribute %d: %w", a.attr, err)
		}
		*a.dst = int(v)
	}
	d.info.Ordinal = d.ordinal
	d.info.Name = C.GoString(&name[0])
	d.info.TotalMem = int64(total)
	d.info.Driver = int(ver)
	return nil
}

// Info describes the device. NVRTC is filled once NVRTC has been loaded
// (Build or CompileImage) and Cublas once Blas has been called.
func (d *Device) Info() Info {
	d.mu.Lock()
	info := d.info
	d.mu.Unlock()
	info.NVRTC = nvrtcVersion()
	return info
}

// Close destroys the device's cuBLAS handle, if any, and releases its
// primary context. Memory, streams, events and modules still allocated in
// the context stay valid while another Device holds the same primary
// context; otherwise they are destroyed with it.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("cuda: device already closed")
	}
	d.closed = true
	var errs []error
	if d.blas != nil {
		errs = append(errs, d.blas.destroy())
		d.blas = nil
	}
	errs = append(errs, check(C.ms_ctx_release(C.int(d.dev))))
	return errors.Join(errs...)
}

// Sync waits for all work queued on the device's context (cuCtxSynchronize).
func (d *Device) Sync() error {
	return check(C.ms_ctx_sync(d.cctx()))
}

func (d *Device) cctx() C.uintptr_t { return C.uintptr_t(d.ctx) }

// MemInfo returns the device's free and total memory in bytes.
func (d *Device) MemInfo() (free, total int64, err error) {
	var f, t C.size_t
	if err := check(C.ms_mem_info(d.cctx(), &f, &t)); err != nil {
		return 0, 0, err
	}
	return int64(f), int64(t), nil
}

// Malloc allocates bytes of device memory (cuMemAlloc_v2; 256-byte aligned
// at least). The caller frees it with Free.
func (d *Device) Malloc(bytes int64) (DevPtr, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("cuda: malloc %d bytes: size must be positive", bytes)
	}
	var p C.uint64_t
	if err := check(C.ms_mem_alloc(d.cctx(), &p, C.size_t(bytes))); err != nil {
		return 0, fmt.Errorf("cuda: malloc %d bytes: %w", bytes, err)
	}
	return DevPtr(p), nil
}

// Free frees memory from Malloc.
func (d *Device) Free(p DevPtr) error {
	return check(C.ms_mem_free(d.cctx(), C.uint64_t(p)))
}

// HostAlloc allocates bytes of pinned host memory, usable by every
// context (CU_MEMHOSTALLOC_PORTABLE), for asynchronous copies. The slice
// is over C memory, not the Go heap: it is owned by the caller until
// HostFree, after which it must not be touched.
func (d *Device) HostAlloc(bytes int) ([]byte, error) {
	if bytes <= 0 {
		return nil, fmt.Errorf("cuda: host alloc %d bytes: size must be positive", bytes)
	}
	var p unsafe.Pointer
	if err := check(C.ms_host_alloc(d.cctx(), &p, C.size_t(bytes))); err != nil {
		return nil, fmt.Errorf("cuda: host alloc %d bytes: %w", bytes, err)
	}
	return unsafe.Slice((*byte)(p), bytes), nil
}

// HostFree frees memory from HostAlloc (the whole slice it returned).
func (d *Device) HostFree(b []byte) error {
	if len(b) == 0 {
		return errors.New("cuda: host free: empty slice")
	}
	return check(C.ms_host_free(d.cctx(), unsafe.Pointer(unsafe.SliceData(b))))
}

// HostRegister pins existing host memory, such as an mmap'd region, for
// every context (cuMemHostRegister_v2, CU_MEMHOSTREGISTER_PORTABLE) so
// copies from it run asynchronously. b must stay allocated until
// HostUnregister; Go heap memory is best not registered.
func (d *Device) HostRegister(b []byte) error {
	if len(b) == 0 {
		return errors.New("cuda: host register: empty slice")
	}
	if err := check(C.ms_host_register(d.cctx(), unsafe.Pointer(unsafe.SliceData(b)), C.size_t(len(b)))); err != nil {
		return fmt.Errorf("cuda: host register %d bytes: %w", len(b), err)
	}
	return nil
}

// HostUnregister unpins memory pinned by HostRegister (the same slice).
func (d *Device) HostUnregister(b []byte) error {
	if len(b) == 0 {
		return errors.New("cuda: host unregister: empty slice")
	}
	return check(C.ms_host_unregister(d.cctx(), unsafe.Pointer(unsafe.SliceData(b))))
}

// Driver status codes the package acts on (CUresult).
const (
	errNoDevice = 100 // CUDA_ERROR_NO_DEVICE
	errNotReady = 600 // CUDA_ERROR_NOT_READY
)

// Flags and attributes (values from the CUDA driver API).
const (
	eventDisableTiming          = 2  // CU_EVENT_DISABLE_TIMING
	attrMaxThreadsPerBlock      = 1  // CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK
	attrMultiprocessorCount     = 16 // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
	attrComputeCapabilityMajor  = 75 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
	attrComputeCapabilityMinor  = 76 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
	attrMaxSharedPerBlockOptin  = 97 // CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
	funcAttrMaxDynamicSharedMem = 8  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
	nvrtcErrorInvalidOption     = 5  // NVRTC_ERROR_INVALID_OPTION
)
