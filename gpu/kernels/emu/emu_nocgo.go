//go:build !cgo

package emu

import (
	"errors"
	"fmt"

	"github.com/moesys/moesys/gpu/cuda"
)

// Device is unavailable without cgo.
type Device struct{}

// Load fails without cgo: the emulator is loaded through dlopen.
func Load(act cuda.DataType) (*Device, error) {
	return nil, fmt.Errorf("%w: needs cgo (CGO_ENABLED=1) to load the emulator library", ErrUnavailable)
}

// Act is unreachable without cgo.
func (d *Device) Act() cuda.DataType { return 0 }

// Launch is unreachable without cgo.
func (d *Device) Launch(_ *cuda.Stream, kernel string, grid, block cuda.Dim3, sharedBytes int, args ...any) error {
	return errors.New("emu: needs cgo")
}

// Alloc is unreachable without cgo.
func (d *Device) Alloc(bytes int) cuda.DevPtr { panic("emu: needs cgo") }

// Free is unreachable without cgo.
func (d *Device) Free(p cuda.DevPtr) { panic("emu: needs cgo") }

// Bytes is unreachable without cgo.
func (d *Device) Bytes(p cuda.DevPtr, n int) []byte { panic("emu: needs cgo") }
