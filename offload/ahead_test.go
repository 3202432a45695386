package offload

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/moesys/moesys/moe"
)

// aheadStep is one call of a fetch-ahead table test: a Prefetch hint
// (hint set) or an Acquire that gets n experts, released before the next
// step. After each step the test waits for the reads ahead to end, so the
// counts do not depend on timing.
type aheadStep struct {
	hint    bool
	layer   int
	experts []int
	wantN   int // Acquire
}

func acq(layer int, experts []int, n int) aheadStep { return aheadStep{false, layer, experts, n} }
func hint(layer int, experts ...int) aheadStep      { return aheadStep{true, layer, experts, 0} }

// TestSchedulerAhead walks each prefetching policy through a few layers of
// 3 x 6 experts and checks what was read, hit, fetched ahead and evicted,
// and the predictor's counts. Every Acquire gets the right bytes.
func TestSchedulerAhead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   SchedulerConfig
		steps []aheadStep
		want  Counts // Stall ignored
		preds []Prediction
	}{
		{"prefetch-all at its minimum (a layer + K): the next layer, wrapping", SchedulerConfig{Policy: PrefetchAll, TopK: 2, Budget: 8 * schedSlot}, []aheadStep{
			acq(0, []int{1, 2}, 2), // 2 misses; layer 1 whole ahead (6 free slots)
			acq(1, []int{3, 4}, 2), // 2 hits; layer 1's others dropped; layer 2 whole: 6 evictions
			acq(2, []int{0}, 1),    // 1 hit; layer 0 whole (the next token's): 6 evictions
			hint(1, 0, 1),          // not a hint-taking policy: ignored
			acq(0, []int{2, 5}, 2), // 2 hits; layer 1 whole again: 6 evictions
		}, Counts{Reads: 26, BytesRead: 26 * schedSlot, Hits: 5, Misses: 2, Prefetches: 24, Evictions: 18}, nil},
		{"ring K=2: the section the last layer released", SchedulerConfig{Policy: Ring, TopK: 2, Budget: 13 * schedSlot}, []aheadStep{
			acq(0, []int{1, 2}, 2), // 2 misses; layer 1 ahead
			acq(1, []int{3, 4}, 2), // 2 hits; layer 2 into 4 free slots and layer 0's 2
			acq(2, []int{0}, 1),    // 1 hit; layer 0 into layer 1's section
			acq(0, []int{1, 2}, 2), // 2 hits; layer 1 into layer 2's section
		}, Counts{Reads: 26, BytesRead: 26 * schedSlot, Hits: 5, Misses: 2, Prefetches: 24, Evictions: 14}, nil},
		{"ring K=3 over 3 layers: all resident after one pass", SchedulerConfig{Policy: Ring, TopK: 2}, []aheadStep{
			acq(0, []int{1, 2}, 2), // 2 misses; layers 1 and 2 ahead
			acq(1, []int{3, 4}, 2),
			acq(2, []int{0}, 1),
			acq(0, []int{0, 3}, 2), // layer 0's other experts: ahead since step 2
		}, Counts{Reads: 18, BytesRead: 18 * schedSlot, Hits: 5, Misses: 2, Prefetches: 16}, nil},
		{"pregated at its minimum (2K): the hinted experts", SchedulerConfig{Policy: Pregated, TopK: 2, PregateDist: 1, Budget: 4 * schedSlot}, []aheadStep{
			acq(0, []int{1, 2}, 2), // the first block: 2 misses
			hint(1, 3, 4),          // 2 free slots: 2 ahead
			acq(1, []int{4, 3}, 2), // 2 hits
			hint(2, 0, 5),          // evicts layer 0's
			acq(2, []int{5, 0}, 2), // 2 hits
		}, Counts{Reads: 6, BytesRead: 6 * schedSlot, Hits: 4, Misses: 2, Prefetches: 4, Evictions: 2,
			Predicted: 4, PredictedUsed: 4}, []Prediction{{1, 2, 2, 0}, {2, 2, 2, 0}}},
		{"speculative: a wrong prediction is read on demand", SchedulerConfig{Policy: Speculative, TopK: 2, Budget: 4 * schedSlot}, []aheadStep{
			acq(0, []int{1, 2}, 2), // 2 misses
			hint(1, 3, 4),          // 2 ahead
			acq(1, []int{4, 5}, 2), // 3 dropped; 4 hit; 5 missed: evicts 0:1
			hint(2, 0, 1),          // 0 ahead evicts 0:2, 1 ahead evicts 1:3
			acq(2, []int{2, 3}, 2), // both mispredicted: 2 misses, evicting 1:4, 1:5
		}, Counts{Reads: 9, BytesRead: 9 * schedSlot, Hits: 1, Misses: 5, Prefetches: 4, Evictions: 5,
			Predicted: 4, PredictedUsed: 1, Unpredicted: 3}, []Prediction{{1, 2, 1, 1}, {2, 2, 0, 2}}},
		{"speculative, no cache: what a layer does not use is freed", SchedulerConfig{Policy: Speculative, TopK: 3, Budget: 6 * schedSlot, Cache: CacheNone}, []aheadStep{
			acq(0, []int{0, 1, 2, 3, 4, 5}, 6), // every slot, all free after
			hint(1, 0, 1, 2, 3, 4, 5),          // every slot
			acq(1, []int{0}, 1),                // 1 hit, the other 5 freed
			acq(0, []int{0}, 1),                // not cached: a miss
		}, Counts{Reads: 13, BytesRead: 13 * schedSlot, Hits: 1, Misses: 7, Prefetches: 6,
			Predicted: 6, PredictedUsed: 1}, []Prediction{{1, 6, 1, 0}}},
		{"ondemand ignores hints", SchedulerConfig{Policy: OnDemand, TopK: 2, Budget: 4 * schedSlot}, []aheadStep{
			hint(1, 3, 4),
			acq(1, []int{3, 4}, 2),
		}, Counts{Reads: 2, BytesRead: 2 * schedSlot, Misses: 2}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lay := writeSchedLayers(t, 3)
			s := openSched(t, lay, nil, tc.cfg)
			if got, want := s.WantsPrediction(), s.Plan().Policy == Speculative; got != want {
				t.Fatalf("WantsPrediction = %v", got)
			}
			w := make([]moe.ExpertWeights, schedExperts)
			for i, st := range tc.steps {
				experts := slices.Clone(st.experts)
				if st.hint {
					s.Prefetch(context.Background(), st.layer, experts)
				} else {
					n, err := s.Acquire(context.Background(), st.layer, experts, w)
					if err != nil || n != st.wantN {
						t.Fatalf("step %d: Acquire = %d, %v; want %d", i, n, err, st.wantN)
					}
					for j := range n {
						checkWeights(t, w[j], st.layer, experts[j])
					}
					s.Release(w[:n])
				}
				s.reads.Wait()
			}
			got := s.Stats().Snapshot()
			got.Stall, got.Busy, got.PeakInFlight = 0, 0, 0 // timings
			if got != tc.want {
				t.Fatalf("counts\n%+v, want\n%+v", got, tc.want)
			}
			if preds := s.Predictions(); !slices.Equal(preds, tc.preds) {
				t.Fatalf("predictions %+v, want %+v", preds, tc.preds)
			}
		})
	}
}

