package offload

import (
	"context"
	"fmt"
	"sync"
)

// StateCache is the RAM tier over a StateFile: up to Cap records held in
// Align-aligned buffers, an LFU policy with decay (a hit count per record
// in a hash table, kept across evictions, multiplied by Beta every Every
// ticks; the least-hit unreferenced record is evicted) and write-back (a
// record released dirty is queued for writing to the file at once, the
// update cycle's write-back; a dirty victim is written before its buffer
// is reused). Fetches ahead (Prefetch) run on background readers; Acquire
// waits only for records not yet read. Safe for concurrent use.
type StateCache struct {
	f     *StateFile
	cap   int
	beta  float64
	every int

	mu      sync.Mutex
	cond    *sync.Cond
	ents    map[int]*stateEntry
	hits    map[int]float64
	free    [][]byte
	nbuf    int
	ticks   int
	dropGen uint64
	err     error // first failed background write-back
	closed  bool
	stats   CacheStats

	ahead  chan aheadReq
	writes chan int
	wg     sync.WaitGroup
}

// CacheStats counts a StateCache's traffic.
type CacheStats struct {
	Hits, Misses    int64 // Acquires that found the record in RAM (or on its way), and that read it
	Blanks          int64 // AcquireBlanks (none reads: not hits or misses)
	Prefetches      int64 // reads started ahead
	Evictions       int64
	WriteBacks      int64 // records written to the file
	ReadBytes       int64 // file -> RAM
	WriteBytes      int64 // RAM -> file
	FailedWriteBack int64
}

// HitRate is Hits / (Hits + Misses), 0 with no Acquire.
func (c CacheStats) HitRate() float64 {
	if c.Hits+c.Misses == 0 {
		return 0
	}
	return float64(c.Hits) / float64(c.Hits+c.Misses)
}

type stateEntry struct {
	id       int
	buf      []byte
	pins     int
	ahead    bool // held by a fetch ahead not yet acquired
	aheadGen uint64
	loading  bool
	writing  bool
	dirty    bool
	err      error // of the read
	missed   bool  // read on demand (not a hit)
}

type aheadReq struct {
	id  int
	gen uint64
}

// StateCacheConfig sizes a StateCache.
type StateCacheConfig struct {
	Cap   int     // records held in RAM, >= 1
	Beta  float64 // LFU decay factor per period, in (0, 1]
	Every int     // ticks (optimizer steps) per decay, >= 1
	// Readers is the number of background reads ahead in flight (the
	// read queue depth), >= 1.
	Readers int
	// Writers is the number of background write-backs in flight (0: 1).
	Writers int
}

// NewStateCache starts the cache's background readers and writer over f.
func NewStateCache(f *StateFile, c StateCacheConfig) *StateCache {
	if c.Cap < 1 || c.Every < 1 || c.Readers < 1 || !(c.Beta > 0 && c.Beta <= 1) {
		panic(fmt.Sprintf("offload.NewStateCache: %+v", c))
	}
	s := &StateCache{f: f, cap: c.Cap, beta: c.Beta, every: c.Every, ents: map[int]*stateEntry{}, hits: map[int]float64{},
		ahead: make(chan aheadReq, 4*c.Cap), writes: make(chan int, 4*c.Cap)}
	s.cond = sync.NewCond(&s.mu)
	for range c.Readers {
		s.wg.Add(1)
		go s.reader()
	}
	for range max(c.Writers, 1) {
		s.wg.Add(1)
		go s.writer()
	}
	return s
}

// Stats returns the counts so far.
func (s *StateCache) Stats() CacheStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Tick ends an update cycle: every Every ticks the hit counts decay by Beta.
func (s *StateCache) Tick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ticks++
	if s.ticks%s.every == 0 {
		for k, v := range s.hits {
			s.hits[k] = v * s.beta
		}
	}
}

// Acquire returns record id's payload in RAM, referenced until Release: the
// caller may read and change it. It reads the record if it is neither
// cached nor on its way (a miss), evicting the least-hit unreferenced
// record (written back first if dirty).
func (s *StateCache) Acquire(ctx context.Context, id int) ([]byte, error) {
	return s.acquire(ctx, id, false)
}

// AcquireBlank is Acquire for a caller that overwrites the whole payload
// (and releases it dirty): a record not in RAM is not read from the file,
// and its buffer's payload is undefined until written.
func (s *StateCache) AcquireBlank(ctx context.Context, id int) ([]byte, error) {
	return s.acquire(ctx, id, true)
}

