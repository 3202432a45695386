package offload

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/moesys/moesys/moe"
	"github.com/moesys/moesys/tensor"
)

// SchedulerConfig configures a Scheduler: the policy and the budget, and
// what the planner must know of the model, which whoever builds the
// scheduler reads from the model's config (this package knows no models).
type SchedulerConfig struct {
	Policy Policy // "" is not a policy: say Auto for the default
	Cache  Cache  // for the slots beyond the working set; "": LRU
	// Budget is the expert memory in bytes (the slot pool); 0: one slot
	// per expert. NewPlan turns it into a slot count.
	Budget int64
	// TopK is the number of experts one token uses per MoE layer (the
	// model's K): the minimum slot count of OnDemand, and with Batch the
	// working set the prefetching policies plan for.
	TopK int
	// Batch is the sequences one decode pass runs (<= 0: 1): a layer's
	// working set is the union of their experts, up to Batch * TopK.
	Batch int
	// PregateDist is the model's pre-gate distance (model.Config
	// .PregateDist): 0 for a model without pre-gates. Auto picks Pregated
	// when it is positive; Pregated needs it.
	PregateDist int
	// LFUHalfLife is the LFU cache's decay: counts halve every LFUHalfLife
	// demands; 0: DefaultLFUHalfLife; < 0: no decay.
	LFUHalfLife int
	Depth       int // reads in flight; <= 0: DefaultDepth
	// AheadDepth is the reads in flight below which a fetch ahead may
	// start (ReaderConfig.AheadDepth); <= 0: by policy, one block's
	// experts (Batch x TopK) for Pregated and Speculative, which fetch a
	// block ahead, so its reads follow the current block's instead of
	// sharing the disk with them; Depth for PrefetchAll and Ring, which
	// read whole layers.
	AheadDepth int
	Memory     Memory // slot memory; nil: HostMemory
	Stats      *Stats // shared by the reader and the pool; nil: the scheduler's own
}

// Scheduler is the ExpertSource of package moe over an offload layout: it
// serves the experts a MoE layer acquires from a SlotPool of the planned
// size, filling missed slots from the Store through a Reader, as its
// Policy says. It is safe for concurrent use by several model passes.
//
// A slot holds one expert block exactly as the experts file stores it, so
// the acquired ExpertWeights are views of slot memory: no copy, no
// conversion. Hits, misses, fetches ahead, evictions, reads, bytes, the
// time Acquire waited and the predictor's hits are counted in Stats.
//
// The prefetching policies keep a scheduler reference on each slot they
// fetch ahead (ahead.go) until the layer's Acquire takes its own, or drops
// what it did not ask for; so a fetch ahead is never evicted before it is
// used, and it never waits: with no slot free it is skipped, and Acquire
// reads the expert on demand.
type Scheduler struct {
	plan    Plan
	lay     *Layout
	store   Store // closed by Close when owned
	owned   bool
	reader  *Reader
	pool    *SlotPool
	stats   *Stats
	experts map[Key]expertBlock
	pinned  []*Slot // Resident: every slot, referenced until Close
	closed  bool

	// The layout's MoE layers: order lists them ascending, at[l] is l's
	// position in order (-1 for a layer without blocks), byLayer[l] its
	// experts ascending.
	order   []int
	at      []int
	byLayer [][]int

	mu    sync.Mutex        // guards ahead and hints
	ahead map[Key]*aheadRef // slots fetched ahead, a reference each
	hints []*layerHint      // per layer: the last Prefetch hint and its counts
	reads sync.WaitGroup    // fetches ahead whose read has not ended
}

// expertBlock is what Acquire needs of a layout block.
type expertBlock struct {
	blk     Block
	tensors []moe.ExpertTensor // shared by every acquisition
}

var (
	_ moe.ExpertSource  = (*Scheduler)(nil)
	_ moe.AcquireThener = (*Scheduler)(nil)
)

// OpenScheduler opens the layout in dir (written by `moesys convert`) and
// its experts file for direct reads, and starts a Scheduler over them that
// owns the file. See NewScheduler.
func OpenScheduler(ctx context.Context, dir string, cfg SchedulerConfig) (*Scheduler, error) {
	lay, err := OpenLayout(dir)
	if err != nil {
		return nil, err
	}
	store, err := OpenFileStore(lay.Path)
	if err != nil {
		return nil, err
	}
	s, err := NewScheduler(ctx, lay, store, cfg)
	if err != nil {
		store.Close()
		return nil, err
	}
	s.owned = true
	return s, nil
}

