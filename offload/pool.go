package offload

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"unsafe"
)

// Pool errors.
var (
	// ErrNoSlot: every slot is referenced or filling, and none is cached
	// unreferenced (TryAcquire).
	ErrNoSlot = errors.New("offload: no free slot")
	// ErrBusy: the pool cannot close while slots are referenced.
	ErrBusy = errors.New("offload: slots still referenced")
)

// Key names an expert block: what a slot holds.
type Key struct{ Layer, Expert int }

func (k Key) String() string { return fmt.Sprintf("layer %d expert %d", k.Layer, k.Expert) }

// PoolConfig sizes a SlotPool.
type PoolConfig struct {
	Slots     int     // slot count: the memory budget / SlotBytes
	SlotBytes int64   // bytes per slot, a multiple of Align: the largest block (Layout.SlotBytes)
	Evictor   Evictor // cache policy; nil: NewLRU()
	Memory    Memory  // where slots live; nil: HostMemory{}
	Stats     *Stats  // counts hits, misses and evictions; nil: the pool keeps its own
}

// SlotPool is the fast tier: a fixed number of equal, Align-aligned slots,
// each holding at most one expert block, found again by Key. Slots are
// reference counted: Acquire and Lookup return a slot with one reference
// that the caller gives back with Release. A slot nobody references that
// holds a ready block stays cached until its Evictor picks it for reuse.
// The pool is safe for concurrent use.
//
// A slot's life: free -> Acquire (miss) binds it to a key, filling -> the
// filler writes Bytes and calls Filled -> ready (Lookup and Acquire hits
// find it; Wait returns) -> last Release: cached (an eviction candidate)
// or, after a failed fill or when the Evictor declines to keep it, free.
type SlotPool struct {
	slotBytes int64
	mem       Memory
	region    []byte // every slot's memory; nil for memory the CPU cannot address
	slots     []Slot
	ev        Evictor
	stats     *Stats

	mu     sync.Mutex
	keys   map[Key]*Slot // bound slots: filling, ready or cached
	free   []int         // stack of free slot indices
	avail  chan struct{} // closed when a slot may have become available; nil without waiters
	closed bool
}

// slotState is where a slot is in its life.
type slotState uint8

const (
	slotFree slotState = iota
	slotFilling
	slotReady // filled, successfully or not (Slot.err)
)

// Slot is one slot of a SlotPool. Its methods are safe for concurrent use
// by the goroutines holding references to it.
type Slot struct {
	pool  *SlotPool
	index int
	buf   []byte

	// Under pool.mu.
	key       Key
	bound     bool // pool.keys[key] is this slot
	refs      int
	state     slotState
	candidate bool // handed to the Evictor as unused

	// Made when the slot is bound, closed by Filled; err is set before.
	ready chan struct{}
	err   error
}

// NewSlotPool allocates cfg.Slots slots of cfg.SlotBytes each.
func NewSlotPool(cfg PoolConfig) (*SlotPool, error) {
	if cfg.Slots < 1 || cfg.SlotBytes < Align || cfg.SlotBytes%Align != 0 {
		return nil, fmt.Errorf("offload: pool of %d slots of %d bytes: want >= 1 slot of a positive multiple of %d bytes", cfg.Slots, cfg.SlotBytes, Align)
	}
	if cfg.SlotBytes > math.MaxInt/int64(cfg.Slots) {
		return nil, fmt.Errorf("offload: pool of %d slots of %d bytes: too large", cfg.Slots, cfg.SlotBytes)
	}
	if cfg.Evictor == nil {
		cfg.Evictor = NewLRU()
	}
	if cfg.Memory == nil {
		cfg.Memory = HostMemory{}
	}
	if cfg.Stats == nil {
		cfg.Stats = new(Stats)
	}
	total := cfg.Slots * int(cfg.SlotBytes)
	region, err := cfg.Memory.Alloc(total)
	if err != nil {
		return nil, err
	}
	if at := unsafe.SliceData(region); region != nil && (len(region) != total || uintptr(unsafe.Pointer(at))%Align != 0) {
		cfg.Memory.Free(region)
		return nil, fmt.Errorf("offload: pool memory: got %d bytes at %p, want %d bytes on a %d-byte boundary", len(region), at, total, Align)
	}
	p := &SlotPool{
		slotBytes: cfg.SlotBytes, mem: cfg.Memory, region: region, ev: cfg.Evictor, stats: cfg.Stats,
		slots: make([]Slot, cfg.Slots), keys: map[Key]*Slot{}, free: make([]int, cfg.Slots),
	}
	sb := int(cfg.SlotBytes)
	for i := range p.slots {
		p.slots[i] = Slot{pool: p, index: i}
		if region != nil {
			p.slots[i].buf = region[i*sb : (i+1)*sb : (i+1)*sb]
		}
		p.free[i] = cfg.Slots - 1 - i // slot 0 is taken first
	}
	return p, nil
}

