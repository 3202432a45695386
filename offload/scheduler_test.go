package offload

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moesys/moesys/moe"
)

// Expert blocks of the scheduler tests: schedLayers x schedExperts blocks
// of two U8 tensors (1000 and 5000 bytes, so each block pads to 8 KiB),
// every byte of tensor i of (layer, expert) equal to schedByte.
const (
	schedLayers  = 2
	schedExperts = 6
	schedSlot    = 2 * Align
)

func schedByte(layer, expert, i int) byte { return byte(layer*64 + expert*4 + i + 1) }

// writeSchedLayout writes the test layout and opens it.
func writeSchedLayout(t *testing.T) *Layout {
	t.Helper()
	return writeSchedLayers(t, schedLayers)
}

// writeSchedLayers is writeSchedLayout with layers MoE layers.
func writeSchedLayers(t *testing.T, layers int) *Layout {
	t.Helper()
	dir := t.TempDir()
	var blocks []BlockSpec
	data := map[string][]byte{}
	for l := range layers {
		for e := range schedExperts {
			bs := BlockSpec{Layer: l, Expert: e}
			for i, n := range []int{1000, 5000} {
				name := fmt.Sprintf("layers.%d.experts.%d.w%d", l, e, i)
				data[name] = slices.Repeat([]byte{schedByte(l, e, i)}, n)
				bs.Tensors = append(bs.Tensors, TensorRef{Name: name, DType: "U8", Shape: []int{n}, Bytes: int64(n)})
			}
			blocks = append(blocks, bs)
		}
	}
	if _, err := WriteLayout(dir, blocks, func(name string) ([]byte, error) { return data[name], nil }); err != nil {
		t.Fatal(err)
	}
	lay, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	return lay
}

