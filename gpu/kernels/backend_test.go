package kernels_test

import (
	"encoding/binary"
	"errors"
	"math"
	"sync"
	"testing"

	"github.com/moesys/moesys/gpu/cuda"
	"github.com/moesys/moesys/gpu/kernels"
	"github.com/moesys/moesys/gpu/kernels/emu"
	"github.com/moesys/moesys/tensor"
)

// backend runs the kernels somewhere with device memory: the CPU emulator
// or a real GPU. Tests run every kernel on each available backend.
type backend struct {
	name   string
	k      *kernels.Set
	s      *cuda.Stream // nil for the emulator
	alloc  func(bytes int) cuda.DevPtr
	free   func(p cuda.DevPtr)
	write  func(p cuda.DevPtr, b []byte)
	read   func(b []byte, p cuda.DevPtr)
	sync   func() error
	owned  []cuda.DevPtr
	tb     testing.TB
	isEmul bool
}

// emuSMs is the multiprocessor count the emulated Sets plan for: large,
// so that short key ranges already take split-K attention.
const emuSMs = 64

var (
	gpuOnce sync.Once
	gpuDev  *cuda.Device
	gpuErr  error
)

// openGPU opens device 0 once per test binary.
func openGPU() (*cuda.Device, error) {
	gpuOnce.Do(func() { gpuDev, gpuErr = cuda.Open(0) })
	return gpuDev, gpuErr
}

// backends returns the backends for act: the emulator (skipped with a
// message when no C++ compiler or cgo is available) and the GPU when one
// is present. It fails t when a backend that should work does not.
func backends(t *testing.T, act cuda.DataType) []*backend {
	t.Helper()
	var out []*backend
	if d, err := emu.Load(act); err != nil {
		if !errors.Is(err, emu.ErrUnavailable) {
			t.Fatalf("emulator: %v", err)
		}
		t.Logf("emulator skipped: %v", err)
	} else {
		ws := d.Alloc(1 << 20)
		k, err := kernels.New(d, act, emuSMs, ws, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &backend{
			name: "emu-" + act.String(), k: k, tb: t, isEmul: true,
			alloc: d.Alloc, free: d.Free,
			write: func(p cuda.DevPtr, b []byte) { copy(d.Bytes(p, len(b)), b) },
			read:  func(b []byte, p cuda.DevPtr) { copy(b, d.Bytes(p, len(b))) },
			sync:  func() error { return nil },
		})
	}
	if g := gpuBackend(t, act); g != nil {
		out = append(out, g)
	}
	if len(out) == 0 {
		t.Skip("no emulator (no C++ compiler or cgo) and no GPU")
	}
	return out
}

var (
	gpuSets   = map[cuda.DataType]*kernels.Set{}
	gpuSetsMu sync.Mutex
)

// gpuBackend returns the GPU backend for act, or nil when there is no GPU.
func gpuBackend(t testing.TB, act cuda.DataType) *backend {
	d, err := openGPU()
	if err != nil {
		if !errors.Is(err, cuda.ErrUnavailable) {
			t.Fatalf("cuda.Open: %v", err)
		}
		return nil
	}
	gpuSetsMu.Lock()
	defer gpuSetsMu.Unlock()
	k := gpuSets[act]
	if k == nil {
		if k, err = kernels.Load(d, act); err != nil {
			t.Fatal(err)
		}
		gpuSets[act] = k
	}
	s, err := d.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: "gpu-" + act.String(), k: k, s: s, tb: t}
	b.alloc = func(n int) cuda.DevPtr {
		p, err := d.Malloc(int64(max(n, 1)))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Memset(p, int64(max(n, 1)), 0); err != nil {
			t.Fatal(err)
		}
		return p
	}
	b.free = func(p cuda.DevPtr) { d.Free(p) }
	b.write = func(p cuda.DevPtr, data []byte) {
		if err := s.CopyHtoD(p, data); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	b.read = func(data []byte, p cuda.DevPtr) {
		if err := s.CopyDtoH(data, p); err != nil {
			t.Fatal(err)
		}
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	b.sync = s.Sync
	t.Cleanup(func() { s.Close() })
	return b
}

// run calls f for every backend of every activation type in acts, as
// subtests named by backend.
func run(t *testing.T, acts []cuda.DataType, f func(t *testing.T, b *backend)) {
	for _, act := range acts {
		for _, b := range backends(t, act) {
			t.Run(b.name, func(t *testing.T) {
				b.tb = t
				defer b.release()
				f(t, b)
			})
		}
	}
}

var bothActs = []cuda.DataType{cuda.F32, cuda.BF16}

func (b *backend) release() {
	for _, p := range b.owned {
		b.free(p)
	}
	b.owned = nil
}

func (b *backend) buf(bytes int) cuda.DevPtr {
	p := b.alloc(bytes)
	b.owned = append(b.owned, p)
	return p
}

func (b *backend) f32(v []float32) cuda.DevPtr {
	p := b.buf(4 * len(v))
	b.write(p, f32Bytes(v))
	return p
}

func (b *backend) i32(v []int32) cuda.DevPtr {
	p := b.buf(4 * len(v))
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(x))
	}
	b.write(p, raw)
	return p
}

func (b *backend) u64(v []uint64) cuda.DevPtr {
	p := b.buf(8 * len(v))
	raw := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(raw[8*i:], x)
	}
	b.write(p, raw)
	return p
}

// typed stores v as elements of t (bf16 rounded to nearest even).
func (b *backend) typed(t cuda.DataType, v []float32) cuda.DevPtr {
	if t == cuda.F32 {
		return b.f32(v)
	}
	p := b.buf(2 * len(v))
	b.write(p, bf16Bytes(v))
	return p
}

// act stores v as the Set's activation type.
func (b *backend) act(v []float32) cuda.DevPtr { return b.typed(b.k.Act(), v) }

func (b *backend) readF32(p cuda.DevPtr, n int) []float32 {
	b.syncOK()
	raw := make([]byte, 4*n)
	b.read(raw, p)
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

func (b *backend) readI32(p cuda.DevPtr, n int) []int32 {
	b.syncOK()
	raw := make([]byte, 4*n)
	b.read(raw, p)
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return out
}

// readTyped reads n elements of type t widened to float32.
func (b *backend) readTyped(t cuda.DataType, p cuda.DevPtr, n int) []float32 {
	if t == cuda.F32 {
		return b.readF32(p, n)
	}
	b.syncOK()
	raw := make([]byte, 2*n)
	b.read(raw, p)
	out := make([]float32, n)
	for i := range out {
		out[i] = tensor.BF16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
	}
	return out
}

func (b *backend) readAct(p cuda.DevPtr, n int) []float32 { return b.readTyped(b.k.Act(), p, n) }

func (b *backend) syncOK() {
	if err := b.sync(); err != nil {
		b.tb.Fatal(err)
	}
}

func f32Bytes(v []float32) []byte {
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(x))
	}
	return raw
}

func bf16Bytes(v []float32) []byte {
	raw := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(raw[2*i:], tensor.F32ToBF16(x))
	}
	return raw
}

// roundTo returns v rounded to t (a copy).
func roundTo(t cuda.DataType, v []float32) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		if t == cuda.BF16 {
			x = tensor.BF16ToF32(tensor.F32ToBF16(x))
		}
		out[i] = x
	}
	return out
}