// Slots is the number of slots.
func (p *SlotPool) Slots() int { return len(p.slots) }

// SlotBytes is the size of each slot.
func (p *SlotPool) SlotBytes() int64 { return p.slotBytes }

// Stats returns the pool's counters.
func (p *SlotPool) Stats() *Stats { return p.stats }

// Acquire returns the slot for key with a reference, waiting for a slot to
// become free or evictable if need be. If key is cached (or being filled),
// cached is true and the caller Waits for the data. Otherwise the slot is
// newly bound to key and the caller is its filler: it writes the block into
// Bytes and calls Filled, holding its reference until then. Acquire counts
// a hit or a miss in Stats.
func (p *SlotPool) Acquire(ctx context.Context, key Key) (s *Slot, cached bool, err error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, false, fmt.Errorf("offload: acquire slot for %v: %w", key, err)
		}
		p.mu.Lock()
		s, cached, err = p.acquireLocked(key, false)
		if s != nil || err != nil {
			p.mu.Unlock()
			return s, cached, err
		}
		if p.avail == nil {
			p.avail = make(chan struct{})
		}
		avail := p.avail
		p.mu.Unlock()
		select {
		case <-avail:
		case <-ctx.Done():
		}
	}
}

// TryAcquire is Acquire without waiting: if no slot is free or evictable
// it fails with ErrNoSlot.
func (p *SlotPool) TryAcquire(key Key) (s *Slot, cached bool, err error) {
	return p.tryAcquire(key, false)
}

// tryAcquire is TryAcquire; ahead marks a fetch ahead of demand (the
// scheduler's prefetch): it counts a Prefetch instead of a miss and no hit,
// and tells the Evictor Taken instead of Used, so that hit rates and
// frequencies count only what compute asked for.
func (p *SlotPool) tryAcquire(key Key, ahead bool) (s *Slot, cached bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, cached, err = p.acquireLocked(key, ahead)
	if s == nil && err == nil {
		err = fmt.Errorf("offload: acquire slot for %v: %w", key, ErrNoSlot)
	}
	return s, cached, err
}

// acquireLocked is the attempt of Acquire (a demand, ahead false) or of a
// fetch ahead: a nil slot and error mean wait.
func (p *SlotPool) acquireLocked(key Key, ahead bool) (*Slot, bool, error) {
	if p.closed {
		return nil, false, fmt.Errorf("offload: acquire slot for %v: %w", key, ErrClosed)
	}
	if s, ok := p.keys[key]; ok {
		if ahead {
			if s.candidate {
				p.ev.Taken(s.index)
				s.candidate = false
			}
			s.refs++
		} else {
			p.hitLocked(s)
			p.stats.Hits.Add(1)
		}
		return s, true, nil
	}
	s := p.takeLocked()
	if s == nil {
		return nil, false, nil
	}
	s.key, s.bound, s.refs, s.state = key, true, 1, slotFilling
	s.ready, s.err = make(chan struct{}), nil
	p.keys[key] = s
	if ahead {
		p.stats.Prefetches.Add(1)
	} else {
		p.ev.Used(s.index, key)
		p.stats.Misses.Add(1)
	}
	return s, false, nil
}

