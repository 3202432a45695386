// Package offload holds expert weights outside the compute tier and moves
// them in on demand, so a Mixture-of-Experts model whose experts exceed the
// memory budget can still be served. The package knows nothing of models:
// callers name blocks by (layer, expert), and the only model-side types it
// uses are package moe's ExpertSource and ExpertWeights, which it
// implements. Its parts, slow tier to fast:
//
//   - Layout (layout.go): the on-disk format `moesys convert` writes. Every
//     (layer, expert) block — the expert's tensors back to back — starts on
//     a 4 KiB boundary of one experts file and is padded to a multiple of
//     4 KiB, so one O_DIRECT read fetches one expert into an aligned slot;
//     a JSON index maps blocks and tensors to offsets.
//   - Store (store.go): the slow tier, two methods (ReadAt, Close).
//     FileStore reads the experts file with O_DIRECT, bypassing the page
//     cache so the budget is real (with a buffered fallback, and a Note,
//     where the filesystem refuses it); MemStore reads a byte slice; SimLink
//     delivers another store's bytes at a set bandwidth, a simulated PCIe
//     link. SlowStore and FaultStore (storetest.go) are test helpers that
//     delay reads or make them fail, short or corrupt.
//   - Reader (reader.go): a Store's reads issued asynchronously, Depth in
//     flight; Submit returns a Pending to Wait on, cancellation drops
//     queued reads, and a Request's Done hands the result on (to a slot).
//   - SlotPool (pool.go): the fast tier, a fixed number of equal aligned
//     slots whose total is the budget, reference counted and found again by
//     Key. Which cached slot to reuse is an Evictor's choice (evict.go:
//     LRU, LFU with decay, LIFO, NoCache); the Evictor hears of demands
//     and of fetches ahead apart, so a wrong prefetch does not make an
//     expert look popular. Slot memory comes from a Memory (memory.go:
//     anonymous mmap; pinned host or device memory plug in).
//     Under -tags invariants a double release or a leaked reference panics.
//   - Stats (stats.go): atomic counters of reads, bytes, hits, misses,
//     fetches ahead, evictions, stall time and the predictor's hits and
//     misses (precision, recall) for the per-run report.
//   - Scheduler (scheduler.go, plan.go, ahead.go): the ExpertSource of
//     package moe built on these. NewPlan turns a budget in bytes into a
//     slot count (too small a budget is an ErrBudget error naming the
//     policy's minimum). Acquire takes a slot per expert, reads the misses
//     (all in flight at once), waits only for them, and returns views of
//     the slots (moe.ExpertWeights: each tensor's name, dtype, shape and
//     offset from the layout); Release gives the slots back. A batch whose
//     experts outnumber the slots gets them in turns. The Policy is
//     configuration of this one loop, differing only in what is read ahead
//     of the Acquire that needs it: Resident (everything, at open),
//     OnDemand (nothing), PrefetchAll (when block N acquires, all of the
//     next MoE block), Ring (K whole-layer sections: the K-1 blocks after
//     N), Pregated (the exact experts the model's pre-gate hint names),
//     Speculative (the experts the model predicts with the next block's
//     router on block N's input: the scheduler is a moe.Speculator), Auto
//     (Pregated for a pre-gated model, else Speculative). Fetches ahead
//     never wait: each takes a free or evictable slot or is skipped, and is
//     held by the scheduler until its layer's Acquire uses it or drops it;
//     what was not fetched is read on demand, so every policy computes with
//     exactly the experts the routing chose. The Cache (LRU, LFU, LIFO,
//     none) decides what stays beyond that.
//
// The model (package model, which this package does not know) runs on it:
//
//	cfg, err := model.LoadConfig(dir)
//	s, err := offload.OpenScheduler(ctx, dir, offload.SchedulerConfig{
//		Policy: offload.Auto, Budget: 2 << 30, TopK: cfg.K, PregateDist: cfg.PregateDist})
//	fmt.Println(s.Plan())  // pregated/lru: 170 slots x 12 MiB = ...
//	m, err := model.LoadOffloaded(dir, s) // dense weights from dir; hints go to s
//	logits, err := m.NewSession(512).ForwardContext(ctx, tokens)
//	fmt.Println(s.Stats().Snapshot())     // hits, misses, fetches ahead, bytes read, stall
//	m.Close(); s.Close()
//
// Underneath, a Scheduler's Acquire does, per expert, what any filler of a
// slot does:
//
//	slot, cached, err := pool.Acquire(ctx, offload.Key{Layer: l, Expert: e})
//	if !cached { // this caller fills it
//		b, _ := lay.Block(l, e)
//		reader.Submit(ctx, offload.Request{Dst: slot.Bytes()[:b.Padded()], Off: b.Offset, Done: slot.Filled})
//	}
//	err = slot.Wait(ctx)  // the block's tensors are in slot.Bytes() at their TensorRef offsets
//	...
//	slot.Release()        // stays cached until the Evictor picks it
//
// A GPU tier above host RAM is a second SlotPool over device memory (a
// Memory with no host region; device buffers addressed by Slot.Index),
// filled from the host pool, whose Memory is then pinned host memory, by a
// copy engine in the same Acquire / fill / Filled / Wait pattern: the
// scheduler's loop does not change.
package offload
