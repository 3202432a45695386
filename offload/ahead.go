package offload

import (
	"context"
	"slices"

	"github.com/moesys/moesys/moe"
)

// Fetching ahead: what the prefetching policies (PrefetchAll, Ring,
// Pregated, Speculative) add to the Scheduler. A fetch ahead takes a slot
// without waiting (SlotPool.tryAcquire with ahead set: no slot, no fetch),
// starts its read if the expert is not already in memory, and keeps the
// reference in Scheduler.ahead until
//
//   - the layer's Acquire has taken its own reference (consumeAhead), or
//   - the layer's Acquire did not ask for the expert (settleAhead: a
//     misprediction, or the part of a whole layer the routing skipped), or
//   - a demand found no slot free (dropAhead: fetches ahead never starve
//     compute), or Close.
//
// Dropping the reference of a slot whose read is still running is
// deferred to the read's end (aheadRef.drop), so the slot is never
// unreferenced while it is being filled. A failed read drops its
// reference: the expert's later Acquire reads it again and the error, if
// it persists, is that Acquire's.

// aheadRef is the scheduler's reference on a slot it fetched ahead.
type aheadRef struct {
	slot *Slot
	// Under Scheduler.mu.
	filling bool // our read has not ended
	drop    bool // no longer in Scheduler.ahead: release when the read ends
}

// layerHint is a layer's last Prefetch hint and the predictor's counts.
type layerHint struct {
	named []bool // by expert: named by the last hint, not yet acquired
	pred  Prediction
}

// Prediction is the predictor's record for one layer: how many experts its
// Prefetch hints named, how many of the experts the layer then acquired
// were named (Used) and how many were not (Unpredicted). Precision is
// Used / Predicted, recall Used / (Used + Unpredicted).
type Prediction struct {
	Layer                        int
	Predicted, Used, Unpredicted int64
}

var _ moe.Speculator = (*Scheduler)(nil)

// WantsPrediction implements moe.Speculator: the Speculative policy asks
// the model to predict the next MoE layer's experts with that layer's
// router and pass them to Prefetch.
func (s *Scheduler) WantsPrediction() bool { return s.plan.Policy == Speculative }

// Prefetch implements moe.Prefetcher: under Pregated and Speculative it
// starts reading experts of layer that are not in memory, without waiting
// for slots (with none free it skips the rest: Acquire reads them on
// demand), and records the hint for the predictor's counts. The other
// policies ignore hints. Reads run under ctx.
func (s *Scheduler) Prefetch(ctx context.Context, layer int, experts []int) {
	if !s.plan.Policy.takesHints() || layer < 0 || layer >= len(s.byLayer) || s.byLayer[layer] == nil {
		return
	}
	var reqs []Request
	s.mu.Lock()
	h := s.hintLocked(layer)
	clear(h.named)
	for _, e := range experts {
		if e < 0 || e >= len(h.named) || h.named[e] {
			continue
		}
		h.named[e] = true
		h.pred.Predicted++
		s.stats.Predicted.Add(1)
		if r, ok := s.fetchAheadLocked(Key{layer, e}); ok {
			reqs = append(reqs, r)
		}
	}
	s.mu.Unlock()
	s.submitAhead(ctx, reqs)
}

// hintLocked returns layer's hint record, made on first use.
func (s *Scheduler) hintLocked(layer int) *layerHint {
	h := s.hints[layer]
	if h == nil {
		es := s.byLayer[layer]
		h = &layerHint{named: make([]bool, es[len(es)-1]+1), pred: Prediction{Layer: layer}}
		s.hints[layer] = h
	}
	return h
}

// Predictions returns the predictor's counts of every layer that received
// a hint, in layer order: for the per-run report (the totals are in Stats).
func (s *Scheduler) Predictions() []Prediction {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ps []Prediction
	for _, h := range s.hints {
		if h != nil {
			ps = append(ps, h.pred)
		}
	}
	return ps
}