// A Prefetch with no slot free returns at once and fetches nothing; an
// Acquire that finds every slot held by fetches ahead of another layer
// drops them and gets its slot (no deadlock), even while their reads run.
func TestSchedulerAheadNeverWaits(t *testing.T) {
	lay := writeSchedLayers(t, 3)
	fs, err := OpenFileStore(lay.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	s := openSched(t, lay, SlowStore{fs, 20 * time.Millisecond}, SchedulerConfig{Policy: Pregated, PregateDist: 1, TopK: 2, Budget: 4 * schedSlot})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := make([]moe.ExpertWeights, 4)
	n, err := s.Acquire(ctx, 0, []int{0, 1, 2, 3}, w)
	if err != nil || n != 4 {
		t.Fatalf("Acquire = %d, %v", n, err)
	}
	s.Prefetch(ctx, 1, []int{0, 1}) // would wait forever: the slots are ours
	s.Release(w[:n])
	if c := s.Stats().Snapshot(); c.Prefetches != 0 {
		t.Fatalf("%d fetches ahead without a free slot", c.Prefetches)
	}
	s.Prefetch(ctx, 2, []int{0, 1, 2, 3}) // every slot, reads running
	n, err = s.Acquire(ctx, 1, []int{5}, w)
	if err != nil || n != 1 {
		t.Fatalf("Acquire with every slot fetched ahead for another layer = %d, %v", n, err)
	}
	checkWeights(t, w[0], 1, 5)
	s.Release(w[:n])
}

// A fetch ahead whose read fails leaves nothing behind: the layer's
// Acquire reads the expert again on demand and gets the right bytes.
func TestSchedulerAheadReadFault(t *testing.T) {
	lay := writeSchedLayers(t, 3)
	fs, err := OpenFileStore(lay.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	s := openSched(t, lay, NewFaultStore(fs, FaultError, 2), SchedulerConfig{Policy: Pregated, PregateDist: 1, TopK: 2, Depth: 1})
	w := make([]moe.ExpertWeights, 2)
	n, err := s.Acquire(context.Background(), 0, []int{0}, w) // read 1
	if err != nil {
		t.Fatal(err)
	}
	s.Release(w[:n])
	s.Prefetch(context.Background(), 1, []int{4, 5}) // read 2 fails, 3 succeeds
	s.reads.Wait()
	experts := []int{4, 5}
	if n, err = s.Acquire(context.Background(), 1, experts, w); err != nil || n != 2 {
		t.Fatalf("Acquire after a failed fetch ahead = %d, %v", n, err)
	}
	for j := range n {
		checkWeights(t, w[j], 1, experts[j])
	}
	s.Release(w[:n])
	if c := s.Stats().Snapshot(); c.ReadErrors != 1 || c.Reads != 3 || c.Prefetches != 2 || c.Misses != 2 || c.Hits != 1 {
		t.Fatalf("counts %+v: want the failed fetch ahead read again as a miss", c)
	}
}

// Cancelling a pass's context drops its queued reads ahead; nothing leaks
// (Close checks) and the next pass reads on demand.
func TestSchedulerAheadCancel(t *testing.T) {
	lay := writeSchedLayers(t, 3)
	fs, err := OpenFileStore(lay.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	s := openSched(t, lay, SlowStore{fs, 20 * time.Millisecond}, SchedulerConfig{Policy: PrefetchAll, TopK: 2, Depth: 1})
	ctx, cancel := context.WithCancel(context.Background())
	w := make([]moe.ExpertWeights, 2)
	n, err := s.Acquire(ctx, 0, []int{0}, w) // then layer 1, 6 reads queued at depth 1
	if err != nil {
		t.Fatal(err)
	}
	s.Release(w[:n])
	cancel()
	s.reads.Wait()
	if c := s.Stats().Snapshot(); c.ReadErrors == 0 {
		t.Fatalf("counts %+v: no read ahead cancelled", c)
	}
	experts := []int{1, 2}
	if n, err = s.Acquire(context.Background(), 1, experts, w); err != nil || n != 2 {
		t.Fatalf("Acquire after a cancelled pass = %d, %v", n, err)
	}
	checkWeights(t, w[0], 1, experts[0])
	checkWeights(t, w[1], 1, experts[1])
	s.Release(w[:n])
}

// Goroutines running passes (layer by layer, with hints for the next)
// through every prefetching policy and cache at its minimum budget all get
// the right bytes (run with -race); the counts add up.
func TestSchedulerAheadConcurrent(t *testing.T) {
	for _, policy := range []Policy{PrefetchAll, Ring, Pregated, Speculative} {
		for _, cache := range Caches {
			t.Run(fmt.Sprintf("%s/%s", policy, cache), func(t *testing.T) {
				lay := writeSchedLayers(t, 3)
				cfg := SchedulerConfig{Policy: policy, Cache: cache, TopK: 2, PregateDist: 1, Depth: 4}
				plan, err := NewPlan(lay, cfg)
				if err != nil {
					t.Fatal(err)
				}
				cfg.Budget = int64(plan.MinSlots) * schedSlot
				s := openSched(t, lay, SlowStore{NewMemStore(mustRead(t, lay.Path)), 50 * time.Microsecond}, cfg)
				var wg sync.WaitGroup
				errs := make(chan error, 3)
				for g := range 3 {
					wg.Go(func() {
						rng := rand.New(rand.NewPCG(uint64(g), 2))
						w := make([]moe.ExpertWeights, schedExperts)
						next := rng.Perm(schedExperts)[:2]
						for range 10 {
							for layer := range 3 {
								active := next
								next = rng.Perm(schedExperts)[:1+rng.IntN(3)]
								hinted := false
								for len(active) > 0 {
									n, err := s.Acquire(context.Background(), layer, active, w)
									if err != nil {
										errs <- err
										return
									}
									if !hinted && layer < 2 {
										s.Prefetch(context.Background(), layer+1, next)
										hinted = true
									}
									if err := acquiredBytes(w[:n], layer, active); err != nil {
										errs <- err
									}
									s.Release(w[:n])
									active = active[n:]
								}
							}
						}
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					t.Fatal(err)
				}
				s.reads.Wait()
				c := s.Stats().Snapshot()
				if c.Reads != c.Misses+c.Prefetches || c.BytesRead != c.Reads*schedSlot || c.ReadErrors != 0 {
					t.Fatalf("counts %+v: want a whole-slot read per miss or fetch ahead", c)
				}
			})
		}
	}
}

func TestPrecisionRecall(t *testing.T) {
	c := Counts{Predicted: 8, PredictedUsed: 6, Unpredicted: 2}
	if c.Precision() != 0.75 || c.Recall() != 0.75 || (Counts{}).Precision() != 0 || (Counts{}).Recall() != 0 {
		t.Fatalf("precision %v, recall %v", c.Precision(), c.Recall())
	}
}

// AcquireThen runs its then after the layer's own reads are issued and
// before it waits for them: a hint sent from then is read while the layer
// waits, behind the layer's own reads, in the slots the layer left.
func TestSchedulerAcquireThen(t *testing.T) {
	lay := writeSchedLayout(t)
	g := newGateStore(mustRead(t, lay.Path))
	s := openSched(t, lay, g, SchedulerConfig{Policy: Pregated, TopK: 2, PregateDist: 1, Depth: 1, Budget: 4 * schedSlot})
	if s.Plan().Slots != 4 {
		t.Fatalf("plan %+v: want the minimum, 4 slots", s.Plan())
	}
	offsetOf := map[int64]Key{}
	for _, b := range lay.Blocks {
		offsetOf[b.Offset] = Key{b.Layer, b.Expert}
	}
	w := make([]moe.ExpertWeights, 2)
	thenRan := make(chan struct{})
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := s.AcquireThen(context.Background(), 0, []int{0, 1}, w, func() {
			s.Prefetch(context.Background(), 1, []int{2, 3})
			close(thenRan)
		})
		done <- result{n, err}
	}()
	first := <-g.started // the layer's first read, held at the gate
	select {
	case <-thenRan:
	case <-time.After(10 * time.Second):
		t.Fatal("then did not run while the layer's read was in flight")
	}
	select {
	case r := <-done:
		t.Fatalf("AcquireThen returned %+v before its reads ended", r)
	default:
	}
	order := []Key{offsetOf[first]}
	for range 3 {
		g.gate <- struct{}{}
		order = append(order, offsetOf[<-g.started])
	}
	g.gate <- struct{}{}
	r := <-done
	if r.err != nil || r.n != 2 {
		t.Fatalf("AcquireThen = %d, %v", r.n, r.err)
	}
	if want := []Key{{0, 0}, {0, 1}, {1, 2}, {1, 3}}; !slices.Equal(order, want) {
		t.Fatalf("reads in order %v, want %v: the layer's own, then the hint's", order, want)
	}
	checkWeights(t, w[0], 0, 0)
	checkWeights(t, w[1], 0, 1)
	s.Release(w)
	n, err := s.Acquire(context.Background(), 1, []int{2, 3}, w)
	if err != nil || n != 2 {
		t.Fatalf("Acquire of the hinted layer = %d, %v", n, err)
	}
	checkWeights(t, w[0], 1, 2)
	s.Release(w[:n])
	s.reads.Wait()
	if c := s.Stats().Snapshot(); c.Misses != 2 || c.Prefetches != 2 || c.Hits != 2 || c.Reads != 4 {
		t.Fatalf("counts %+v: want the layer's 2 misses, the hint's 2 reads ahead, then 2 hits", c)
	}
}
