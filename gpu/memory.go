package gpu

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"github.com/moesys/moesys/gpu/cuda"
	"github.com/moesys/moesys/offload"
)

// DeviceSlots is the offload.DeviceMemory of a GPU: the scheduler's slots
// in one device allocation, filled over the backend's copy stream. A
// store that can lend its bytes in place (offload.MemStore, e.g. over
// PinnedStore's pinned copy of the experts file) is copied from directly;
// any other (the experts file on disk) is read into a pinned bounce buffer
// first. Fill returns once the copy has landed (an event on the copy
// stream), so the compute stream may read the slot when Acquire returns.
type DeviceSlots struct {
	b     *Backend
	base  cuda.DevPtr
	bytes int64

	mu      sync.Mutex
	bounce  [][]byte // free pinned bounce buffers
	pinned  []bool
	events  []*cuda.Event // free events
	all     [][]byte      // every bounce buffer, for Free
	allPin  []bool
	allEvts []*cuda.Event
}

// viewer is a store that lends its bytes in place (offload.MemStore).
type viewer interface {
	View(off int64, n int) ([]byte, bool)
}

var _ offload.DeviceMemory = (*DeviceSlots)(nil)

// NewDeviceSlots returns slot memory on b's device for one scheduler.
func NewDeviceSlots(b *Backend) *DeviceSlots { return &DeviceSlots{b: b} }

// Alloc allocates the region on the device and returns a nil region: the
// CPU cannot address it.
func (d *DeviceSlots) Alloc(bytes int) ([]byte, error) {
	if d.base != 0 {
		return nil, fmt.Errorf("gpu: device slots allocated twice")
	}
	p, err := d.b.Malloc(int64(bytes))
	if err != nil {
		return nil, err
	}
	d.base, d.bytes = p, int64(bytes)
	return nil, nil
}

// Free releases the device region, the bounce buffers and the events.
func (d *DeviceSlots) Free([]byte) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	err := d.b.Free(d.base)
	d.base, d.bytes = 0, 0
	for i, buf := range d.all {
		if ferr := d.b.HostFree(buf, d.allPin[i]); ferr != nil && err == nil {
			err = ferr
		}
	}
	for _, e := range d.allEvts {
		if cerr := e.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	d.all, d.allPin, d.bounce, d.pinned, d.events, d.allEvts = nil, nil, nil, nil, nil, nil
	return err
}

// Addr is the device address of byte off of the region.
func (d *DeviceSlots) Addr(off int64) uint64 { return uint64(d.base) + uint64(off) }

// Fill copies the n bytes at off of store to byte dst of the region and
// waits for the copy.
func (d *DeviceSlots) Fill(ctx context.Context, store offload.Store, dst, off int64, n int) error {
	if dst < 0 || int64(n) > d.bytes-dst {
		return fmt.Errorf("gpu: fill of %d bytes at %d of a %d-byte slot region", n, dst, d.bytes)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	src, direct := []byte(nil), false
	if v, ok := store.(viewer); ok {
		src, direct = v.View(off, n)
	}
	var buf []byte
	var pinned bool
	if !direct {
		var err error
		if buf, pinned, err = d.takeBounce(n); err != nil {
			return err
		}
		defer d.giveBounce(buf, pinned)
		// A direct-I/O store wants an aligned buffer.
		at := int((offload.Align - uintptr(unsafe.Pointer(unsafe.SliceData(buf)))%offload.Align) % offload.Align)
		src = buf[at : at+n]
		if err := store.ReadAt(ctx, src, off); err != nil {
			return err
		}
	}
	ev, err := d.takeEvent()
	if err != nil {
		return err
	}
	defer d.giveEvent(ev)
	if err := d.b.Copy.CopyHtoD(d.base.Add(dst), src); err != nil {
		return fmt.Errorf("gpu: copy %d bytes to a slot: %w", n, err)
	}
	if err := ev.Record(d.b.Copy); err != nil {
		return err
	}
	return ev.Sync()
}

// takeBounce returns a free bounce buffer with n bytes past its first
// offload.Align boundary.
func (d *DeviceSlots) takeBounce(n int) ([]byte, bool, error) {
	n += offload.Align
	d.mu.Lock()
	for i := len(d.bounce) - 1; i >= 0; i-- {
		if len(d.bounce[i]) >= n {
			buf, p := d.bounce[i], d.pinned[i]
			d.bounce = append(d.bounce[:i], d.bounce[i+1:]...)
			d.pinned = append(d.pinned[:i], d.pinned[i+1:]...)
			d.mu.Unlock()
			return buf, p, nil
		}
	}
	d.mu.Unlock()
	buf, pinned, err := d.b.HostAlloc(n)
	if err != nil {
		return nil, false, err
	}
	d.mu.Lock()
	d.all, d.allPin = append(d.all, buf), append(d.allPin, pinned)
	d.mu.Unlock()
	return buf, pinned, nil
}

func (d *DeviceSlots) giveBounce(buf []byte, pinned bool) {
	d.mu.Lock()
	d.bounce, d.pinned = append(d.bounce, buf), append(d.pinned, pinned)
	d.mu.Unlock()
}

func (d *DeviceSlots) takeEvent() (*cuda.Event, error) {
	d.mu.Lock()
	if n := len(d.events); n > 0 {
		e := d.events[n-1]
		d.events = d.events[:n-1]
		d.mu.Unlock()
		return e, nil
	}
	d.mu.Unlock()
	e, err := d.b.Dev.NewEvent(false)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.allEvts = append(d.allEvts, e)
	d.mu.Unlock()
	return e, nil
}

func (d *DeviceSlots) giveEvent(e *cuda.Event) {
	d.mu.Lock()
	d.events = append(d.events, e)
	d.mu.Unlock()
}

// PinnedStore reads the file at path (an experts.bin) into pinned host
// memory and returns a store over it: the host tier of "experts in pinned
// host RAM", copied to device slots at the link's full speed. progress, if
// not nil, is called with the bytes read so far. free releases the memory
// once the scheduler over the store is closed.
func (b *Backend) PinnedStore(path string, progress func(done, total int64)) (store *offload.MemStore, free func() error, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if st.Size() == 0 {
		return nil, nil, fmt.Errorf("gpu: %s is empty", path)
	}
	buf, pinned, err := b.HostAlloc(int(st.Size()))
	if err != nil {
		return nil, nil, err
	}
	const chunk = 64 << 20
	for done := int64(0); done < st.Size(); {
		n := min(chunk, st.Size()-done)
		if _, err := io.ReadFull(f, buf[done:done+n]); err != nil {
			b.HostFree(buf, pinned)
			return nil, nil, fmt.Errorf("gpu: read %s into host memory: %w", path, err)
		}
		done += n
		if progress != nil {
			progress(done, st.Size())
		}
	}
	return offload.NewMemStore(buf), func() error { return b.HostFree(buf, pinned) }, nil
}
