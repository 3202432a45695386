package offload

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/moesys/moesys/moe"
)

// fakeDevice is a DeviceMemory for unit tests: "device" memory is a host
// buffer the pool never sees (Alloc returns a nil region), at a made-up
// address range, filled only through Fill. The real one is gpu.DeviceSlots,
// tested on a GPU by the gpu package's tests.
type fakeDevice struct {
	base  uint64
	mu    sync.Mutex
	mem   []byte
	fills atomic.Int64
	fail  error // Fill's error when set
}

func (d *fakeDevice) Alloc(bytes int) ([]byte, error) {
	d.mem = make([]byte, bytes)
	return nil, nil
}

func (d *fakeDevice) Free([]byte) error { d.mem = nil; return nil }

func (d *fakeDevice) Addr(off int64) uint64 { return d.base + uint64(off) }

func (d *fakeDevice) Fill(ctx context.Context, store Store, dst, off int64, n int) error {
	if d.fail != nil {
		return d.fail
	}
	buf := make([]byte, n) // the pinned bounce buffer of a real device
	if err := store.ReadAt(ctx, buf, off); err != nil {
		return err
	}
	d.mu.Lock()
	copy(d.mem[dst:dst+int64(n)], buf)
	d.mu.Unlock()
	d.fills.Add(1)
	return nil
}

// at returns the device bytes of w's tensor i.
func (d *fakeDevice) at(w moe.ExpertWeights, i int) []byte {
	t := w.Tensors[i]
	o := int64(w.Addr-d.base) + t.Offset
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.mem[o:o+t.Bytes]...)
}

// Every policy runs unchanged over device memory: the lent weights carry
// the slot's device address and no Data, the device holds each acquired
// expert's bytes, and the counts are those of host slots.
func TestSchedulerDeviceMemory(t *testing.T) {
	const layers = 4
	for _, policy := range []Policy{Resident, OnDemand, PrefetchAll, Ring, Pregated, Speculative} {
		t.Run(string(policy), func(t *testing.T) {
			lay := writeSchedLayers(t, layers)
			dev := &fakeDevice{base: 0x7f00_0000_0000}
			cfg := SchedulerConfig{Policy: policy, TopK: 2, Budget: 3 * schedExperts * schedSlot, PregateDist: 1, Memory: dev}
			switch policy {
			case OnDemand:
				cfg.Budget = 2 * schedSlot
			case Resident:
				cfg.Budget = 0 // a slot per expert
			}
			store := NewMemStore(mustRead(t, lay.Path))
			t.Cleanup(func() { // after the scheduler's Close
				if dev.mem != nil {
					t.Error("the scheduler closed without freeing its device memory")
				}
			})
			s := openSched(t, lay, store, cfg)
			rng := rand.New(rand.NewPCG(7, 1))
			w := make([]moe.ExpertWeights, schedExperts)
			for step := range 3 * layers {
				layer := step % layers
				active := rng.Perm(schedExperts)[:2]
				for len(active) > 0 {
					n, err := s.AcquireThen(context.Background(), layer, active, w, func() {
						s.Prefetch(context.Background(), (layer+1)%layers, rng.Perm(schedExperts)[:2])
					})
					if err != nil {
						t.Fatal(err)
					}
					for j := range n {
						if w[j].Data != nil || w[j].Addr < dev.base || (w[j].Addr-dev.base)%schedSlot != 0 {
							t.Fatalf("layer %d expert %d: Data %d bytes at device address %#x: want none, at a slot of %#x",
								layer, active[j], len(w[j].Data), w[j].Addr, dev.base)
						}
						for i := range w[j].Tensors {
							b := dev.at(w[j], i)
							if b[0] != schedByte(layer, active[j], i) || b[len(b)-1] != b[0] {
								t.Fatalf("layer %d expert %d tensor %d: device holds %d..%d, want %d", layer, active[j], i, b[0], b[len(b)-1], schedByte(layer, active[j], i))
							}
						}
					}
					s.Release(w[:n])
					active = active[n:]
				}
			}
			c := s.Stats().Snapshot()
			if c.Reads != dev.fills.Load() || c.BytesRead != c.Reads*schedSlot || c.Reads == 0 {
				t.Fatalf("counts %+v with %d device fills: want one fill of a whole slot per read", c, dev.fills.Load())
			}
		})
	}
}

// A failed device fill fails the Acquire and is not cached.
func TestSchedulerDeviceFillFault(t *testing.T) {
	lay := writeSchedLayout(t)
	boom := errors.New("copy engine fault")
	dev := &fakeDevice{base: 1 << 40, fail: boom}
	s := openSched(t, lay, NewMemStore(mustRead(t, lay.Path)), SchedulerConfig{Policy: OnDemand, TopK: 2, Memory: dev})
	w := make([]moe.ExpertWeights, 2)
	if _, err := s.Acquire(context.Background(), 0, []int{1, 2}, w); !errors.Is(err, boom) {
		t.Fatalf("Acquire: %v, want the fill's error", err)
	}
	dev.fail = nil
	n, err := s.Acquire(context.Background(), 0, []int{1, 2}, w)
	if err != nil || n != 2 {
		t.Fatalf("Acquire after the fault: %d, %v", n, err)
	}
	if b := dev.at(w[0], 0); b[0] != schedByte(0, 1, 0) {
		t.Fatalf("expert 1 after a failed fill: device byte %d", b[0])
	}
	s.Release(w[:n])
}
