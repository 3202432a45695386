package offload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FileStore is a Store over an experts file read with O_DIRECT, so reads
// bypass the page cache: the memory budget is real and measured speeds are
// the disk's, not a warm cache's. Every read's buffer address, length and
// offset must be multiples of Align (a slot and a Block's Offset and Padded
// size are). Where the filesystem refuses O_DIRECT the file is opened
// normally and Note says so.
type FileStore struct {
	f      *os.File
	path   string
	direct bool
	note   string
	closed atomic.Bool
}

// openFunc opens a file; tests swap it to make O_DIRECT fail.
type openFunc func(name string, flag int, perm os.FileMode) (*os.File, error)

// OpenFileStore opens path (an experts file, Layout.Path) for direct reads.
func OpenFileStore(path string) (*FileStore, error) {
	return openFileStore(path, os.OpenFile)
}

func openFileStore(path string, open openFunc) (*FileStore, error) {
	s := &FileStore{path: path, direct: true}
	f, err := open(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if errors.Is(err, unix.EINVAL) {
		// The filesystem does not do O_DIRECT (older tmpfs, some FUSE and
		// network filesystems): read through the page cache instead.
		s.direct = false
		s.note = "O_DIRECT refused by the filesystem (EINVAL): reads go through the page cache, so repeated reads may be served from RAM"
		f, err = open(path, os.O_RDONLY, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("offload: %w", err) // names the path

	}
	s.f = f
	return s, nil
}

// Direct reports whether reads bypass the page cache.
func (s *FileStore) Direct() bool { return s.direct }

// Note is why reads do not bypass the page cache, or "" when they do; the
// run report prints it beside the measured read speed.
func (s *FileStore) Note() string { return s.note }

// Path is the file's path.
func (s *FileStore) Path() string { return s.path }

// ReadAt reads len(dst) bytes at off into dst with one positioned read
// (more if the kernel returns part). dst, len(dst) and off must be
// multiples of Align, else the error wraps ErrAlign; this holds on the
// fallback path too, so tests on any filesystem catch unaligned callers.
func (s *FileStore) ReadAt(ctx context.Context, dst []byte, off int64) error {
	if s.closed.Load() {
		return readErr(s.path, len(dst), off, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return readErr(s.path, len(dst), off, err)
	}
	if len(dst) == 0 {
		return nil
	}
	if off%Align != 0 || len(dst)%Align != 0 || uintptr(unsafe.Pointer(&dst[0]))%Align != 0 {
		return readErr(s.path, len(dst), off, ErrAlign)
	}
	n, err := s.f.ReadAt(dst, off)
	switch {
	case n == len(dst):
		return nil
	case errors.Is(err, io.EOF):
		return shortRead(s.path, len(dst), off, n)
	case errors.Is(err, os.ErrClosed):
		return readErr(s.path, len(dst), off, ErrClosed)
	default:
		return readErr(s.path, len(dst), off, err)
	}
}

// Close closes the file. Reads in flight finish or fail; later reads fail
// with ErrClosed. Closing twice is a no-op.
func (s *FileStore) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("offload: %w", err) // names the path
	}
	return nil
}
