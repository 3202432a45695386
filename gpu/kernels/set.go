package kernels

import (
	"errors"
	"fmt"
	"math"

	"github.com/moesys/moesys/gpu/cuda"
)

// ErrUnsupported is wrapped by the errors for shapes and types the kernels
// do not handle (a head dim above 256, more than 1024 experts, an element
// type other than f32 and bf16).
var ErrUnsupported = errors.New("kernels: unsupported shape or type")

// Launcher queues a kernel of Source by name. Load's launcher runs the
// NVRTC-compiled module on the GPU; package emu's runs the same source on
// the CPU; tests record the calls.
type Launcher interface {
	Launch(s *cuda.Stream, kernel string, grid, block cuda.Dim3, sharedBytes int, args ...any) error
}

// Set is the compiled kernels for one activation type, with their launch
// wrappers. Its methods may be called from any goroutine, but the
// attention workspace is shared: Attention calls through one Set must be
// issued on one stream (or otherwise ordered).
type Set struct {
	act     cuda.DataType
	l       Launcher
	sms     int         // multiprocessors, for choosing split counts
	ws      cuda.DevPtr // attention partials
	wsBytes int64
	free    func() error // releases what Load allocated
}

// AttentionWorkspaceBytes is the device memory Load allocates for the
// partial results of split-K attention: 16 MiB holds 60 splits of 8 query
// rows of 64 heads of 128 dims, more than decode ever uses.
const AttentionWorkspaceBytes = 16 << 20

// Load compiles Source(act) with NVRTC for d, resolves every kernel and
// allocates the attention workspace. act is cuda.F32 or cuda.BF16. A
// compile error includes NVRTC's log. Close releases the module and the
// workspace.
func Load(d *cuda.Device, act cuda.DataType) (*Set, error) {
	src, err := Source(act)
	if err != nil {
		return nil, err
	}
	mod, log, err := d.Build(src, fmt.Sprintf("moesys_kernels_%v.cu", act), []string{"-lineinfo"})
	if err != nil {
		return nil, fmt.Errorf("kernels: compile for %v: %w", act, err) // err carries the log
	}
	_ = log // warnings only; NVRTC's log is in the error when it fails
	fns := make(map[string]*cuda.Function)
	for _, n := range Names() {
		f, err := mod.Function(n)
		if err != nil {
			mod.Close()
			return nil, fmt.Errorf("kernels: %w", err)
		}
		fns[n] = f
	}
	ws, err := d.Malloc(AttentionWorkspaceBytes)
	if err != nil {
		mod.Close()
		return nil, fmt.Errorf("kernels: attention workspace: %w", err)
	}
	k, err := New(moduleLauncher(fns), act, d.Info().SMs, ws, AttentionWorkspaceBytes)
	if err != nil {
		d.Free(ws)
		mod.Close()
		return nil, err
	}
	k.free = func() error {
		return errors.Join(d.Free(ws), mod.Close())
	}
	return k, nil
}

// New returns a Set that launches through l: for the CPU emulator and
// tests. sms is the multiprocessor count the launch geometry plans for; ws
// is wsBytes of device memory for Attention's partials (0 bytes disables
// split-K attention).
func New(l Launcher, act cuda.DataType, sms int, ws cuda.DevPtr, wsBytes int64) (*Set, error) {
	if act != cuda.F32 && act != cuda.BF16 {
		return nil, fmt.Errorf("kernels: activation type %v: want f32 or bf16: %w", act, ErrUnsupported)
	}
	if sms < 1 || wsBytes < 0 {
		return nil, fmt.Errorf("kernels: New: sms=%d wsBytes=%d: need sms ≥ 1, wsBytes ≥ 0", sms, wsBytes)
	}
	return &Set{act: act, l: l, sms: sms, ws: ws, wsBytes: wsBytes}, nil
}

// Act returns the activation element type the Set was compiled for.
func (k *Set) Act() cuda.DataType { return k.act }

// Close releases the module and workspace Load allocated (nothing for a
// Set from New). Work queued with the Set must have finished.
func (k *Set) Close() error {
	if k.free == nil {
		return nil
	}
	f := k.free
	k.free = nil
	return f()
}

// moduleLauncher launches the Functions of a loaded module by name.
type moduleLauncher map[string]*cuda.Function

func (m moduleLauncher) Launch(s *cuda.Stream, kernel string, grid, block cuda.Dim3, sharedBytes int, args ...any) error {
	f, ok := m[kernel]
	if !ok {
		return fmt.Errorf("kernels: no kernel %q", kernel) // a bug in this package
	}
	return s.Launch(f, grid, block, sharedBytes, args...)
}

// launch queues kernel and names op in its error.
func (k *Set) launch(op string, s *cuda.Stream, kernel string, grid, block cuda.Dim3, shared int, args ...any) error {
	if err := k.l.Launch(s, kernel, grid, block, shared, args...); err != nil {
		return fmt.Errorf("kernels.%s: %w", op, err)
	}
	return nil
}

// Launch geometry shared by the simple kernels.
const (
	flatThreads  = 256     // threads per block of the element-wise kernels
	maxFlatGrid  = 1 << 16 // grid-stride kernels loop beyond this many blocks
	rowThreads   = 256     // threads per block of the one-row-per-block kernels
	maxGridYZ    = 65535   // CUDA's limit on grid.y and grid.z
	maxGridX     = math.MaxInt32
	maxBlockSize = 1024
)

// flatGrid is the block count of a grid-stride kernel over n elements.
func flatGrid(n int64) int {
	b := (n + flatThreads - 1) / flatThreads
	return int(min(b, maxFlatGrid))
}

// rowBlock is the block size of a row kernel over rows of n elements: a
// multiple of 32, at most rowThreads.
func rowBlock(n int) int {
	return min(rowThreads, max(32, (n+31)/32*32))
}

// checkDims returns an error naming op unless every dim is ≥ 0 and fits
// a 32-bit int; names and vals alternate ("T", T, "D", D, ...).
func checkDims(op string, kv ...any) error {
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1].(int)
		if v < 0 || v > math.MaxInt32 {
			return fmt.Errorf("kernels.%s: %s=%d: want 0 ≤ %s < 2^31", op, kv[i], v, kv[i])
		}
	}
	return nil
}

// checkType returns an error naming op unless t is one of allowed.
func checkType(op, what string, t cuda.DataType, allowed ...cuda.DataType) error {
	for _, a := range allowed {
		if t == a {
			return nil
		}
	}
	return fmt.Errorf("kernels.%s: %s type %v: want one of %v: %w", op, what, t, allowed, ErrUnsupported)
}

// errorf formats an error for op: "kernels.<op>: ...".
func errorf(op, format string, args ...any) error {
	return fmt.Errorf("kernels."+op+": "+format, args...)
}
