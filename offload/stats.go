package offload

import (
	"sync/atomic"
	"time"
)

// Stats counts what the offload path did, for the per-run report. The
// Reader adds reads and bytes, the SlotPool hits, misses and evictions, and
// the scheduler its stall time. One Stats may be shared by several readers
// and pools; every method is safe for concurrent use.
type Stats struct {
	Reads      atomic.Int64 // reads completed without error
	BytesRead  atomic.Int64 // bytes of those reads
	ReadErrors atomic.Int64 // reads that failed or were cancelled
	Hits       atomic.Int64 // SlotPool.Acquire found the key cached
	Misses     atomic.Int64 // SlotPool.Acquire bound a slot to fill
	Evictions  atomic.Int64 // cached slots reused for another key
	StallNanos atomic.Int64 // time compute waited on the offload path, ns
}

// AddStall adds d to the stall time.
func (s *Stats) AddStall(d time.Duration) { s.StallNanos.Add(int64(d)) }

// Snapshot returns the counters' current values (each read atomically, not
// all at one instant).
func (s *Stats) Snapshot() Counts {
	return Counts{
		Reads:      s.Reads.Load(),
		BytesRead:  s.BytesRead.Load(),
		ReadErrors: s.ReadErrors.Load(),
		Hits:       s.Hits.Load(),
		Misses:     s.Misses.Load(),
		Evictions:  s.Evictions.Load(),
		Stall:      time.Duration(s.StallNanos.Load()),
	}
}

// Counts is a plain copy of Stats: what reports print and tests compare.
type Counts struct {
	Reads, BytesRead, ReadErrors int64
	Hits, Misses, Evictions      int64
	Stall                        time.Duration
}

// Sub returns c - o: the counts of the interval between snapshot o and c.
func (c Counts) Sub(o Counts) Counts {
	return Counts{
		Reads:      c.Reads - o.Reads,
		BytesRead:  c.BytesRead - o.BytesRead,
		ReadErrors: c.ReadErrors - o.ReadErrors,
		Hits:       c.Hits - o.Hits,
		Misses:     c.Misses - o.Misses,
		Evictions:  c.Evictions - o.Evictions,
		Stall:      c.Stall - o.Stall,
	}
}

// HitRate is Hits / (Hits + Misses), or 0 before any lookup.
func (c Counts) HitRate() float64 {
	if n := c.Hits + c.Misses; n > 0 {
		return float64(c.Hits) / float64(n)
	}
	return 0
}
