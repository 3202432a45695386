package offload

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// newTestPool returns a pool closed (and checked) at the end of the test.
func newTestPool(t *testing.T, cfg PoolConfig) *SlotPool {
	t.Helper()
	p, err := NewSlotPool(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// poolState prints which slot holds which expert ("0:e1* 1:e3", * for
// referenced), the free slots last.
func poolState(p *SlotPool) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var parts []string
	for i := range p.slots {
		s := &p.slots[i]
		if !s.bound {
			continue
		}
		ref := ""
		if s.refs > 0 {
			ref = "*"
		}
		parts = append(parts, fmt.Sprintf("%d:e%d%s", i, s.key.Expert, ref))
	}
	return strings.Join(parts, " ")
}

func TestPoolTable(t *testing.T) {
	// Steps on a 2-slot LRU pool, keys (0, expert):
	//   aN+  Acquire, want a miss (the test holds the slot and must fill it)
	//   aN=  Acquire, want a hit
	//   tN!  TryAcquire, want ErrNoSlot
	//   fN   Filled(nil)    xN  Filled(error)
	//   rN   Release one reference held on N
	//   lN=  Lookup hit     lN-  Lookup miss
	for _, tc := range []struct {
		name, steps, want string
		evictions         int64
	}{
		{"miss then hit", "a1+ f1 r1 a1= r1", "0:e1", 0},
		{"second slot", "a1+ f1 r1 a2+ f2 r2", "0:e1 1:e2", 0},
		{"lru evicts the least recently released", "a1+ f1 r1 a2+ f2 r2 a1= r1 a3+ f3 r3", "0:e1 1:e3", 1},
		{"referenced slots stay", "a1+ f1 a2+ f2 r2 a3+ t4! f3 r3 r1", "0:e1 1:e3", 1},
		{"all referenced", "a1+ a2+ t3! f1 f2 r1 r2", "0:e1 1:e2", 0},
		{"failed fill unbinds", "a1+ x1 l1- r1 a1+ f1 r1 l1= r1", "0:e1", 0},
		{"lookup pins a cached slot", "a1+ f1 r1 a2+ f2 r2 l1= a3+ f3 r3 r1", "0:e1 1:e3", 1},
		{"hit while filling", "a1+ a1= f1 r1 r1", "0:e1", 0},
		{"lookup of nothing", "l5-", "", 0},
		{"retain", "a1+ f1 R1 r1 a2+ t3! f2 r2 r1", "0:e1 1:e2", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPool(t, PoolConfig{Slots: 2, SlotBytes: Align})
			held := map[int][]*Slot{}
			var hits, misses int64
			for _, step := range strings.Fields(tc.steps) {
				op, rest := step[0], step[1:]
				want := byte(0)
				if c := rest[len(rest)-1]; c == '+' || c == '=' || c == '!' || c == '-' {
					want, rest = c, rest[:len(rest)-1]
				}
				e, err := strconv.Atoi(rest)
				if err != nil {
					t.Fatalf("bad step %q", step)
				}
				key := Key{0, e}
				switch op {
				case 'a':
					s, cached, err := p.Acquire(context.Background(), key)
					if err != nil || cached != (want == '=') || s.Key() != key {
						t.Fatalf("%s: Acquire = slot %v, cached %v, %v", step, s, cached, err)
					}
					if cached {
						hits++
					} else {
						misses++
					}
					held[e] = append(held[e], s)
				case 't':
					if s, _, err := p.TryAcquire(key); !errors.Is(err, ErrNoSlot) {
						t.Fatalf("%s: TryAcquire = %v, %v, want ErrNoSlot (state %s)", step, s, err, poolState(p))
					}
				case 'l':
					s, ok := p.Lookup(key)
					if ok != (want == '=') {
						t.Fatalf("%s: Lookup found %v (state %s)", step, ok, poolState(p))
					}
					if ok {
						held[e] = append(held[e], s)
					}
				case 'f', 'x':
					var err error
					if op == 'x' {
						err = ErrInjected
					}
					held[e][0].Filled(err)
					if got := held[e][0].Wait(context.Background()); !errors.Is(got, err) || (err == nil) != (got == nil) {
						t.Fatalf("%s: Wait = %v", step, got)
					}
				case 'R':
					held[e][0].Retain()
					held[e] = append(held[e], held[e][0])
				case 'r':
					n := len(held[e])
					held[e][n-1].Release()
					held[e] = held[e][:n-1]
				default:
					t.Fatalf("bad step %q", step)
				}
			}
			if got := poolState(p); got != tc.want {
				t.Fatalf("state %q, want %q", got, tc.want)
			}
			c := p.Stats().Snapshot()
			if c.Hits != hits || c.Misses != misses || c.Evictions != tc.evictions {
				t.Fatalf("counts %+v, want %d hits, %d misses, %d evictions", c, hits, misses, tc.evictions)
			}
		})
	}
}

