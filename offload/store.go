package offload

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
)

// Store is the slow tier: a source of expert blocks addressed by byte
// offset (a Block's Offset). The slot filler is its consumer; FileStore,
// MemStore, SimLink and the test wrappers of storetest.go implement it. A
// faster tier above host RAM (pinned host memory, then device memory) is a
// second pool filled from this one, so the Store never sees device memory.
type Store interface {
	// ReadAt fills all of dst with the bytes at off, or returns an error
	// naming the offset and size; a read that finds fewer bytes wraps
	// ErrShortRead. It returns early with ctx's error if ctx is done before
	// the read starts; a read already issued completes. dst is the caller's
	// and is only written during the call. Safe for concurrent use.
	ReadAt(ctx context.Context, dst []byte, off int64) error
	// Close releases the store; later reads fail with ErrClosed.
	Close() error
}

// Store errors.
var (
	// ErrShortRead: the store ended before dst was full.
	ErrShortRead = errors.New("offload: short read")
	// ErrClosed: the store, reader or pool is closed.
	ErrClosed = errors.New("offload: closed")
	// ErrAlign: an O_DIRECT read's buffer address, length or offset is not
	// a multiple of Align.
	ErrAlign = errors.New("offload: unaligned read")
)

// readErr names a failed read of size bytes at off of what.
func readErr(what string, size int, off int64, err error) error {
	return fmt.Errorf("offload: %s: read %d bytes at offset %d: %w", what, size, off, err)
}

// shortRead is the error for a read of size bytes at off of what that found
// only n.
func shortRead(what string, size int, off int64, n int) error {
	return fmt.Errorf("offload: %s: read %d bytes at offset %d: got %d: %w", what, size, off, n, ErrShortRead)
}

// MemStore is a Store over a byte slice: the fake for tests and the source
// for weights already in memory. Unlike FileStore it accepts any buffer
// alignment.
type MemStore struct {
	data   []byte
	closed atomic.Bool
}

// NewMemStore returns a store reading data, which the store borrows: the
// caller must not change it while the store is in use.
func NewMemStore(data []byte) *MemStore { return &MemStore{data: data} }

// ReadAt copies len(dst) bytes at off into dst.
func (m *MemStore) ReadAt(ctx context.Context, dst []byte, off int64) error {
	if m.closed.Load() {
		return readErr("memory", len(dst), off, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return readErr("memory", len(dst), off, err)
	}
	if off < 0 || off > int64(len(m.data)) {
		return shortRead("memory", len(dst), off, 0)
	}
	if n := copy(dst, m.data[off:]); n < len(dst) {
		return shortRead("memory", len(dst), off, n)
	}
	return nil
}

// View returns the n bytes at off in place, without a copy: a device fill
// copies from them directly (pinned memory goes over the link at full
// speed). ok is false when they are not all there or the store is closed.
func (m *MemStore) View(off int64, n int) (b []byte, ok bool) {
	if m.closed.Load() || off < 0 || n < 0 || off > int64(len(m.data)) || int64(n) > int64(len(m.data))-off {
		return nil, false
	}
	return m.data[off : off+int64(n)], true
}

// Close marks the store closed; the data is not touched.
func (m *MemStore) Close() error {
	m.closed.Store(true)
	return nil
}
