package offload

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"
)

// Memory provides a SlotPool's memory: one region holding every slot.
// HostMemory is the CPU's; a GPU backend supplies pinned (page-locked) host
// memory through the same interface, so the host tier feeds the device at
// full link speed. A tier whose memory the CPU cannot address (device
// memory) returns a nil region and keeps its own buffers by Slot.Index.
type Memory interface {
	// Alloc returns bytes bytes starting on an Align boundary, or nil.
	Alloc(bytes int) ([]byte, error)
	// Free releases a region Alloc returned.
	Free(region []byte) error
}

// HostMemory is anonymous, page-aligned host memory (mmap), outside the Go
// heap: the garbage collector neither scans nor counts it, and its pages
// are the budget's.
type HostMemory struct{}

// Alloc maps bytes of zeroed memory.
func (HostMemory) Alloc(bytes int) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, bytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("offload: map %d bytes of slot memory: %w", bytes, err)
	}
	return b, nil
}

// Free unmaps a region from Alloc.
func (HostMemory) Free(region []byte) error {
	if err := unix.Munmap(region); err != nil {
		return fmt.Errorf("offload: unmap %d bytes of slot memory: %w", len(region), err)
	}
	return nil
}

// DeviceMemory is a Memory the CPU cannot address: a GPU's. Its Alloc
// returns a nil region (the memory keeps the allocation), a SlotPool over
// it has slots without Bytes, and a Scheduler fills a slot by handing the
// block's offset to Fill on a reader worker instead of reading into it.
// The ExpertWeights a Scheduler over it lends carry the slot's device
// address (Addr) and no Data. A DeviceMemory serves one pool.
type DeviceMemory interface {
	Memory
	// Addr is the device address of byte off of the region.
	Addr(off int64) uint64
	// Fill moves the n bytes at off of store to byte dst of the region,
	// returning once they are there (later work on any stream of the
	// device sees them). It is called from several reader workers at once.
	Fill(ctx context.Context, store Store, dst, off int64, n int) error
}
