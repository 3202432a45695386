//go:build cgo

// Package emu runs the CUDA C kernels of package kernels on the CPU, so
// that their numerics are tested on machines without a GPU. Load compiles
// kernels.Source, prefixed by emu.h (which defines the CUDA built-ins for
// C++: each block's threads are fibers switched at barriers and warp
// shuffles, one block at a time), with the system C++ compiler into a
// shared library, and loads it; Device implements kernels.Launcher.
//
// Device memory is host memory from Alloc: each buffer ends at a page
// boundary followed by an inaccessible page, so a kernel reading or
// writing past a buffer's end (beyond its size rounded up to 256 bytes)
// crashes the test instead of passing silently.
//
// Threads run in index order from barrier to barrier, so a missing
// __syncthreads between a shared-memory write and another thread's read
// usually shows: the reader runs before a higher-numbered writer.
//
// It is slow (a launch of 100k threads takes a fraction of a second) and
// meant for small shapes. Launches run synchronously, in call order; the
// stream argument is ignored.
package emu

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/mman.h>

typedef const char* (*emu_launch_fn)(const char*, const char*, void**, unsigned, unsigned, unsigned,
	unsigned, unsigned, unsigned, size_t, char*, size_t);

static const char* emu_call(void* f, const char* name, const char* kinds, void** p, unsigned gx, unsigned gy,
	unsigned gz, unsigned bx, unsigned by, unsigned bz, size_t shared, char* err, size_t errLen) {
	return ((emu_launch_fn)f)(name, kinds, p, gx, gy, gz, bx, by, bz, shared, err, errLen);
}

static void* emu_map(size_t n) {
	void* p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}
static int emu_guard(void* p, size_t n) { return mprotect(p, n, PROT_NONE); }
static int emu_unmap(void* p, size_t n) { return munmap(p, n); }
*/
import "C"

import (
	"fmt"
	"os"
	"sync"
	"unsafe"

	"github.com/moesys/moesys/gpu/cuda"
)

// Device is a loaded emulator library for one activation type.
type Device struct {
	act    cuda.DataType
	lib    unsafe.Pointer
	launch unsafe.Pointer

	mu     sync.Mutex // one launch at a time: the emulator's state is global
	allocs map[cuda.DevPtr]mapping
}

type mapping struct {
	base unsafe.Pointer
	size C.size_t
}

var (
	loadMu sync.Mutex
	loaded = map[cuda.DataType]*Device{}
)