// NewScheduler plans cfg's budget for lay (NewPlan), allocates the slots
// and starts the reader over store, which the scheduler borrows: it must
// outlive the scheduler, and Close leaves it open. Resident reads every
// expert before it returns.
func NewScheduler(ctx context.Context, lay *Layout, store Store, cfg SchedulerConfig) (*Scheduler, error) {
	plan, err := NewPlan(lay, cfg)
	if err != nil {
		return nil, err
	}
	s := &Scheduler{plan: plan, lay: lay, store: store, stats: cfg.Stats, experts: make(map[Key]expertBlock, len(lay.Blocks)), ahead: map[Key]*aheadRef{}}
	if s.stats == nil {
		s.stats = new(Stats)
	}
	for _, b := range lay.Blocks {
		if b.Layer < 0 || b.Expert < 0 {
			return nil, fmt.Errorf("%w: layer %d expert %d", ErrLayout, b.Layer, b.Expert)
		}
		for len(s.byLayer) <= b.Layer {
			s.byLayer = append(s.byLayer, nil)
		}
		s.byLayer[b.Layer] = append(s.byLayer[b.Layer], b.Expert)
	}
	s.at = make([]int, len(s.byLayer))
	s.hints = make([]*layerHint, len(s.byLayer))
	for l, es := range s.byLayer {
		s.at[l] = -1
		if es != nil {
			slices.Sort(es)
			s.at[l] = len(s.order)
			s.order = append(s.order, l)
		}
	}
	for _, b := range lay.Blocks {
		eb := expertBlock{blk: b}
		for _, t := range b.Tensors {
			dt, err := tensor.ParseDType(t.DType)
			if err != nil {
				return nil, fmt.Errorf("%w: layer %d expert %d tensor %s: %v", ErrLayout, b.Layer, b.Expert, t.Name, err)
			}
			eb.tensors = append(eb.tensors, moe.ExpertTensor{Name: t.Name, DType: dt, Shape: t.Shape, Offset: t.Offset, Bytes: t.Bytes})
		}
		s.experts[Key{b.Layer, b.Expert}] = eb
	}
	s.pool, err = NewSlotPool(PoolConfig{Slots: plan.Slots, SlotBytes: plan.SlotBytes, Evictor: plan.Cache.evictor(cfg.LFUHalfLife), Memory: cfg.Memory, Stats: s.stats})
	if err != nil {
		return nil, err
	}
	s.reader = NewReader(store, ReaderConfig{Depth: cfg.Depth, AheadDepth: aheadDepth(plan.Policy, cfg), Stats: s.stats})
	if plan.Policy == Resident {
		if err := s.loadAll(ctx); err != nil {
			return nil, errors.Join(err, s.Close())
		}
	}
	return s, nil
}

// aheadDepth is cfg.AheadDepth, or the policy's default.
func aheadDepth(p Policy, cfg SchedulerConfig) int {
	if cfg.AheadDepth > 0 {
		return cfg.AheadDepth
	}
	switch p {
	case Pregated, Speculative:
		return max(cfg.Batch, 1) * max(cfg.TopK, 1)
	}
	return cfg.Depth // <= 0: the reader's depth
}

// loadAll fills a slot with every expert and keeps a reference to each.
func (s *Scheduler) loadAll(ctx context.Context) error {
	var err error
	for _, b := range s.lay.Blocks {
		slot, _, aerr := s.pool.TryAcquire(Key{b.Layer, b.Expert})
		if aerr != nil {
			err = aerr
			break
		}
		s.pinned = append(s.pinned, slot)
		req := slot.fill(b)
		req.Done = slot.Filled
		s.reader.Submit(ctx, req)
	}
	// Every fill ends (the reader calls Filled even when ctx cancels it),
	// so waiting without ctx is bounded.
	for _, slot := range s.pinned {
		if werr := slot.Wait(context.Background()); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return fmt.Errorf("offload: load every expert (%s): %w", s.plan.Policy, err)
	}
	return nil
}

// Plan is how the scheduler spends its budget.
func (s *Scheduler) Plan() Plan { return s.plan }

// Stats returns the scheduler's counters.
func (s *Scheduler) Stats() *Stats { return s.stats }

// Acquire implements moe.ExpertSource: it takes a slot reference for each
// of layer's experts, fetches the missed ones into their slots (all reads
// in flight at once) and waits for them. It blocks only for the first
// expert's slot: the rest are taken while slots are free or evictable, so
// a batch whose experts outnumber the slots gets them in turns. When it
// must take turns, or the policy fetches ahead, experts already in memory
// (or on their way) go first. On any error it releases what it took, after
// its own reads have ended, and the slot of a failed read is not reused
// for the expert: the next Acquire reads again.
//
// For the prefetching policies it also settles what was fetched ahead for
// layer (counting the hint's hits, dropping what layer does not use), and
// for PrefetchAll and Ring it starts, once its own reads are issued, the
// reads of the layers ahead.
func (s *Scheduler) Acquire(ctx context.Context, layer int, experts []int, w []moe.ExpertWeights) (int, error) {
	return s.AcquireThen(ctx, layer, experts, w, nil)
}

