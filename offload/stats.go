package offload

import (
	"sync/atomic"
	"time"
)

// Stats counts what the offload path did, for the per-run report. The
// Reader adds reads and bytes, the SlotPool hits, misses, fetches ahead and
// evictions, and the scheduler its stall time and the predictor's counts.
// One Stats may be shared by several readers and pools; every method is
// safe for concurrent use.
//
// Hits + Misses is the number of experts acquired: an expert fetched ahead
// and then acquired is a hit (its read is one of Prefetches), so Reads is
// Misses + Prefetches less the reads that failed.
type Stats struct {
	Reads      atomic.Int64 // reads completed without error
	BytesRead  atomic.Int64 // bytes of those reads
	ReadErrors atomic.Int64 // reads that failed or were cancelled
	Hits       atomic.Int64 // SlotPool.Acquire found the key cached (or being fetched)
	Misses     atomic.Int64 // SlotPool.Acquire bound a slot to fill
	Prefetches atomic.Int64 // slots bound to fill ahead of an Acquire (a fetch ahead)
	Evictions  atomic.Int64 // cached slots reused for another key
	StallNanos atomic.Int64 // time compute waited on the offload path, ns
	// The slow tier's load as the Reader saw it: the time at least one
	// read was in flight (ns), and the most reads in flight at once.
	BusyNanos    atomic.Int64
	PeakInFlight atomic.Int64

	// The predictor (Prefetch hints: a pre-gate's exact experts or a
	// speculative prediction), counted per expert of a hinted layer.
	Predicted     atomic.Int64 // experts named by hints
	PredictedUsed atomic.Int64 // acquired experts the layer's last hint named
	Unpredicted   atomic.Int64 // acquired experts of a hinted layer its last hint missed
}

// peakInFlight raises PeakInFlight to n.
func (s *Stats) peakInFlight(n int64) {
	for {
		p := s.PeakInFlight.Load()
		if n <= p || s.PeakInFlight.CompareAndSwap(p, n) {
			return
		}
	}
}

// AddStall adds d to the stall time.
func (s *Stats) AddStall(d time.Duration) { s.StallNanos.Add(int64(d)) }

// Snapshot returns the counters' current values (each read atomically, not
// all at one instant).
func (s *Stats) Snapshot() Counts {
	return Counts{
		Reads:        s.Reads.Load(),
		BytesRead:    s.BytesRead.Load(),
		ReadErrors:   s.ReadErrors.Load(),
		Hits:         s.Hits.Load(),
		Misses:       s.Misses.Load(),
		Prefetches:   s.Prefetches.Load(),
		Evictions:    s.Evictions.Load(),
		Stall:        time.Duration(s.StallNanos.Load()),
		Busy:         time.Duration(s.BusyNanos.Load()),
		PeakInFlight: s.PeakInFlight.Load(),

		Predicted:     s.Predicted.Load(),
		PredictedUsed: s.PredictedUsed.Load(),
		Unpredicted:   s.Unpredicted.Load(),
	}
}

// Counts is a plain copy of Stats: what reports print and tests compare.
type Counts struct {
	Reads, BytesRead, ReadErrors        int64
	Hits, Misses, Prefetches, Evictions int64
	Stall                               time.Duration
	Busy                                time.Duration // at least one read in flight
	PeakInFlight                        int64         // the most reads in flight at once (not an interval's: Sub keeps c's)

	Predicted, PredictedUsed, Unpredicted int64
}

// Sub returns c - o: the counts of the interval between snapshot o and c.
func (c Counts) Sub(o Counts) Counts {
	return Counts{
		Reads:        c.Reads - o.Reads,
		BytesRead:    c.BytesRead - o.BytesRead,
		ReadErrors:   c.ReadErrors - o.ReadErrors,
		Hits:         c.Hits - o.Hits,
		Misses:       c.Misses - o.Misses,
		Prefetches:   c.Prefetches - o.Prefetches,
		Evictions:    c.Evictions - o.Evictions,
		Stall:        c.Stall - o.Stall,
		Busy:         c.Busy - o.Busy,
		PeakInFlight: c.PeakInFlight,

		Predicted:     c.Predicted - o.Predicted,
		PredictedUsed: c.PredictedUsed - o.PredictedUsed,
		Unpredicted:   c.Unpredicted - o.Unpredicted,
	}
}

// HitRate is Hits / (Hits + Misses), or 0 before any lookup.
func (c Counts) HitRate() float64 {
	if n := c.Hits + c.Misses; n > 0 {
		return float64(c.Hits) / float64(n)
	}
	return 0
}

// Precision is the share of hinted experts that were then acquired:
// PredictedUsed / Predicted, or 0 before any hint. Exact for pre-gates (1
// unless batches take turns or passes run concurrently).
func (c Counts) Precision() float64 {
	if c.Predicted > 0 {
		return float64(c.PredictedUsed) / float64(c.Predicted)
	}
	return 0
}

// Recall is the share of a hinted layer's acquired experts that its hint
// named: PredictedUsed / (PredictedUsed + Unpredicted), or 0 before any.
func (c Counts) Recall() float64 {
	if n := c.PredictedUsed + c.Unpredicted; n > 0 {
		return float64(c.PredictedUsed) / float64(n)
	}
	return 0
}
