//go:build linux && cgo

package cuda

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"time"
	"unsafe"
)

// NewStream creates a stream that does not synchronise with the legacy
// default stream (CU_STREAM_NON_BLOCKING). The caller closes it.
func (d *Device) NewStream() (*Stream, error) {
	var h C.uintptr_t
	if err := check(C.ms_stream_create(d.cctx(), &h)); err != nil {
		return nil, err
	}
	return &Stream{d: d, h: uintptr(h)}, nil
}

func (s *Stream) ch() C.uintptr_t { return C.uintptr_t(s.h) }

// Close destroys the stream; work already queued on it still completes.
func (s *Stream) Close() error {
	return check(C.ms_stream_destroy(s.d.cctx(), s.ch()))
}

// Sync waits until all work queued on the stream has completed.
func (s *Stream) Sync() error {
	return check(C.ms_stream_sync(s.d.cctx(), s.ch()))
}

// CopyHtoD queues a copy of src to device memory at dst. src must stay
// unchanged until the stream has passed the copy; it is asynchronous only
// when src is pinned (HostAlloc, HostRegister).
func (s *Stream) CopyHtoD(dst DevPtr, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	if err := check(C.ms_copy_htod(s.d.cctx(), s.ch(), C.uint64_t(dst), unsafe.Pointer(unsafe.SliceData(src)), C.size_t(len(src)))); err != nil {
		return fmt.Errorf("cuda: copy %d bytes to device: %w", len(src), err)
	}
	return nil
}

// CopyDtoH queues a copy of len(dst) bytes at src into dst. dst may be
// read once the stream has passed the copy (Sync, or an Event recorded
// after it); for pageable dst the driver completes the copy before
// returning.
func (s *Stream) CopyDtoH(dst []byte, src DevPtr) error {
	if len(dst) == 0 {
		return nil
	}
	if err := check(C.ms_copy_dtoh(s.d.cctx(), s.ch(), unsafe.Pointer(unsafe.SliceData(dst)), C.uint64_t(src), C.size_t(len(dst)))); err != nil {
		return fmt.Errorf("cuda: copy %d bytes from device: %w", len(dst), err)
	}
	return nil
}

// CopyDtoD queues a copy of bytes from src to dst in device memory.
func (s *Stream) CopyDtoD(dst, src DevPtr, bytes int64) error {
	if bytes < 0 {
		return fmt.Errorf("cuda: copy %d bytes on device: negative size", bytes)
	}
	if bytes == 0 {
		return nil
	}
	if err := check(C.ms_copy_dtod(s.d.cctx(), s.ch(), C.uint64_t(dst), C.uint64_t(src), C.size_t(bytes))); err != nil {
		return fmt.Errorf("cuda: copy %d bytes on device: %w", bytes, err)
	}
	return nil
}

// Memset queues setting bytes bytes at dst to value.
func (s *Stream) Memset(dst DevPtr, bytes int64, value byte) error {
	if bytes < 0 {
		return fmt.Errorf("cuda: memset %d bytes: negative size", bytes)
	}
	if bytes == 0 {
		return nil
	}
	return check(C.ms_memset8(s.d.cctx(), s.ch(), C.uint64_t(dst), C.uchar(value), C.size_t(bytes)))
}

// Wait makes work queued on s after this call wait for e's last Record.
func (s *Stream) Wait(e *Event) error {
	return check(C.ms_stream_wait(s.d.cctx(), s.ch(), e.ch()))
}

// Launch queues kernel f on grid × block threads with sharedBytes of
// dynamic shared memory. args are the kernel's parameters in order: DevPtr
// (a pointer parameter), int (passed as a 32-bit int; an error if it does
// not fit), int32, uint32, int64, uint64 or float32; any other type is an
// error naming the argument. The arguments must match the kernel's
// parameters in number and size: the driver reads as many as the kernel
// declares and cannot check.
func (s *Stream) Launch(f *Function, grid, block Dim3, sharedBytes int, args ...any) error {
	slots, err := packArgs(args)
	if err != nil {
		return fmt.Errorf("%s: %w", f.name, err)
	}
	gx, gy, gz, err := grid.dims()
	if err != nil {
		return fmt.Errorf("cuda: launch %s: grid: %w", f.name, err)
	}
	bx, by, bz, err := block.dims()
	if err != nil {
		return fmt.Errorf("cuda: launch %s: block: %w", f.name, err)
	}
	if sharedBytes < 0 || sharedBytes > 1<<31 {
		return fmt.Errorf("cuda: launch %s: shared memory %d bytes out of range", f.name, sharedBytes)
	}
	var p *C.uint64_t
	if len(slots) > 0 {
		p = (*C.uint64_t)(unsafe.Pointer(&slots[0]))
	}
	st := C.ms_launch(s.d.cctx(), C.uintptr_t(f.h), C.uint(gx), C.uint(gy), C.uint(gz),
		C.uint(bx), C.uint(by), C.uint(bz), C.uint(sharedBytes), s.ch(), p, C.int(len(slots)))
	if err := check(st); err != nil {
		return fmt.Errorf("cuda: launch %s grid %v block %v shared %d: %w", f.name, grid, block, sharedBytes, err)
	}
	return nil
}

// NewEvent creates an event; timing events can be passed to Elapsed,
// others are cheaper (CU_EVENT_DISABLE_TIMING). The caller closes it.
func (d *Device) NewEvent(timing bool) (*Event, error) {
	flags := C.uint(eventDisableTiming)
	if timing {
		flags = 0
	}
	var h C.uintptr_t
	if err := check(C.ms_event_create(d.cctx(), flags, &h)); err != nil {
		return nil, err
	}
	return &Event{d: d, h: uintptr(h), timing: timing}, nil
}

func (e *Event) ch() C.uintptr_t { return C.uintptr_t(e.h) }

// Record marks the current end of s's queue: the event completes once
// the work queued on s so far has.
func (e *Event) Record(s *Stream) error {
	return check(C.ms_event_record(e.d.cctx(), e.ch(), s.ch()))
}

// Sync waits until the event has completed.
func (e *Event) Sync() error {
	return check(C.ms_event_sync(e.d.cctx(), e.ch()))
}

// Done reports whether the event has completed, without waiting.
func (e *Event) Done() (bool, error) {
	st := C.ms_event_query(e.d.cctx(), e.ch())
	if st.code == errNotReady && st.lib == C.MS_LIB_DRIVER {
		return false, nil
	}
	if err := check(st); err != nil {
		return false, err
	}
	return true, nil
}

// Close destroys the event.
func (e *Event) Close() error {
	return check(C.ms_event_destroy(e.d.cctx(), e.ch()))
}

// Elapsed returns the GPU time between two completed timing events
// (resolution about half a microsecond).
func Elapsed(start, end *Event) (time.Duration, error) {
	if !start.timing || !end.timing {
		return 0, fmt.Errorf("cuda: elapsed: events created without timing")
	}
	var ms C.float
	if err := check(C.ms_event_elapsed(start.d.cctx(), &ms, start.ch(), end.ch())); err != nil {
		return 0, err
	}
	return time.Duration(float64(ms) * float64(time.Millisecond)), nil
}
