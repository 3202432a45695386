//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package safetensors

import (
	"os"
	"syscall"
)

// mapFile maps size bytes of f read-only and shared. The mapping outlives f's
// descriptor; release unmaps it. Pages are read on first touch, so opening a
// large checkpoint costs only the header.
func mapFile(f *os.File, size int) (data []byte, release func([]byte) error, err error) {
	data, err = syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, &os.PathError{Op: "mmap", Path: f.Name(), Err: err}
	}
	return data, syscall.Munmap, nil
}