func (s *StateCache) acquire(ctx context.Context, id int, blank bool) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hits[id]++
	count := &s.stats.Hits
	if blank {
		count = &s.stats.Blanks // no read either way: not a hit or a miss
	}
	for {
		if s.closed {
			return nil, fmt.Errorf("offload: state cache: %w", ErrClosed)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e := s.ents[id]
		if e == nil {
			buf, err := s.buffer(ctx)
			if err != nil {
				return nil, err
			}
			if s.ents[id] != nil { // filled while buffer() waited
				s.free = append(s.free, buf)
				continue
			}
			e = &stateEntry{id: id, buf: buf, pins: 1, loading: !blank, missed: !blank}
			s.ents[id] = e
			if blank {
				*count++
				return s.f.Payload(buf), nil
			}
			s.stats.Misses++
			s.mu.Unlock()
			err = s.f.Read(ctx, buf, id)
			s.mu.Lock()
			e.loading = false
			s.cond.Broadcast()
			if err != nil {
				s.drop(e)
				return nil, err
			}
			s.stats.ReadBytes += int64(len(buf))
			return s.f.Payload(buf), nil
		}
		if e.loading || e.writing {
			s.cond.Wait()
			continue
		}
		if e.err != nil { // a failed read ahead
			if !blank {
				s.drop(e) // read again
				continue
			}
			e.err = nil // its buffer is as good as blank
		}
		e.ahead = false
		e.pins++
		*count++
		return s.f.Payload(e.buf), nil
	}
}

