package offload

import (
	"container/list"
	"math"
)

// Evictor is a SlotPool's cache policy: of the slots holding a ready expert
// that nobody references (the candidates), which to keep and which to
// reuse first. The pool calls it under its lock, one call at a time, so an
// Evictor needs no locking of its own and must not call the pool. LRU,
// LIFO, LFU and NoCache implement it.
type Evictor interface {
	// Unused reports that slot, holding key, lost its last reference. It
	// returns true to keep the slot cached as a candidate, false to drop
	// it now (a policy that caches nothing).
	Unused(slot int, key Key) (keep bool)
	// Used reports that key was demanded and slot holds it: bound to key
	// for an Acquire that missed, or referenced again through its key (an
	// Acquire hit or a Lookup), whether or not it was a candidate; a
	// candidate stops being one. Frequency-based policies count these.
	Used(slot int, key Key)
	// Taken reports that slot, a candidate, was referenced by a fetch
	// ahead (the scheduler's, not a demand): it stops being a candidate
	// and no use is counted, so that a prefetch that turns out wrong does
	// not make an expert look popular.
	Taken(slot int)
	// Victim removes a candidate from the candidates and returns it: the
	// slot the pool reuses when none is free. ok is false when there is
	// no candidate.
	Victim() (slot int, ok bool)
}

// candidates is the candidate slots in the order they became unused
// (oldest first), with their keys: the state LRU, LIFO and LFU share.
type candidates struct {
	order *list.List            // of candidate, oldest first
	elems map[int]*list.Element // slot -> its element in order
}

type candidate struct {
	slot int
	key  Key
}

func newCandidates() candidates {
	return candidates{order: list.New(), elems: map[int]*list.Element{}}
}

// push makes slot the newest candidate.
func (c *candidates) push(slot int, key Key) {
	c.elems[slot] = c.order.PushBack(candidate{slot, key})
}

// remove drops slot from the candidates, if it is one.
func (c *candidates) remove(slot int) {
	if e, ok := c.elems[slot]; ok {
		c.order.Remove(e)
		delete(c.elems, slot)
	}
}

// take removes e's candidate and returns its slot.
func (c *candidates) take(e *list.Element) (int, bool) {
	if e == nil {
		return 0, false
	}
	slot := c.order.Remove(e).(candidate).slot
	delete(c.elems, slot)
	return slot, true
}

// LRU evicts the candidate unused the longest.
type LRU struct{ c candidates }

// NewLRU returns an empty LRU policy.
func NewLRU() *LRU { return &LRU{newCandidates()} }

// Unused makes slot the most recently used candidate.
func (l *LRU) Unused(slot int, key Key) bool {
	l.c.push(slot, key)
	return true
}

// Used removes slot from the candidates, if it is one.
func (l *LRU) Used(slot int, _ Key) { l.c.remove(slot) }

// Taken removes slot from the candidates.
func (l *LRU) Taken(slot int) { l.c.remove(slot) }

// Victim returns the least recently used candidate.
func (l *LRU) Victim() (int, bool) { return l.c.take(l.c.order.Front()) }

// LIFO evicts the candidate unused most recently: what a stack of slots
// does. It keeps the experts that were cached first (early layers, early
// tokens) and cycles the rest through one slot.
type LIFO struct{ c candidates }

// NewLIFO returns an empty LIFO policy.
func NewLIFO() *LIFO { return &LIFO{newCandidates()} }

// Unused pushes slot on the stack of candidates.
func (l *LIFO) Unused(slot int, key Key) bool {
	l.c.push(slot, key)
	return true
}

// Used removes slot from the candidates, if it is one.
func (l *LIFO) Used(slot int, _ Key) { l.c.remove(slot) }

// Taken removes slot from the candidates.
func (l *LIFO) Taken(slot int) { l.c.remove(slot) }

// Victim returns the candidate unused last.
func (l *LIFO) Victim() (int, bool) { return l.c.take(l.c.order.Back()) }

// DefaultLFUHalfLife is LFU's default decay: an expert's count halves every
// 4096 demands (of any expert), about a hundred tokens of a model with 32
// MoE layers, so the cache follows a prompt's topic without forgetting
// popular experts between two tokens.
const DefaultLFUHalfLife = 4096

// LFU evicts the candidate whose expert was demanded least often (Used),
// counting by key across evictions, with counts that decay: every
// HalfLife demands a count is worth half as much (SE-MoE's LFU with
// decay). Ties go to the candidate unused the longest.
type LFU struct {
	c        candidates
	halfLife float64 // demands; 0: no decay
	clock    int64   // demands so far
	freq     map[Key]lfuCount
}

// lfuCount is a key's count n as of demand number at.
type lfuCount struct {
	n  float64
	at int64
}

// NewLFU returns an empty LFU policy whose counts halve every halfLife
// demands; halfLife <= 0 turns decay off (plain LFU).
func NewLFU(halfLife int) *LFU {
	return &LFU{c: newCandidates(), halfLife: float64(max(halfLife, 0)), freq: map[Key]lfuCount{}}
}

// count is key's decayed count now.
func (l *LFU) count(key Key) float64 {
	f := l.freq[key]
	if l.halfLife == 0 || f.at == l.clock {
		return f.n
	}
	return f.n * math.Exp2(-float64(l.clock-f.at)/l.halfLife)
}

// Unused makes slot the newest candidate.
func (l *LFU) Unused(slot int, key Key) bool {
	l.c.push(slot, key)
	return true
}

// Used counts a demand of key and removes slot from the candidates.
func (l *LFU) Used(slot int, key Key) {
	l.clock++
	l.freq[key] = lfuCount{n: l.count(key) + 1, at: l.clock}
	l.c.remove(slot)
}

// Taken removes slot from the candidates without counting.
func (l *LFU) Taken(slot int) { l.c.remove(slot) }

// Victim returns the candidate with the lowest count, the oldest of equals:
// a scan of the candidates, which are at most the pool's slots.
func (l *LFU) Victim() (int, bool) {
	var best *list.Element
	var bestN float64
	for e := l.c.order.Front(); e != nil; e = e.Next() {
		if n := l.count(e.Value.(candidate).key); best == nil || n < bestN {
			best, bestN = e, n
		}
	}
	return l.c.take(best)
}

// NoCache keeps nothing beyond the working set: a slot is free as soon as
// its last reference goes, so every acquisition not fetched ahead reads.
type NoCache struct{}

// Unused declines to keep slot.
func (NoCache) Unused(int, Key) bool { return false }

// Used does nothing.
func (NoCache) Used(int, Key) {}

// Taken does nothing.
func (NoCache) Taken(int) {}

// Victim reports no candidate.
func (NoCache) Victim() (int, bool) { return 0, false }