// AcquireThen implements moe.AcquireThener: it is Acquire, calling then
// once its slots are taken and its reads (and PrefetchAll's and Ring's
// reads ahead) are issued, before it waits; not if taking a slot failed.
func (s *Scheduler) AcquireThen(ctx context.Context, layer int, experts []int, w []moe.ExpertWeights, then func()) (int, error) {
	if len(w) < len(experts) {
		panic(fmt.Sprintf("offload: Scheduler.Acquire: %d weights for %d experts", len(w), len(experts)))
	}
	if len(experts) == 0 {
		return 0, nil
	}
	ahead := s.plan.Policy.fetchesAhead()
	if ahead {
		s.settleAhead(layer, experts)
	}
	if ahead || len(experts) > s.pool.Slots() {
		s.inMemoryFirst(layer, experts)
	}
	var fillBuf [32]bool
	fills := fillBuf[:0] // fills[i]: this call fills experts[i]'s slot
	var err error
	n := 0
	for i, e := range experts {
		key := Key{layer, e}
		x, ok := s.experts[key]
		if !ok {
			err = fmt.Errorf("%w: no block for %v", ErrLayout, key)
			break
		}
		var slot *Slot
		var cached bool
		if i == 0 {
			if slot, cached, err = s.pool.TryAcquire(key); errors.Is(err, ErrNoSlot) {
				// Fetches ahead must not starve a demand: drop those of
				// other layers, then wait for a slot.
				s.dropAhead(layer)
				slot, cached, err = s.pool.Acquire(ctx, key)
			}
		} else if slot, cached, err = s.pool.TryAcquire(key); errors.Is(err, ErrNoSlot) {
			err = nil
			break // the rest wait for the caller's next turn
		}
		if err != nil {
			break
		}
		if !cached {
			req := slot.fill(x.blk)
			req.Done = slot.Filled
			s.reader.Submit(ctx, req)
		}
		fills = append(fills, !cached)
		w[i] = moe.ExpertWeights{Layer: layer, Expert: e, Tensors: x.tensors, Ref: slot, Addr: slot.Addr()}
		if b := slot.Bytes(); b != nil {
			w[i].Data = b[:x.blk.Bytes]
		}
		n++
	}
	if ahead {
		// Our references are taken: the scheduler's on the experts
		// fetched ahead can go.
		s.consumeAhead(layer, experts[:n])
		switch s.plan.Policy {
		case PrefetchAll:
			s.fetchLayersAhead(ctx, layer, 1)
		case Ring:
			s.fetchLayersAhead(ctx, layer, s.plan.Sections-1)
		}
	}
	if then != nil && err == nil {
		then()
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		slot := w[i].Ref.(*Slot)
		var werr error
		if fills[i] {
			// Our own read ends even if ctx is cancelled (a queued read is
			// dropped, a running one completes): wait without ctx, so the
			// slot is not released before Filled.
			werr = slot.Wait(context.Background())
		} else if err == nil {
			werr = slot.Wait(ctx)
		}
		if werr != nil && err == nil {
			err = werr
		}
	}
	s.stats.AddStall(time.Since(start))
	if err != nil {
		s.Release(w[:n])
		return 0, fmt.Errorf("offload: acquire layer %d experts: %w", layer, err)
	}
	return n, nil
}

// inMemoryFirst moves the experts whose blocks are in slots, ready or
// being filled, to the front (keeping the order otherwise), so a
// turn-taking batch uses them before they can be evicted for the others,
// and the first expert, the one Acquire may wait for a slot for, needs
// none if any is in memory.
func (s *Scheduler) inMemoryFirst(layer int, experts []int) {
	j := 0
	for i, e := range experts {
		if s.pool.inMemory(Key{layer, e}) {
			copy(experts[j+1:i+1], experts[j:i])
			experts[j] = e
			j++
		}
	}
}

// Release implements moe.ExpertSource: it drops the slot references, and
// the slots stay cached as the Cache policy says.
func (s *Scheduler) Release(w []moe.ExpertWeights) {
	for i := range w {
		slot, ok := w[i].Ref.(*Slot)
		if !ok {
			if invariants {
				panic(fmt.Sprintf("offload: Scheduler.Release of layer %d expert %d, which is not acquired: released twice?", w[i].Layer, w[i].Expert))
			}
			continue
		}
		w[i].Ref, w[i].Data = nil, nil
		slot.Release()
	}
}

// Close stops the reader, frees the slots and, when OpenScheduler opened
// it, closes the experts file. Every acquired expert must have been
// released: otherwise Close fails with ErrBusy (panics under -tags
// invariants), keeping the memory and the reader. Closing twice is a
// no-op; Close must not run concurrently with other calls.
func (s *Scheduler) Close() error {
	if s.closed {
		return nil
	}
	for _, slot := range s.pinned {
		slot.Release()
	}
	s.pinned = nil
	// Fetches ahead are hints: drop them, once their reads have ended.
	s.dropAhead(-1)
	s.reads.Wait()
	// With every reference released no read is filling a slot: the pool
	// can go first, and a failed Close leaves the scheduler working.
	if err := s.pool.Close(); err != nil {
		return err
	}
	s.reader.Close()
	s.closed = true
	if s.owned {
		return s.store.Close()
	}
	return nil
}