// Lookup returns the slot bound to key with a reference, if any; it may
// still be filling (Wait for it). A probe: it counts no hit or miss.
func (p *SlotPool) Lookup(key Key) (*Slot, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.keys[key]
	if !ok || p.closed {
		return nil, false
	}
	p.hitLocked(s)
	return s, true
}

// inMemory reports whether key is bound to a slot: ready, or being filled
// (a failed fill unbinds it). A probe for ordering that takes no reference
// and tells the Evictor nothing.
func (p *SlotPool) inMemory(key Key) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.keys[key]
	return ok
}

// hitLocked adds a reference to a slot found by its key, telling the
// Evictor.
func (p *SlotPool) hitLocked(s *Slot) {
	p.ev.Used(s.index, s.key)
	s.candidate = false
	s.refs++
}

// takeLocked returns a free slot, else evicts the Evictor's victim, else
// returns nil.
func (p *SlotPool) takeLocked() *Slot {
	if n := len(p.free); n > 0 {
		i := p.free[n-1]
		p.free = p.free[:n-1]
		return &p.slots[i]
	}
	i, ok := p.ev.Victim()
	if !ok {
		return nil
	}
	if i < 0 || i >= len(p.slots) || !p.slots[i].candidate {
		panic(fmt.Sprintf("offload: Evictor %T chose slot %d, which is not an eviction candidate", p.ev, i))
	}
	s := &p.slots[i]
	s.candidate = false
	s.unbindLocked()
	p.stats.Evictions.Add(1)
	return s
}

// unbindLocked forgets the slot's key.
func (s *Slot) unbindLocked() {
	if s.bound {
		delete(s.pool.keys, s.key)
		s.bound = false
	}
}

// unusedLocked handles a ready slot's last release: cache it or free it.
func (p *SlotPool) unusedLocked(s *Slot) {
	if s.bound && p.ev.Unused(s.index, s.key) {
		s.candidate = true
	} else {
		s.unbindLocked()
		s.state = slotFree
		p.free = append(p.free, s.index)
	}
	if p.avail != nil {
		close(p.avail)
		p.avail = nil
	}
}

// Close frees the pool's memory. Every reference must have been released:
// under -tags invariants a remaining one (a leak) panics; otherwise Close
// fails with ErrBusy and keeps the memory, which a holder may still use.
// Later Acquires fail with ErrClosed. Closing twice is a no-op.
func (p *SlotPool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	var busy []string
	n := 0
	for i := range p.slots {
		if s := &p.slots[i]; s.refs > 0 || s.state == slotFilling {
			if n++; n <= 8 {
				busy = append(busy, fmt.Sprintf("slot %d (%v): %d references", i, s.key, s.refs))
			}
		}
	}
	if n > 0 {
		p.mu.Unlock()
		msg := fmt.Sprintf("%d of %d slots in use: %s", n, len(p.slots), strings.Join(busy, "; "))
		if invariants {
			panic("offload: SlotPool.Close with references not released (a leak): " + msg)
		}
		return fmt.Errorf("%w: %s", ErrBusy, msg)
	}
	p.closed = true
	if p.avail != nil {
		close(p.avail)
		p.avail = nil
	}
	region := p.region
	p.region = nil
	p.mu.Unlock()
	// Device memory has no region; the memory frees its own allocation.
	if _, device := p.mem.(DeviceMemory); region != nil || device {
		return p.mem.Free(region)
	}
	return nil
}

// Index is the slot's position in the pool, 0 <= Index < Slots: for a
// tier that keeps per-slot state (device buffers) beside the pool.
func (s *Slot) Index() int { return s.index }

// Key is the block the slot holds; valid while the caller holds a
// reference.
func (s *Slot) Key() Key { return s.key }