// Release drops a reference taken by Acquire; dirty marks the payload
// changed, which queues its write-back.
func (s *StateCache) Release(id int, dirty bool) {
	s.mu.Lock()
	e := s.ents[id]
	if e == nil || e.pins == 0 {
		s.mu.Unlock()
		panic(fmt.Sprintf("offload.StateCache: release of record %d not acquired", id))
	}
	e.pins--
	e.dirty = e.dirty || dirty
	if e.dirty && e.pins == 0 && !s.closed {
		select {
		case s.writes <- id:
		default: // the queue is full: eviction or Flush writes it
		}
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

// Prefetch asks for record id to be read ahead, tagged gen, without
// waiting: a background reader takes a buffer (evicting as Acquire does,
// never a referenced or fetched-ahead record) and reads it; the record is
// then held for an Acquire until DropAhead(gen). Skipped when nothing can
// be evicted or the queue is full.
func (s *StateCache) Prefetch(id int, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	select {
	case s.ahead <- aheadReq{id, gen}:
	default:
	}
}

// DropAhead releases the holds of fetches ahead tagged gen or earlier
// that no Acquire took, and cancels such requests not yet started.
func (s *StateCache) DropAhead(gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropGen = max(s.dropGen, gen)
	for _, e := range s.ents {
		if e.ahead && e.aheadGen <= gen {
			e.ahead = false
		}
	}
	s.cond.Broadcast()
}

func (s *StateCache) reader() {
	defer s.wg.Done()
	for r := range s.ahead {
		s.fetch(r)
	}
}

func (s *StateCache) fetch(r aheadReq) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var buf []byte
	for {
		if s.closed || r.gen <= s.dropGen {
			return
		}
		if e := s.ents[r.id]; e != nil {
			if !e.loading && !e.writing && e.err == nil && e.pins == 0 && !e.ahead {
				e.ahead, e.aheadGen = true, r.gen // keep it for its Acquire
			}
			return
		}
		var ok bool
		if buf, ok = s.tryBuffer(false); ok {
			break
		}
		// tryBuffer may have released the lock (a victim's write-back):
		// look again before waiting, so a Close or DropAhead broadcast in
		// that window is not missed.
		if s.closed || r.gen <= s.dropGen || s.err != nil || !s.canEvict() {
			return // closed, no longer wanted, write-backs failing, or every record in use or held ahead: skipped
		}
		// The least-hit record is being written back (the update cycle's
		// write-back, just queued) or read: wait for it rather than drop
		// the read ahead.
		s.cond.Wait()
	}
	if s.ents[r.id] != nil {
		s.free = append(s.free, buf)
		return
	}
	e := &stateEntry{id: r.id, buf: buf, loading: true, ahead: true, aheadGen: r.gen}
	s.ents[r.id] = e
	s.stats.Prefetches++
	s.mu.Unlock()
	err := s.f.Read(context.Background(), buf, r.id)
	s.mu.Lock()
	e.loading, e.err = false, err
	if err == nil {
		s.stats.ReadBytes += int64(len(buf))
	} else {
		e.ahead = false
	}
	s.cond.Broadcast()
}

// buffer returns a free buffer, allocating up to Cap, else evicting;
// it waits (releasing the lock) while every record is busy.
func (s *StateCache) buffer(ctx context.Context) ([]byte, error) {
	for {
		if buf, ok := s.tryBuffer(true); ok {
			return buf, nil
		}
		if s.closed {
			return nil, fmt.Errorf("offload: state cache: %w", ErrClosed)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if s.err != nil {
			return nil, fmt.Errorf("offload: state cache: write-back: %w", s.err)
		}
		busy := false
		for _, e := range s.ents {
			if e.loading || e.writing {
				busy = true
			}
		}
		if !busy {
			return nil, fmt.Errorf("offload: state cache: all %d records referenced: the cache is smaller than the working set", s.cap)
		}
		s.cond.Wait()
	}
}

// tryBuffer returns a buffer without waiting for a read or a reference:
// free, newly allocated, or a victim's (written back first, with the lock
// released, if dirty). A demand may evict records fetched ahead (a fetch
// ahead may not). Called with the lock held.
func (s *StateCache) tryBuffer(demand bool) ([]byte, bool) {
	for {
		if n := len(s.free); n > 0 {
			b := s.free[n-1]
			s.free = s.free[:n-1]
			return b, true
		}
		if s.nbuf < s.cap {
			s.nbuf++
			return AlignedBytes(s.f.SlotBytes()), true
		}
		v := s.victim(demand)
		if v == nil || v.writing {
			// The least-hit record is being written back: wait for it
			// rather than evict a hotter one (buffer waits while a write
			// is in flight; a fetch ahead is skipped).
			return nil, false
		}
		if v.dirty {
			if err := s.writeBack(v); err != nil {
				return nil, false
			}
			continue // the lock was released: look again
		}
		s.stats.Evictions++
		delete(s.ents, v.id)
		return v.buf, true
	}
}

// victim is the least-hit record nobody references or reads (clean before
// dirty on ties, then the lowest id: deterministic); held ahead ones only
// when ahead is true. It may be one being written back, which the caller
// waits for: the choice does not depend on the background writer's timing.
func (s *StateCache) victim(ahead bool) *stateEntry {
	var v *stateEntry
	for _, e := range s.ents {
		if e.pins > 0 || e.ahead && !ahead || e.loading {
			continue
		}
		if v == nil || s.hits[e.id] < s.hits[v.id] ||
			s.hits[e.id] == s.hits[v.id] && (!e.dirty && v.dirty || e.dirty == v.dirty && e.id < v.id) {
			v = e
		}
	}
	return v
}

// canEvict reports whether some record may become a victim for a read
// ahead: one nobody references or holds ahead (it may be loading or being
// written). Called with the lock held.
func (s *StateCache) canEvict() bool {
	for _, e := range s.ents {
		if e.pins == 0 && !e.ahead {
			return true
		}
	}
	return false
}

// writeBack writes e's payload to the file with the lock released; e
// stays in the cache (marked writing, so Acquire waits) until it is done.
func (s *StateCache) writeBack(e *stateEntry) error {
	e.writing = true
	s.mu.Unlock()
	err := s.f.Write(context.Background(), e.buf, e.id)
	s.mu.Lock()
	e.writing = false
	s.cond.Broadcast()
	if err != nil {
		s.stats.FailedWriteBack++
		if s.err == nil {
			s.err = err
		}
		return err
	}
	e.dirty = false
	s.stats.WriteBacks++
	s.stats.WriteBytes += int64(len(e.buf))
	return nil
}

func (s *StateCache) writer() {
	defer s.wg.Done()
	for id := range s.writes {
		s.mu.Lock()
		if e := s.ents[id]; e != nil && e.dirty && e.pins == 0 && !e.loading && !e.writing {
			s.writeBack(e) //nolint:errcheck // kept in s.err; the record stays dirty
		}
		s.mu.Unlock()
	}
}

// drop removes e (a failed read), returning its buffer.
func (s *StateCache) drop(e *stateEntry) {
	if s.ents[e.id] == e {
		delete(s.ents, e.id)
	}
	s.free = append(s.free, e.buf)
	s.cond.Broadcast()
}

// Flush writes every dirty record to the file (waiting for records in
// use) and returns the first write-back error since the last Flush.
func (s *StateCache) Flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var todo *stateEntry
		busy := false
		for _, e := range s.ents {
			switch {
			case e.loading || e.writing || (e.dirty && e.pins > 0):
				busy = true
			case e.dirty && todo == nil:
				todo = e
			}
		}
		if todo != nil {
			if err := s.writeBack(todo); err != nil {
				s.err = nil
				return err
			}
			continue
		}
		if busy {
			s.cond.Wait()
			continue
		}
		err := s.err
		s.err = nil
		return err
	}
}

// Dirty reports how many cached records are not yet written back.
func (s *StateCache) Dirty() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range s.ents {
		if e.dirty {
			n++
		}
	}
	return n
}

// Close stops the background goroutines. Write-backs already queued
// still run before it returns; records dirtied but not queued are not
// written: Flush first to keep every dirty record.
func (s *StateCache) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	close(s.ahead)
	close(s.writes)
	s.wg.Wait()
}
