package offload

import "container/list"

// Evictor is a SlotPool's cache policy: of the slots holding a ready expert
// that nobody references (the candidates), which to keep and which to
// reuse first. The pool calls it under its lock, one call at a time, so an
// Evictor needs no locking of its own and must not call the pool. LRU is
// the example; other policies (LFU, LIFO, none) implement the same three
// methods.
type Evictor interface {
	// Unused reports that slot, holding key, lost its last reference. It
	// returns true to keep the slot cached as a candidate, false to drop
	// it now (a policy that caches nothing).
	Unused(slot int, key Key) (keep bool)
	// Used reports that slot, holding key, was referenced again through
	// its key (an Acquire hit or a Lookup), whether or not it was a
	// candidate; a candidate stops being one. Frequency-based policies
	// count these.
	Used(slot int, key Key)
	// Victim removes a candidate from the candidates and returns it: the
	// slot the pool reuses when none is free. ok is false when there is
	// no candidate.
	Victim() (slot int, ok bool)
}

// LRU evicts the candidate unused the longest.
type LRU struct {
	order *list.List            // of slot indices, least recently unused first
	elems map[int]*list.Element // slot -> its element in order
}

// NewLRU returns an empty LRU policy.
func NewLRU() *LRU { return &LRU{order: list.New(), elems: map[int]*list.Element{}} }

// Unused makes slot the most recently used candidate.
func (l *LRU) Unused(slot int, _ Key) bool {
	l.elems[slot] = l.order.PushBack(slot)
	return true
}

// Used removes slot from the candidates, if it is one.
func (l *LRU) Used(slot int, _ Key) {
	if e, ok := l.elems[slot]; ok {
		l.order.Remove(e)
		delete(l.elems, slot)
	}
}

// Victim returns the least recently used candidate.
func (l *LRU) Victim() (int, bool) {
	e := l.order.Front()
	if e == nil {
		return 0, false
	}
	slot := l.order.Remove(e).(int)
	delete(l.elems, slot)
	return slot, true
}
