package gpu

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/moesys/moesys/gpu/cuda"
	"github.com/moesys/moesys/gpu/kernels"
	"github.com/moesys/moesys/offload"
)

// Options configure Open.
type Options struct {
	Ordinal int // device number
	// Compute is the precision of the weights on the device: "bf16" (the
	// default) or "f32". Activations, the KV cache, GEMM outputs and router
	// logits are f32 in both: the GEMV kernel widens bf16 weights exactly,
	// as the CPU path does, so bf16 compute costs only the weights'
	// rounding; products of more than gemvRows rows (prefill) run in cuBLAS
	// on bf16 copies of their inputs.
	Compute string

	// kernels, when set, replaces kernels.Load (the test that runs this
	// package over the fake driver and the kernel emulator).
	kernels func(d *cuda.Device, act cuda.DataType) (*kernels.Set, error)
}

// Backend is an opened GPU: device, streams, kernels and cuBLAS, with the
// device memory it allocated counted (live and peak bytes).
type Backend struct {
	Dev     *cuda.Device
	Compute *cuda.Stream // every kernel and GEMM of a pass
	Copy    *cuda.Stream // expert fills (DeviceSlots)
	K       *kernels.Set
	Blas    *cuda.Blas
	wt      cuda.DataType // weights
	act     cuda.DataType // activations and KV cache (the kernel set's)

	mu       sync.Mutex
	sizes    map[cuda.DevPtr]int64
	live     int64
	peak     int64
	pinned   int64 // pinned host bytes allocated
	pageable int64 // host bytes that fell back to pageable memory
	notices  []string
}

// ParseCompute maps "bf16" or "f32" ("" is bf16) to the weight type.
func ParseCompute(s string) (cuda.DataType, error) {
	switch strings.ToLower(s) {
	case "", "bf16":
		return cuda.BF16, nil
	case "f32", "fp32":
		return cuda.F32, nil
	}
	return 0, fmt.Errorf("gpu: compute %q: want bf16 or f32", s)
}

// Open opens device o.Ordinal and loads the kernels. Without a usable GPU
// the error wraps cuda.ErrUnavailable.
func Open(o Options) (*Backend, error) {
	wt, err := ParseCompute(o.Compute)
	if err != nil {
		return nil, err
	}
	act := cuda.F32
	dev, err := cuda.Open(o.Ordinal)
	if err != nil {
		return nil, err
	}
	b := &Backend{Dev: dev, wt: wt, act: act, sizes: map[cuda.DevPtr]int64{}}
	fail := func(err error) (*Backend, error) {
		b.Close()
		return nil, err
	}
	if b.Compute, err = dev.NewStream(); err != nil {
		return fail(err)
	}
	if b.Copy, err = dev.NewStream(); err != nil {
		return fail(err)
	}
	load := kernels.Load
	if o.kernels != nil {
		load = o.kernels
	}
	if b.K, err = load(dev, act); err != nil {
		return fail(fmt.Errorf("gpu: kernels: %w", err))
	}
	if b.Blas, err = dev.Blas(); err != nil {
		return fail(fmt.Errorf("gpu: cuBLAS: %w", err))
	}
	return b, nil
}

// Notice is the one line a command prints when err (from Open) makes it
// fall back to the CPU.
func Notice(err error) string {
	if errors.Is(err, cuda.ErrUnavailable) {
		return fmt.Sprintf("moesys: no GPU (%v): running on the CPU", err)
	}
	return fmt.Sprintf("moesys: GPU backend failed (%v): running on the CPU", err)
}

// Act is the activations' and KV cache's type on the device (cuda.F32).
func (b *Backend) Act() cuda.DataType { return b.act }

// Weights is the weights' type on the device (cuda.BF16 or cuda.F32).
func (b *Backend) Weights() cuda.DataType { return b.wt }

