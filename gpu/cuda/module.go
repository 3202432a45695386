//go:build linux && cgo

package cuda

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// errNoCUBIN means the loaded NVRTC cannot return a CUBIN (before 11.1).
var errNoCUBIN = errors.New("cuda: NVRTC has no nvrtcGetCUBIN")

// nvrtcVersion returns the loaded NVRTC's version, or zeros if none is
// loaded.
func nvrtcVersion() [2]int {
	if !nvrtc.loaded.Load() {
		return [2]int{}
	}
	var major, minor C.int
	if check(C.ms_nvrtc_version(&major, &minor)) != nil {
		return [2]int{}
	}
	return [2]int{int(major), int(minor)}
}

// CompileImage compiles CUDA C++ src (named name in messages) with NVRTC
// for arch: "sm_90" gives a CUBIN, "compute_90" gives PTX (NUL-terminated).
// "-default-device" and "--std=c++17" are always passed, then opts. The
// log is NVRTC's, also on success (warnings); on a compile error the error
// contains it. It needs NVRTC, not a device, so images can be built ahead
// and cached; the image is for LoadImage.
func CompileImage(src, name, arch string, opts []string) (image []byte, log string, err error) {
	if err := loadNVRTC(); err != nil {
		return nil, "", err
	}
	cubin := strings.HasPrefix(arch, "sm_")
	if !cubin && !strings.HasPrefix(arch, "compute_") {
		return nil, "", fmt.Errorf("cuda: compile %s: arch %q: want sm_XY or compute_XY", name, arch)
	}
	if cubin && C.ms_nvrtc_has_cubin() == 0 {
		return nil, "", fmt.Errorf("cuda: compile %s for %s: %w", name, arch, errNoCUBIN)
	}
	all := append([]string{"--gpu-arch=" + arch, "-default-device", "--std=c++17"}, opts...)

	// The options as a C array of C strings, freed on return.
	copts := (**C.char)(C.malloc(C.size_t(len(all)) * C.size_t(unsafe.Sizeof((*C.char)(nil)))))
	defer C.free(unsafe.Pointer(copts))
	optv := unsafe.Slice(copts, len(all))
	for i, o := range all {
		optv[i] = C.CString(o)
	}
	defer func() {
		for _, p := range optv {
			C.free(unsafe.Pointer(p))
		}
	}()
	csrc, cname := C.CString(src), C.CString(name)
	defer C.free(unsafe.Pointer(csrc))
	defer C.free(unsafe.Pointer(cname))

	var clog, cimg *C.char
	var loglen, imglen C.size_t
	cb := C.int(0)
	if cubin {
		cb = 1
	}
	st := C.ms_nvrtc_compile(csrc, cname, C.int(len(all)), copts, cb, &clog, &loglen, &cimg, &imglen)
	if clog != nil {
		log = C.GoStringN(clog, C.int(loglen))
		C.free(unsafe.Pointer(clog))
	}
	if cimg != nil {
		image = C.GoBytes(unsafe.Pointer(cimg), C.int(imglen))
		C.free(unsafe.Pointer(cimg))
	}
	if err := check(st); err != nil {
		msg := strings.TrimSpace(log)
		if msg == "" {
			return nil, log, fmt.Errorf("cuda: compile %s for %s: %w", name, arch, err)
		}
		return nil, log, fmt.Errorf("cuda: compile %s for %s: %w\n%s", name, arch, err, msg)
	}
	return image, log, nil
}

// Build compiles src with NVRTC for this device and loads it: a CUBIN for
// sm_XY (the device's compute capability), or PTX for compute_XY, which
// the driver compiles, when this NVRTC rejects the arch or cannot return
// CUBINs. It returns the module and the compile log; on a compile error
// the error contains the log. opts must not set the arch (use CompileImage
// and LoadImage for that).
func (d *Device) Build(src, name string, opts []string) (*Module, string, error) {
	sm := fmt.Sprintf("sm_%d%d", d.info.Major, d.info.Minor)
	image, log, err := CompileImage(src, name, sm, opts)
	var ce *Error
	if errors.Is(err, errNoCUBIN) || (errors.As(err, &ce) && ce.Code == nvrtcErrorInvalidOption && ce.Call == "nvrtcCompileProgram") {
		image, log, err = CompileImage(src, name, fmt.Sprintf("compute_%d%d", d.info.Major, d.info.Minor), opts)
	}
	if err != nil {
		return nil, log, err
	}
	m, err := d.LoadImage(image)
	if err != nil {
		return nil, log, fmt.Errorf("cuda: build %s: %w", name, err)
	}
	return m, log, nil
}

// LoadImage loads a CUBIN, PTX or fatbin image into the device's context
// (cuModuleLoadData). PTX without a trailing NUL gets one.
func (d *Device) LoadImage(image []byte) (*Module, error) {
	if len(image) == 0 {
		return nil, errors.New("cuda: load module: empty image")
	}
	if !isELF(image) && image[len(image)-1] != 0 {
		image = append(image[:len(image):len(image)], 0)
	}
	var h C.uintptr_t
	if err := check(C.ms_module_load(d.cctx(), unsafe.Pointer(unsafe.SliceData(image)), &h)); err != nil {
		return nil, fmt.Errorf("cuda: load module (%d bytes): %w", len(image), err)
	}
	return &Module{d: d, h: uintptr(h)}, nil
}

// Function returns the kernel called name (an extern "C" name, or the
// mangled one).
func (m *Module) Function(name string) (*Function, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var h C.uintptr_t
	if err := check(C.ms_module_function(m.d.cctx(), C.uintptr_t(m.h), cname, &h)); err != nil {
		return nil, fmt.Errorf("cuda: kernel %s: %w", name, err)
	}
	return &Function{m: m, h: uintptr(h), name: name}, nil
}

// Close unloads the module; its Functions become invalid.
func (m *Module) Close() error {
	return check(C.ms_module_unload(m.d.cctx(), C.uintptr_t(m.h)))
}

// SetMaxDynamicShared lets the kernel be launched with up to bytes of
// dynamic shared memory (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES);
// needed above 48 KiB, up to Info.SharedOptin.
func (f *Function) SetMaxDynamicShared(bytes int) error {
	if bytes < 0 || bytes > 1<<31-1 {
		return fmt.Errorf("cuda: kernel %s: dynamic shared memory %d bytes out of range", f.name, bytes)
	}
	if err := check(C.ms_func_set_attr(f.m.d.cctx(), C.uintptr_t(f.h), funcAttrMaxDynamicSharedMem, C.int(bytes))); err != nil {
		return fmt.Errorf("cuda: kernel %s: set max dynamic shared memory %d: %w", f.name, bytes, err)
	}
	return nil
}