// Load builds (or reuses, from the user cache directory) and loads the
// emulator library for act. The error wraps ErrUnavailable when the
// emulator cannot run here.
func Load(act cuda.DataType) (*Device, error) {
	loadMu.Lock()
	defer loadMu.Unlock()
	if d := loaded[act]; d != nil {
		return d, nil
	}
	path, err := build(act)
	if err != nil {
		return nil, err
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	lib := C.dlopen(cpath, C.RTLD_NOW|C.RTLD_LOCAL)
	if lib == nil {
		return nil, fmt.Errorf("emu: dlopen %s: %s", path, C.GoString(C.dlerror()))
	}
	sym := C.CString("emu_launch")
	defer C.free(unsafe.Pointer(sym))
	f := C.dlsym(lib, sym)
	if f == nil {
		return nil, fmt.Errorf("emu: %s has no emu_launch", path)
	}
	d := &Device{act: act, lib: lib, launch: f, allocs: map[cuda.DevPtr]mapping{}}
	loaded[act] = d
	return d, nil
}

// Act returns the activation type the library was built for.
func (d *Device) Act() cuda.DataType { return d.act }

// Launch runs kernel over grid × block threads and returns when it has
// finished. args are as for cuda.Stream.Launch; their kinds are checked
// against the kernel's parameters.
func (d *Device) Launch(_ *cuda.Stream, kernel string, grid, block cuda.Dim3, sharedBytes int, args ...any) error {
	kinds := make([]byte, len(args))
	vals := (*[1 << 16]uint64)(C.calloc(C.size_t(len(args)+1), 8))[: len(args)+1 : len(args)+1]
	ptrs := (*[1 << 16]unsafe.Pointer)(C.calloc(C.size_t(len(args)+1), C.size_t(unsafe.Sizeof(unsafe.Pointer(nil)))))[: len(args)+1 : len(args)+1]
	defer C.free(unsafe.Pointer(&vals[0]))
	defer C.free(unsafe.Pointer(&ptrs[0]))
	for i, a := range args {
		switch v := a.(type) {
		case cuda.DevPtr:
			kinds[i], vals[i] = 'p', uint64(v)
		case int:
			if v != int(int32(v)) {
				return fmt.Errorf("emu: %s argument %d: int %d overflows 32 bits", kernel, i, v)
			}
			kinds[i], vals[i] = 'i', uint64(uint32(int32(v)))
		case int32:
			kinds[i], vals[i] = 'i', uint64(uint32(v))
		case uint32:
			kinds[i], vals[i] = 'i', uint64(v)
		case int64:
			kinds[i], vals[i] = 'l', uint64(v)
		case uint64:
			kinds[i], vals[i] = 'l', v
		case float32:
			kinds[i], vals[i] = 'f', uint64(*(*uint32)(unsafe.Pointer(&v)))
		default:
			return fmt.Errorf("emu: %s argument %d: unsupported type %T", kernel, i, a)
		}
		ptrs[i] = unsafe.Pointer(&vals[i])
	}
	dim := func(v int) C.unsigned {
		if v == 0 {
			return 1
		}
		return C.unsigned(v)
	}
	for _, v := range []int{grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedBytes} {
		if v < 0 || v > 1<<31-1 {
			return fmt.Errorf("emu: %s: grid %v block %v shared %d: out of range", kernel, grid, block, sharedBytes)
		}
	}
	if grid.Y > 65535 || grid.Z > 65535 || block.X*max(block.Y, 1)*max(block.Z, 1) > 1024 || sharedBytes > 48<<10 {
		return fmt.Errorf("emu: %s: grid %v block %v shared %d bytes: beyond CUDA's limits (grid y, z ≤ 65535, 1024 threads, 48 KiB without opt-in)", kernel, grid, block, sharedBytes)
	}
	cname := C.CString(kernel)
	defer C.free(unsafe.Pointer(cname))
	ckinds := C.CString(string(kinds))
	defer C.free(unsafe.Pointer(ckinds))
	errBuf := (*C.char)(C.calloc(512, 1))
	defer C.free(unsafe.Pointer(errBuf))
	d.mu.Lock()
	defer d.mu.Unlock()
	msg := C.emu_call(d.launch, cname, ckinds, (*unsafe.Pointer)(unsafe.Pointer(&ptrs[0])),
		dim(grid.X), dim(grid.Y), dim(grid.Z), dim(block.X), dim(block.Y), dim(block.Z), C.size_t(sharedBytes), errBuf, 512)
	if msg != nil {
		return fmt.Errorf("emu: %s: %s", kernel, C.GoString(msg))
	}
	return nil
}

// guardPad rounds buffer sizes; the guard page follows the rounded end.
const guardPad = 256

// Alloc returns bytes of emulated device memory (zeroed, 256-byte
// aligned), ending just before an inaccessible page.
func (d *Device) Alloc(bytes int) cuda.DevPtr {
	if bytes < 0 {
		panic(fmt.Sprintf("emu.Alloc: %d bytes", bytes))
	}
	page := os.Getpagesize()
	body := (max(bytes, 1) + guardPad - 1) / guardPad * guardPad
	span := (body+page-1)/page*page + page
	base := C.emu_map(C.size_t(span))
	if base == nil {
		panic(fmt.Sprintf("emu.Alloc: mmap of %d bytes failed", span))
	}
	guard := unsafe.Add(base, span-page)
	if C.emu_guard(guard, C.size_t(page)) != 0 {
		panic("emu.Alloc: mprotect failed")
	}
	p := cuda.DevPtr(uintptr(guard) - uintptr(body))
	d.mu.Lock()
	d.allocs[p] = mapping{base, C.size_t(span)}
	d.mu.Unlock()
	return p
}

// Free releases memory from Alloc.
func (d *Device) Free(p cuda.DevPtr) {
	d.mu.Lock()
	m, ok := d.allocs[p]
	delete(d.allocs, p)
	d.mu.Unlock()
	if !ok {
		panic(fmt.Sprintf("emu.Free: %#x was not allocated", uint64(p)))
	}
	C.emu_unmap(m.base, m.size)
}

// Bytes returns the n bytes at p, inside a buffer from Alloc, as a slice
// (the emulator's device memory is host memory), valid until the buffer
// is freed.
func (d *Device) Bytes(p cuda.DevPtr, n int) []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	for start, m := range d.allocs {
		end := cuda.DevPtr(uintptr(m.base)) + cuda.DevPtr(m.size) - cuda.DevPtr(os.Getpagesize())
		if p >= start && n >= 0 && p+cuda.DevPtr(n) <= end {
			off := uintptr(p) - uintptr(m.base)
			return unsafe.Slice((*byte)(unsafe.Add(m.base, off)), n)
		}
	}
	panic(fmt.Sprintf("emu.Bytes: [%#x, +%d) is not inside an allocation", uint64(p), n))
}