// openSched starts a scheduler over store (the layout's file when nil),
// closed and checked for leaks at the end of the test.
func openSched(t *testing.T, lay *Layout, store Store, cfg SchedulerConfig) *Scheduler {
	t.Helper()
	if store == nil {
		fs, err := OpenFileStore(lay.Path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fs.Close() })
		store = fs
	}
	s, err := NewScheduler(context.Background(), lay, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// checkWeights checks that w holds (layer, expert)'s tensors.
// acquiredBytes checks, from any goroutine, that w[j] holds layer's expert
// experts[j] (each tensor's first and last byte).
func acquiredBytes(w []moe.ExpertWeights, layer int, experts []int) error {
	for j := range w {
		for i, tr := range w[j].Tensors {
			if d := tr.View(w[j].Data); d[0] != schedByte(layer, experts[j], i) || d[len(d)-1] != d[0] {
				return fmt.Errorf("layer %d expert %d: wrong bytes", layer, experts[j])
			}
		}
	}
	return nil
}

func checkWeights(t *testing.T, w moe.ExpertWeights, layer, expert int) {
	t.Helper()
	if w.Layer != layer || w.Expert != expert || len(w.Tensors) != 2 {
		t.Fatalf("got layer %d expert %d with %d tensors, want layer %d expert %d", w.Layer, w.Expert, len(w.Tensors), layer, expert)
	}
	for i, tr := range w.Tensors {
		for j, b := range tr.View(w.Data) {
			if want := schedByte(layer, expert, i); b != want {
				t.Fatalf("layer %d expert %d tensor %s byte %d = %d, want %d", layer, expert, tr.Name, j, b, want)
			}
		}
	}
}

func TestNewPlan(t *testing.T) {
	lay := writeSchedLayout(t) // 2 layers x 6 experts of 8 KiB
	all := int64(schedLayers * schedExperts)
	for _, tc := range []struct {
		name       string
		cfg        SchedulerConfig
		wantSlots  int
		wantMin    int    // 0: not checked
		wantPolicy Policy // "": cfg.Policy
		wantErr    string
	}{
		{"ondemand unlimited", SchedulerConfig{Policy: OnDemand, TopK: 2}, 12, 2, "", ""},
		{"ondemand minimum", SchedulerConfig{Policy: OnDemand, TopK: 2, Budget: 2 * schedSlot}, 2, 2, "", ""},
		{"ondemand rounds down", SchedulerConfig{Policy: OnDemand, TopK: 2, Budget: 7*schedSlot/2 + 1}, 3, 2, "", ""},
		{"ondemand capped at all", SchedulerConfig{Policy: OnDemand, TopK: 2, Budget: 100 * schedSlot}, 12, 2, "", ""},
		{"ondemand below K", SchedulerConfig{Policy: OnDemand, TopK: 2, Budget: 2*schedSlot - 1},
			0, 0, "", "1 slots of 8 KiB; policy ondemand needs at least 2 slots, 16 KiB (16384 bytes)"},
		{"ondemand K defaults to 1", SchedulerConfig{Policy: OnDemand, Budget: schedSlot}, 1, 1, "", ""},
		{"resident unlimited", SchedulerConfig{Policy: Resident}, 12, 12, "", ""},
		{"resident exact", SchedulerConfig{Policy: Resident, Budget: all * schedSlot}, 12, 12, "", ""},
		{"resident below all", SchedulerConfig{Policy: Resident, Budget: (all - 1) * schedSlot},
			0, 0, "", "policy resident needs at least 12 slots, 96 KiB (98304 bytes)"},
		{"prefetch-all: a layer and K", SchedulerConfig{Policy: PrefetchAll, TopK: 2, Budget: 8 * schedSlot}, 8, 8, "", ""},
		{"prefetch-all below", SchedulerConfig{Policy: PrefetchAll, TopK: 2, Budget: 7 * schedSlot},
			0, 0, "", "policy prefetch-all needs at least 8 slots"},
		{"prefetch-all batch 2: a layer and 2K", SchedulerConfig{Policy: PrefetchAll, TopK: 2, Batch: 2, Budget: 10 * schedSlot}, 10, 10, "", ""},
		{"prefetch-all batch 4: capped at all", SchedulerConfig{Policy: PrefetchAll, TopK: 2, Batch: 4}, 12, 12, "", ""},
		{"ring K=2", SchedulerConfig{Policy: Ring, TopK: 2, Budget: 12 * schedSlot}, 12, 12, "", ""},
		{"ring K capped at the layers", SchedulerConfig{Policy: Ring, TopK: 2}, 12, 12, "", ""},
		{"ring below 2 sections", SchedulerConfig{Policy: Ring, TopK: 2, Budget: 11 * schedSlot},
			0, 0, "", "policy ring needs at least 12 slots"},
		{"pregated distance 1: two blocks' K", SchedulerConfig{Policy: Pregated, TopK: 2, PregateDist: 1, Budget: 4 * schedSlot}, 4, 4, "", ""},
		{"pregated distance 2: three", SchedulerConfig{Policy: Pregated, TopK: 2, PregateDist: 2, Budget: 6 * schedSlot}, 6, 6, "", ""},
		{"pregated batch 2: the union", SchedulerConfig{Policy: Pregated, TopK: 2, Batch: 2, PregateDist: 1, Budget: 8 * schedSlot}, 8, 8, "", ""},
		{"pregated below", SchedulerConfig{Policy: Pregated, TopK: 2, PregateDist: 1, Budget: 3 * schedSlot},
			0, 0, "", "policy pregated needs at least 4 slots"},
		{"pregated without pre-gates", SchedulerConfig{Policy: Pregated, TopK: 2}, 0, 0, "", "needs a model with pre-gates"},
		{"speculative: two blocks' K", SchedulerConfig{Policy: Speculative, TopK: 2, Budget: 4 * schedSlot}, 4, 4, "", ""},
		{"speculative below", SchedulerConfig{Policy: Speculative, TopK: 2, Budget: 3 * schedSlot},
			0, 0, "", "policy speculative needs at least 4 slots"},
		{"auto with pre-gates", SchedulerConfig{Policy: Auto, TopK: 1, PregateDist: 1}, 12, 2, Pregated, ""},
		{"auto without", SchedulerConfig{Policy: Auto, TopK: 1}, 12, 2, Speculative, ""},
		{"lfu", SchedulerConfig{Policy: OnDemand, Cache: CacheLFU}, 12, 1, "", ""},
		{"lifo", SchedulerConfig{Policy: OnDemand, Cache: CacheLIFO}, 12, 1, "", ""},
		{"none", SchedulerConfig{Policy: OnDemand, Cache: CacheNone}, 12, 1, "", ""},
		{"negative", SchedulerConfig{Policy: OnDemand, Budget: -1}, 0, 0, "", "negative budget"},
		{"unknown policy", SchedulerConfig{Policy: "lru"}, 0, 0, "",
			`unknown policy "lru" (implemented: auto, resident, ondemand, prefetch-all, ring, pregated, speculative)`},
		{"no policy", SchedulerConfig{}, 0, 0, "", `unknown policy ""`},
		{"unknown cache", SchedulerConfig{Policy: OnDemand, Cache: "mru"}, 0, 0, "", `unknown cache policy "mru" (implemented: lru, lfu, lifo, none)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := NewPlan(lay, tc.cfg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("NewPlan = %v, %v; want an error containing %q", p, err, tc.wantErr)
				}
				if strings.Contains(tc.wantErr, "at least") && !errors.Is(err, ErrBudget) {
					t.Fatalf("%v does not wrap ErrBudget", err)
				}
				return
			}
			if err != nil || p.Slots != tc.wantSlots || p.SlotBytes != schedSlot {
				t.Fatalf("NewPlan = %+v, %v; want %d slots of %d bytes", p, err, tc.wantSlots, schedSlot)
			}
			if tc.wantMin != 0 && p.MinSlots != tc.wantMin {
				t.Fatalf("NewPlan = %+v: minimum %d slots, want %d", p, p.MinSlots, tc.wantMin)
			}
			if want := cmp.Or(tc.wantPolicy, tc.cfg.Policy); p.Policy != want {
				t.Fatalf("NewPlan = %+v: policy %s, want %s", p, p.Policy, want)
			}
		})
	}
	p, _ := NewPlan(lay, SchedulerConfig{Policy: OnDemand, TopK: 2, Budget: 3 * schedSlot})
	if got, want := p.String(), "ondemand/lru: 3 slots x 8 KiB = 24 KiB for 12 experts (25%; minimum 2 slots, 16 KiB)"; got != want {
		t.Fatalf("plan %q, want %q", got, want)
	}
	// Ring: K from the budget, the remainder unused.
	lay3 := writeSchedLayers(t, 3)
	p, _ = NewPlan(lay3, SchedulerConfig{Policy: Ring, TopK: 2, Cache: CacheNone, Budget: 17 * schedSlot})
	if got, want := p.String(), "ring/none: 12 slots x 8 KiB = 96 KiB for 18 experts (67%; minimum 12 slots, 96 KiB); ring of K=2 sections of 6 slots for 3 MoE layers"; got != want || p.Sections != 2 {
		t.Fatalf("plan %q, want %q", got, want)
	}
	if p, _ = NewPlan(lay3, SchedulerConfig{Policy: Ring, Budget: 18 * schedSlot}); p.Sections != 3 || p.Slots != 18 {
		t.Fatalf("ring with every expert: %v", p)
	}
}

// acquireStep is one Acquire of a scheduler table test: the experts asked
// for, the order Acquire leaves them in and how many it hands out. The
// step releases them before the next.
type acquireStep struct {
	layer     int
	experts   []int
	wantOrder []int // nil: unchanged
	wantN     int
}

func TestSchedulerAcquire(t *testing.T) {
	const padded = schedSlot
	for _, tc := range []struct {
		name  string
		cfg   SchedulerConfig
		steps []acquireStep
		want  Counts // Stall ignored
	}{
		{"ondemand 2 slots: miss, hit, lru eviction, turns", SchedulerConfig{Policy: OnDemand, TopK: 2, Budget: 2 * padded}, []acquireStep{
			{0, []int{1, 2}, nil, 2},               // 2 misses
			{0, []int{2, 3}, nil, 2},               // hit 2, miss 3 evicts 1 (released first)
			{0, []int{1, 2, 3}, []int{2, 3, 1}, 2}, // cached first: hits 2, 3
			{0, []int{1}, nil, 1},                  // miss, evicts 2
			{1, []int{1}, nil, 1},                  // other layer: another block, evicts 3
		}, Counts{Reads: 5, BytesRead: 5 * padded, Hits: 3, Misses: 5, Evictions: 3}},
		{"ondemand all slots: no eviction", SchedulerConfig{Policy: OnDemand, TopK: 2}, []acquireStep{
			{0, []int{0, 1, 2, 3, 4, 5}, nil, 6},
			{1, []int{5, 0}, nil, 2},
			{0, []int{5, 4, 3, 2, 1, 0}, nil, 6},
		}, Counts{Reads: 8, BytesRead: 8 * padded, Hits: 6, Misses: 8}},
		{"resident: everything read at open", SchedulerConfig{Policy: Resident}, []acquireStep{
			{0, []int{0, 1, 2, 3, 4, 5}, nil, 6},
			{1, []int{3}, nil, 1},
		}, Counts{Reads: 12, BytesRead: 12 * padded, Hits: 7, Misses: 12}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lay := writeSchedLayout(t)
			s := openSched(t, lay, nil, tc.cfg)
			w := make([]moe.ExpertWeights, schedExperts)
			for i, st := range tc.steps {
				experts := slices.Clone(st.experts)
				n, err := s.Acquire(context.Background(), st.layer, experts, w)
				if err != nil || n != st.wantN {
					t.Fatalf("step %d: Acquire = %d, %v; want %d", i, n, err, st.wantN)
				}
				if want := st.wantOrder; want != nil && !slices.Equal(experts, want) {
					t.Fatalf("step %d: experts left as %v, want %v", i, experts, want)
				}
				for j := range n {
					checkWeights(t, w[j], st.layer, experts[j])
				}
				s.Release(w[:n])
			}
			got := s.Stats().Snapshot()
			got.Stall, got.Busy, got.PeakInFlight = 0, 0, 0 // timings
			if got != tc.want {
				t.Fatalf("counts %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A failed read fails the Acquire, leaves no reference behind (Close
// checks) and is not cached: the next Acquire reads the block again.
func TestSchedulerReadFaults(t *testing.T) {
	for _, fault := range []Fault{FaultError, FaultShort} {
		for _, policy := range Policies {
			t.Run(fmt.Sprintf("%v/%s", fault, policy), func(t *testing.T) {
				lay := writeSchedLayout(t)
				fs, err := OpenFileStore(lay.Path)
				if err != nil {
					t.Fatal(err)
				}
				defer fs.Close()
				store := NewFaultStore(fs, fault, 2)
				if policy == Resident {
					// The second read of the load at open fails.
					_, err := NewScheduler(context.Background(), lay, store, SchedulerConfig{Policy: Resident})
					if !errors.Is(err, ErrInjected) {
						t.Fatalf("NewScheduler with a failing read: %v, want ErrInjected", err)
					}
					return
				}
				// Every policy at its minimum budget; the prefetching ones
				// read the next layer as well, after the failing read (one
				// read at a time, so the second read is the layer's own).
				cfg := SchedulerConfig{Policy: policy, TopK: 2, PregateDist: 1, Depth: 1}
				plan, err := NewPlan(lay, cfg)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Budget = int64(plan.MinSlots) * schedSlot
				s := openSched(t, lay, store, cfg)
				w := make([]moe.ExpertWeights, 2)
				experts := []int{4, 5}
				_, err = s.Acquire(context.Background(), 1, experts, w)
				if !errors.Is(err, ErrInjected) || (fault == FaultShort) != errors.Is(err, ErrShortRead) {
					t.Fatalf("Acquire with a failing read: %v", err)
				}
				if w[0].Ref != nil || w[1].Ref != nil {
					t.Fatal("a failed Acquire left references in w")
				}
				n, err := s.Acquire(context.Background(), 1, experts, w)
				if err != nil || n != 2 {
					t.Fatalf("Acquire after the fault: %d, %v", n, err)
				}
				checkWeights(t, w[0], 1, experts[0])
				checkWeights(t, w[1], 1, experts[1])
				s.Release(w[:n])
				s.reads.Wait()
				c := s.Stats().Snapshot()
				if c.ReadErrors != 1 || c.Reads != c.Misses+c.Prefetches-1 || c.Hits+c.Misses != 4 {
					t.Fatalf("counts %+v: want one failed read, a read per miss or prefetch, 4 experts acquired", c)
				}
				if policy == OnDemand && (c.Misses != 3 || c.Hits != 1) {
					t.Fatalf("counts %+v: want 3 misses (one failed read, one read again), 1 hit", c)
				}
			})
		}
	}
}

// Cancelling the context of an Acquire waiting for reads returns its error
// and leaks nothing.
func TestSchedulerCancel(t *testing.T) {
	lay := writeSchedLayout(t)
	fs, err := OpenFileStore(lay.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	s := openSched(t, lay, SlowStore{fs, time.Minute}, SchedulerConfig{Policy: OnDemand, TopK: 2, Depth: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	w := make([]moe.ExpertWeights, 3)
	if _, err := s.Acquire(ctx, 0, []int{0, 1, 2}, w); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire = %v, want the deadline's error", err)
	}
}

// Goroutines acquiring overlapping sets in turns through a pool smaller
// than their union all finish with the right bytes (run with -race).
func TestSchedulerConcurrent(t *testing.T) {
	lay := writeSchedLayout(t)
	s := openSched(t, lay, SlowStore{NewMemStore(mustRead(t, lay.Path)), 100 * time.Microsecond},
		SchedulerConfig{Policy: OnDemand, TopK: 2, Budget: 3 * schedSlot, Depth: 4})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			w := make([]moe.ExpertWeights, schedExperts)
			for range 40 {
				layer := rng.IntN(schedLayers)
				active := rng.Perm(schedExperts)[:1+rng.IntN(schedExperts)]
				for len(active) > 0 {
					n, err := s.Acquire(context.Background(), layer, active, w)
					if err != nil {
						errs <- err
						return
					}
					if err := acquiredBytes(w[:n], layer, active); err != nil {
						errs <- err
					}
					s.Release(w[:n])
					active = active[n:]
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c := s.Stats().Snapshot()
	if c.Reads != c.Misses || c.BytesRead != c.Reads*schedSlot || c.Hits == 0 {
		t.Fatalf("counts %+v: want a read of a whole slot per miss, and some hits", c)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
