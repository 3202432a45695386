package emu_test

import (
	"errors"
	"testing"

	"github.com/moesys/moesys/gpu/cuda"
	"github.com/moesys/moesys/gpu/kernels/emu"
)

// TestLoad builds both libraries and checks a launch's parameter check.
func TestLoad(t *testing.T) {
	for _, act := range []cuda.DataType{cuda.F32, cuda.BF16} {
		d, err := emu.Load(act)
		if errors.Is(err, emu.ErrUnavailable) {
			t.Skip(err)
		}
		if err != nil {
			t.Fatal(err)
		}
		x := d.Alloc(64)
		err = d.Launch(nil, "add_bias", cuda.Dim3{X: 1}, cuda.Dim3{X: 32}, 0, x, x, 1, int64(4))
		if err == nil {
			t.Errorf("%v: add_bias with an int64 for an int: no error", act)
		} else {
			t.Log(err)
		}
		d.Free(x)
	}
}