func TestPoolConfig(t *testing.T) {
	for _, cfg := range []PoolConfig{
		{Slots: 0, SlotBytes: Align},
		{Slots: 1, SlotBytes: 0},
		{Slots: 1, SlotBytes: Align + 1},
		{Slots: 1 << 40, SlotBytes: 1 << 30},
	} {
		if _, err := NewSlotPool(cfg); err == nil || !strings.HasPrefix(err.Error(), "offload: pool") {
			t.Errorf("NewSlotPool(%+v) = %v, want an error", cfg, err)
		}
	}
}

func TestPoolSlotMemory(t *testing.T) {
	p := newTestPool(t, PoolConfig{Slots: 3, SlotBytes: 2 * Align})
	if p.Slots() != 3 || p.SlotBytes() != 2*Align {
		t.Fatalf("%d slots of %d bytes", p.Slots(), p.SlotBytes())
	}
	seen := map[uintptr]bool{}
	for e := range 3 {
		s, _, err := p.TryAcquire(Key{0, e})
		if err != nil {
			t.Fatal(err)
		}
		b := s.Bytes()
		at := uintptr(unsafe.Pointer(&b[0]))
		if len(b) != 2*Align || cap(b) != 2*Align || at%Align != 0 || seen[at] || s.Index() != e {
			t.Fatalf("slot %d: %d bytes (cap %d) at %#x", s.Index(), len(b), cap(b), at)
		}
		seen[at] = true
		b[len(b)-1] = 1 // writable
		s.Filled(nil)
		s.Release()
	}
}

// fakeMemory is a Memory that counts its calls; with host false it
// allocates nothing, as a device tier would.
type fakeMemory struct {
	host          bool
	skew          int // bytes to misalign the region by
	allocs, frees int
}

func (m *fakeMemory) Alloc(n int) ([]byte, error) {
	m.allocs++
	if !m.host {
		return nil, nil
	}
	return alignedBuf(n + m.skew)[m.skew:], nil
}

func (m *fakeMemory) Free([]byte) error {
	m.frees++
	return nil
}