// Malloc allocates device memory, counted in Live and Peak.
func (b *Backend) Malloc(bytes int64) (cuda.DevPtr, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("gpu: allocate %d bytes", bytes)
	}
	p, err := b.Dev.Malloc(bytes)
	if err != nil {
		return 0, fmt.Errorf("gpu: allocate %s of device memory (%s live): %w", fmtBytes(bytes), fmtBytes(b.Live()), err)
	}
	b.mu.Lock()
	b.sizes[p] = bytes
	b.live += bytes
	b.peak = max(b.peak, b.live)
	b.mu.Unlock()
	return p, nil
}

// Free releases memory from Malloc; 0 is a no-op.
func (b *Backend) Free(p cuda.DevPtr) error {
	if p == 0 {
		return nil
	}
	b.mu.Lock()
	n, ok := b.sizes[p]
	delete(b.sizes, p)
	b.live -= n
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("gpu: free of %#x, not allocated by this backend", uint64(p))
	}
	return b.Dev.Free(p)
}

// Live and Peak are the device bytes allocated now and at most so far.
func (b *Backend) Live() int64 { b.mu.Lock(); defer b.mu.Unlock(); return b.live }

// Peak is the most device bytes allocated at once since Open or ResetPeak.
func (b *Backend) Peak() int64 { b.mu.Lock(); defer b.mu.Unlock(); return b.peak }

// ResetPeak starts a new peak from the live bytes.
func (b *Backend) ResetPeak() { b.mu.Lock(); b.peak = b.live; b.mu.Unlock() }

// HostAlloc returns bytes of pinned host memory or, when pinning fails,
// pageable memory, with a notice (Notices): a copy from pageable memory
// goes through the driver's staging buffer at a fraction of the link's
// speed, which a report must say, never hide.
func (b *Backend) HostAlloc(bytes int) (buf []byte, pinned bool, err error) {
	if bytes <= 0 {
		return nil, false, fmt.Errorf("gpu: host allocation of %d bytes", bytes)
	}
	buf, perr := b.Dev.HostAlloc(bytes)
	if perr == nil {
		b.mu.Lock()
		b.pinned += int64(bytes)
		b.mu.Unlock()
		return buf, true, nil
	}
	buf = make([]byte, bytes)
	b.mu.Lock()
	b.pageable += int64(bytes)
	b.notices = append(b.notices, fmt.Sprintf("pinned host allocation of %s failed (%v): using pageable memory, copies from it are slower", fmtBytes(int64(bytes)), perr))
	b.mu.Unlock()
	return buf, false, nil
}

// HostFree releases memory from HostAlloc.
func (b *Backend) HostFree(buf []byte, pinned bool) error {
	b.mu.Lock()
	if pinned {
		b.pinned -= int64(len(buf))
	} else {
		b.pageable -= int64(len(buf))
	}
	b.mu.Unlock()
	if pinned {
		return b.Dev.HostFree(buf)
	}
	return nil
}

// HostBytes returns the pinned and pageable host bytes allocated now.
func (b *Backend) HostBytes() (pinned, pageable int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pinned, b.pageable
}

// Notices returns the fallbacks taken so far (pageable host memory).
func (b *Backend) Notices() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.notices...)
}

// Describe is a one-line description of the device for reports.
func (b *Backend) Describe() string {
	in := b.Dev.Info()
	return fmt.Sprintf("%s (sm_%d%d, %d SMs, %s), %s weights, %s activations", in.Name, in.Major, in.Minor, in.SMs, fmtBytes(in.TotalMem), b.wt, b.act)
}

// Close releases the streams, cuBLAS and the device. Memory still
// allocated is the caller's leak; Close frees it with the context.
func (b *Backend) Close() error {
	var errs []error
	if b.Blas != nil {
		errs = append(errs, b.Blas.Close())
	}
	for _, s := range []*cuda.Stream{b.Compute, b.Copy} {
		if s != nil {
			errs = append(errs, s.Close())
		}
	}
	if b.Dev != nil {
		errs = append(errs, b.Dev.Close())
	}
	return errors.Join(errs...)
}

func fmtBytes(n int64) string { return offload.FormatBytes(n) }