// fetchAheadLocked takes a reference on a slot for key, if one is free or
// evictable or key is already in one, and keeps it in s.ahead. It returns
// the read to submit (after s.mu is released: a closed reader calls Done
// at once) when the slot must be filled.
func (s *Scheduler) fetchAheadLocked(key Key) (Request, bool) {
	if _, ok := s.ahead[key]; ok {
		return Request{}, false
	}
	x, ok := s.experts[key]
	if !ok {
		return Request{}, false
	}
	slot, cached, err := s.pool.tryAcquire(key, true)
	if err != nil {
		return Request{}, false // no slot (or closed): Acquire reads on demand
	}
	a := &aheadRef{slot: slot, filling: !cached}
	s.ahead[key] = a
	if cached {
		return Request{}, false
	}
	s.reads.Add(1)
	req := slot.fill(x.blk)
	req.Ahead = true
	req.Done = func(err error) {
		slot.Filled(err)
		s.aheadDone(key, a, err)
	}
	return req, true
}

// submitAhead issues the reads of fetches ahead.
func (s *Scheduler) submitAhead(ctx context.Context, reqs []Request) {
	for _, r := range reqs {
		s.reader.Submit(ctx, r)
	}
}

// aheadDone ends a fetch ahead's read: the reference goes if it was
// dropped meanwhile, or if the read failed.
func (s *Scheduler) aheadDone(key Key, a *aheadRef, err error) {
	s.mu.Lock()
	a.filling = false
	release := a.drop
	if err != nil && !a.drop {
		delete(s.ahead, key) // a is s.ahead[key]: only unaheadLocked removes it, setting drop
		release = true
	}
	s.mu.Unlock()
	if release {
		a.slot.Release()
	}
	s.reads.Done()
}

// unaheadLocked removes key's fetch ahead, releasing its reference now or,
// while its read runs, when the read ends.
func (s *Scheduler) unaheadLocked(key Key) {
	a, ok := s.ahead[key]
	if !ok {
		return
	}
	delete(s.ahead, key)
	if a.filling {
		a.drop = true
		return
	}
	a.slot.Release()
}

// settleAhead is the start of layer's Acquire: the experts fetched ahead
// for layer that the caller does not ask for are dropped (they stay cached
// as the Cache says). Callers that take turns ask for all the rest on each
// turn, so nothing they will ask for is dropped.
func (s *Scheduler) settleAhead(layer int, experts []int) {
	if layer < 0 || layer >= len(s.byLayer) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ahead) == 0 {
		return
	}
	for _, e := range s.byLayer[layer] {
		if key := (Key{layer, e}); s.ahead[key] != nil && !slices.Contains(experts, e) {
			s.unaheadLocked(key)
		}
	}
}

// consumeAhead follows layer's Acquire of acquired, which now holds its
// own references: the scheduler's fetched-ahead ones go, and the hint's
// hits and misses are counted.
func (s *Scheduler) consumeAhead(layer int, acquired []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var h *layerHint
	if layer >= 0 && layer < len(s.hints) {
		h = s.hints[layer]
	}
	for _, e := range acquired {
		s.unaheadLocked(Key{layer, e})
		if h == nil {
			continue
		}
		if e < len(h.named) && h.named[e] {
			h.named[e] = false
			h.pred.Used++
			s.stats.PredictedUsed.Add(1)
		} else {
			h.pred.Unpredicted++
			s.stats.Unpredicted.Add(1)
		}
	}
}

// dropAhead drops every fetch ahead except layer's (all for layer -1).
func (s *Scheduler) dropAhead(layer int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key := range s.ahead {
		if key.Layer != layer {
			s.unaheadLocked(key)
		}
	}
}

// fetchLayersAhead fetches every expert of the n MoE layers after layer,
// nearest first, wrapping from the last MoE layer to the first (the next
// token's): PrefetchAll's next layer, Ring's next K-1.
func (s *Scheduler) fetchLayersAhead(ctx context.Context, layer, n int) {
	if layer < 0 || layer >= len(s.at) || s.at[layer] < 0 {
		return
	}
	var reqs []Request
	s.mu.Lock()
	for i := 1; i <= n && i < len(s.order); i++ {
		next := s.order[(s.at[layer]+i)%len(s.order)]
		for _, e := range s.byLayer[next] {
			if r, ok := s.fetchAheadLocked(Key{next, e}); ok {
				reqs = append(reqs, r)
			}
		}
	}
	s.mu.Unlock()
	s.submitAhead(ctx, reqs)
}