func TestPoolMemory(t *testing.T) {
	m := &fakeMemory{host: true}
	p, err := NewSlotPool(PoolConfig{Slots: 2, SlotBytes: Align, Memory: m})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil || m.allocs != 1 || m.frees != 1 {
		t.Fatalf("Close: %v; %d allocs, %d frees", err, m.allocs, m.frees)
	}
	if err := p.Close(); err != nil || m.frees != 1 {
		t.Fatalf("second Close: %v; %d frees", err, m.frees)
	}
	if _, _, err := p.TryAcquire(Key{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("TryAcquire after Close: %v", err)
	}
	if _, _, err := p.Acquire(context.Background(), Key{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Acquire after Close: %v", err)
	}

	// Memory the CPU does not address: bookkeeping only.
	m = &fakeMemory{}
	p = newTestPool(t, PoolConfig{Slots: 2, SlotBytes: Align, Memory: m})
	s, _, err := p.TryAcquire(Key{1, 2})
	if err != nil || s.Bytes() != nil {
		t.Fatalf("device-like pool: %v, %d bytes", err, len(s.Bytes()))
	}
	s.Filled(nil)
	s.Release()

	// Misaligned memory is refused and given back.
	m = &fakeMemory{host: true, skew: 512}
	if _, err := NewSlotPool(PoolConfig{Slots: 2, SlotBytes: Align, Memory: m}); err == nil || m.frees != 1 {
		t.Fatalf("misaligned memory: %v, %d frees", err, m.frees)
	}
}

// keepNothing is an Evictor that caches nothing: a released slot is free.
type keepNothing struct{}

func (keepNothing) Unused(int, Key) bool { return false }
func (keepNothing) Used(int, Key)        {}
func (keepNothing) Taken(int)            {}
func (keepNothing) Victim() (int, bool)  { return 0, false }

func TestPoolEvictorDeclines(t *testing.T) {
	p := newTestPool(t, PoolConfig{Slots: 1, SlotBytes: Align, Evictor: keepNothing{}})
	s, _, _ := p.TryAcquire(Key{0, 1})
	s.Filled(nil)
	if _, ok := p.Lookup(Key{0, 1}); !ok {
		t.Fatal("a referenced slot is not found")
	}
	s.Release()
	s.Release()
	if _, ok := p.Lookup(Key{0, 1}); ok {
		t.Fatal("found a slot the evictor declined to keep")
	}
	s, cached, err := p.TryAcquire(Key{0, 2})
	if err != nil || cached {
		t.Fatalf("TryAcquire: %v, cached %v", err, cached)
	}
	s.Filled(nil)
	s.Release()
}

// TestPoolAcquireWaits: Acquire waits for a slot to be released, or for
// its ctx.
func TestPoolAcquireWaits(t *testing.T) {
	p := newTestPool(t, PoolConfig{Slots: 1, SlotBytes: Align})
	s, _, _ := p.TryAcquire(Key{0, 1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if _, _, err := p.Acquire(ctx, Key{0, 2}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire with every slot held: %v", err)
	}
	got := make(chan *Slot)
	go func() {
		s2, _, err := p.Acquire(context.Background(), Key{0, 2})
		if err != nil {
			t.Error(err)
		}
		got <- s2
	}()
	select {
	case <-got:
		t.Fatal("Acquire returned while the only slot is held")
	case <-time.After(10 * time.Millisecond):
	}
	s.Filled(nil)
	s.Release()
	s2 := <-got
	if s2 != s || s2.Key() != (Key{0, 2}) {
		t.Fatalf("got slot %d for %v", s2.Index(), s2.Key())
	}
	s2.Filled(nil)
	s2.Release()
	if c := p.Stats().Snapshot(); c.Evictions != 1 || c.Misses != 2 {
		t.Fatalf("counts %+v", c)
	}
}

// TestPoolWaitFill: holders of a filling slot wait for the filler and get
// its error.
func TestPoolWaitFill(t *testing.T) {
	p := newTestPool(t, PoolConfig{Slots: 1, SlotBytes: Align})
	for e, fillErr := range []error{nil, ErrInjected} {
		filler, cached, err := p.TryAcquire(Key{0, e})
		if err != nil || cached {
			t.Fatalf("TryAcquire: cached %v, %v", cached, err)
		}
		var wg sync.WaitGroup
		for range 3 {
			s, cached, err := p.Acquire(context.Background(), Key{0, e})
			if err != nil || !cached {
				t.Fatalf("Acquire of a filling key: cached %v, %v", cached, err)
			}
			wg.Go(func() {
				defer s.Release()
				if err := s.Wait(context.Background()); !errors.Is(err, fillErr) || (fillErr == nil) != (err == nil) {
					t.Errorf("Wait = %v, want %v", err, fillErr)
				}
			})
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		if err := filler.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait before the fill: %v", err)
		}
		cancel()
		filler.Filled(fillErr)
		filler.Release()
		wg.Wait()
	}
	if got := poolState(p); got != "" {
		t.Fatalf("after a failed fill the pool holds %q", got)
	}
}

// TestPoolConcurrent: goroutines acquire random experts from a small pool,
// fill misses through a Reader, and check the bytes of hits.
func TestPoolConcurrent(t *testing.T) {
	const experts, slots, workers, iters = 12, 4, 8, 300
	data := make([]byte, experts*Align)
	for e := range experts {
		for i := range Align {
			data[e*Align+i] = byte(e*31 + i)
		}
	}
	stats := new(Stats)
	r := NewReader(NewMemStore(data), ReaderConfig{Depth: 3, Stats: stats})
	defer r.Close()
	p := newTestPool(t, PoolConfig{Slots: slots, SlotBytes: Align, Stats: stats})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range iters {
				e := rng.IntN(experts)
				s, cached, err := p.Acquire(context.Background(), Key{0, e})
				if err != nil {
					t.Error(err)
					return
				}
				if !cached {
					r.Submit(context.Background(), Request{Dst: s.Bytes(), Off: int64(e * Align), Done: s.Filled})
				}
				if err := s.Wait(context.Background()); err != nil {
					t.Error(err)
				} else if b := s.Bytes(); b[0] != byte(e*31) || b[Align-1] != byte(e*31+Align-1) {
					t.Errorf("slot %d for expert %d holds expert data %d", s.Index(), e, b[0])
				}
				s.Release()
			}
		})
	}
	wg.Wait()
	c := stats.Snapshot()
	if c.Hits+c.Misses != workers*iters || c.Reads != c.Misses || c.Misses < experts {
		t.Fatalf("counts %+v", c)
	}
	t.Logf("hit rate %.2f, %d evictions", c.HitRate(), c.Evictions)
}

// logEvictor is an LRU that logs the pool's calls.
type logEvictor struct {
	*LRU
	log []string
}

func (l *logEvictor) Unused(slot int, key Key) bool {
	l.log = append(l.log, fmt.Sprintf("unused %d e%d", slot, key.Expert))
	return l.LRU.Unused(slot, key)
}

func (l *logEvictor) Used(slot int, key Key) {
	l.log = append(l.log, fmt.Sprintf("used %d e%d", slot, key.Expert))
	l.LRU.Used(slot, key)
}

func (l *logEvictor) Taken(slot int) {
	l.log = append(l.log, fmt.Sprintf("taken %d", slot))
	l.LRU.Taken(slot)
}

func (l *logEvictor) Victim() (int, bool) {
	slot, ok := l.LRU.Victim()
	l.log = append(l.log, fmt.Sprintf("victim %d %v", slot, ok))
	return slot, ok
}

// TestPoolEvictorCalls: the Evictor hears of every last release, every
// demand by key (a slot bound for it, a hit, a Lookup), every fetch ahead
// of a candidate (Taken, not a use), and is asked for a victim only when
// no slot is free. Fetches ahead count Prefetches, neither hits nor misses.
func TestPoolEvictorCalls(t *testing.T) {
	ev := &logEvictor{LRU: NewLRU()}
	p := newTestPool(t, PoolConfig{Slots: 1, SlotBytes: Align, Evictor: ev})
	s, _, _ := p.TryAcquire(Key{0, 1}) // free slot: used
	s.Filled(nil)
	s.Release()
	s, _ = p.Lookup(Key{0, 1})
	s.Retain() // no call
	s.Release()
	s.Release()
	s, cached, _ := p.tryAcquire(Key{0, 1}, true) // ahead, a candidate: taken
	if !cached {
		t.Fatal("fetch ahead of a cached key: not cached")
	}
	s.Release()
	s, _, _ = p.TryAcquire(Key{0, 2})
	s.Filled(ErrInjected) // failed: the slot is freed, not offered
	s.Release()
	s, _, _ = p.tryAcquire(Key{0, 4}, true) // ahead, free slot: no call
	s.Filled(nil)
	s.Release()
	s, _, err := p.TryAcquire(Key{0, 3})
	if err != nil {
		t.Fatal(err)
	}
	want := "used 0 e1, unused 0 e1, used 0 e1, unused 0 e1, taken 0, unused 0 e1, victim 0 true, used 0 e2, unused 0 e4, victim 0 true, used 0 e3"
	if got := strings.Join(ev.log, ", "); got != want {
		t.Fatalf("calls %q, want %q", got, want)
	}
	s.Filled(nil)
	s.Release()
	if c := p.Stats().Snapshot(); c.Hits != 0 || c.Misses != 2+1 || c.Prefetches != 1 || c.Evictions != 2 {
		t.Fatalf("counts %+v: want the misses of e1, e2, e3, one prefetch (e4), two evictions", c)
	}
}