// Bytes is the slot's memory, SlotBytes long and Align-aligned (nil for
// memory the CPU cannot address). It stays valid while the caller holds a
// reference. Only the filler writes it, between Acquire and Filled; the
// other holders read it after Wait returns nil.
func (s *Slot) Bytes() []byte { return s.buf }

// Addr is the slot's device address when the pool's memory is a
// DeviceMemory, else 0.
func (s *Slot) Addr() uint64 {
	if dm, ok := s.pool.mem.(DeviceMemory); ok {
		return dm.Addr(int64(s.index) * s.pool.slotBytes)
	}
	return 0
}

// fill is the Request that fills the slot with blk: a read into Bytes, or,
// in device memory, the memory's Fill.
func (s *Slot) fill(blk Block) Request {
	dm, ok := s.pool.mem.(DeviceMemory)
	if !ok {
		return Request{Dst: s.buf[:blk.Padded()], Off: blk.Offset}
	}
	dst, off, n := int64(s.index)*s.pool.slotBytes, blk.Offset, int(blk.Padded())
	return Request{Off: off, Size: n, Fill: func(ctx context.Context, st Store) error { return dm.Fill(ctx, st, dst, off, n) }}
}

// Retain adds a reference; the caller must already hold one.
func (s *Slot) Retain() {
	p := s.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if invariants && s.refs <= 0 {
		panic(fmt.Sprintf("offload: Retain of slot %d (%v), which has no references", s.index, s.key))
	}
	if s.candidate { // only without the checks: a misuse, but keep the slot safe
		p.ev.Used(s.index, s.key)
		s.candidate = false
	}
	s.refs++
}

// Release drops a reference. The last one makes a ready slot cached (or
// free). Under -tags invariants releasing more than was acquired, or
// releasing a filling slot's last reference before Filled, panics.
func (s *Slot) Release() {
	p := s.pool
	p.mu.Lock()
	if s.refs <= 0 {
		p.mu.Unlock()
		if invariants {
			panic(fmt.Sprintf("offload: Release of slot %d (%v), which has no references: released twice?", s.index, s.key))
		}
		return // without the checks, a double release is ignored
	}
	s.refs--
	if s.refs == 0 {
		if s.state == slotFilling {
			p.mu.Unlock()
			if invariants {
				panic(fmt.Sprintf("offload: last Release of slot %d (%v) before Filled: the filler must hold its reference until it calls Filled", s.index, s.key))
			}
			return // Filled frees or caches it
		}
		p.unusedLocked(s)
	}
	p.mu.Unlock()
}

// Filled ends the fill of a slot from Acquire with cached false: nil if
// Bytes now holds the block, else the error, which unbinds the key (the
// next Acquire of it fills a fresh slot) and which Wait returns to every
// holder. It is called once, by the filler, before it releases its
// reference; it may be a Request's Done. Under -tags invariants a second
// call panics.
func (s *Slot) Filled(err error) {
	p := s.pool
	p.mu.Lock()
	if s.state != slotFilling {
		p.mu.Unlock()
		if invariants {
			panic(fmt.Sprintf("offload: Filled on slot %d (%v), which is not filling: filled twice?", s.index, s.key))
		}
		return
	}
	s.state = slotReady
	if err != nil {
		s.err = fmt.Errorf("offload: fill slot %d with %v: %w", s.index, s.key, err)
		s.unbindLocked()
	}
	close(s.ready)
	if s.refs == 0 {
		p.unusedLocked(s)
	}
	p.mu.Unlock()
}

// Wait waits until the slot is filled and returns the fill's error, or
// ctx's error if ctx ends first. The caller holds a reference.
func (s *Slot) Wait(ctx context.Context) error {
	select {
	case <-s.ready:
		return s.err
	case <-ctx.Done():
		return fmt.Errorf("offload: wait for slot %d (%v): %w", s.index, s.key, ctx.Err())
	}
}
