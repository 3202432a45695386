package model

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moesys/moesys/moe"
	"github.com/moesys/moesys/offload"
	"github.com/moesys/moesys/tensor"
)

// offloadCase is a tiny random checkpoint, written plain and converted to
// the offload layout.
type offloadCase struct {
	name  string
	cfg   string
	dtype tensor.DType
	fast  bool // SetPrecision(Fast) on both models
}

var offloadCases = []offloadCase{
	{"mixtral-bf16", `{"model_type":"mixtral","vocab_size":40,"hidden_size":32,"intermediate_size":24,
		"num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2,"num_local_experts":8,
		"num_experts_per_tok":2}`, tensor.BF16, false},
	{"mixtral-bf16-fast", `{"model_type":"mixtral","vocab_size":40,"hidden_size":32,"intermediate_size":24,
		"num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2,"num_local_experts":8,
		"num_experts_per_tok":2}`, tensor.BF16, true},
	{"qwen2moe-f32-shared-dense", `{"model_type":"qwen2_moe","vocab_size":50,"hidden_size":32,"num_hidden_layers":3,
		"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":48,"moe_intermediate_size":16,
		"shared_expert_intermediate_size":24,"num_experts":6,"num_experts_per_tok":2,"decoder_sparse_step":1,
		"mlp_only_layers":[1]}`, tensor.F32, false},
	// Switch-style: MoE every other layer (1, 3, 5), pre-gates one block
	// ahead.
	{"moesys-pregated-bf16", `{"model_type":"moesys","vocab_size":40,"hidden_size":32,"intermediate_size":24,
		"dense_intermediate_size":40,"moe_interval":2,"num_hidden_layers":6,"num_attention_heads":4,
		"num_key_value_heads":2,"num_local_experts":8,"num_experts_per_tok":2,"pregate_distance":1}`, tensor.BF16, false},
	// Pre-gates two blocks ahead: the first two MoE blocks use their own
	// gates.
	{"moesys-pregated2-f32", `{"model_type":"moesys","vocab_size":40,"hidden_size":32,"intermediate_size":24,
		"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,"num_local_experts":6,
		"num_experts_per_tok":2,"pregate_distance":2}`, tensor.F32, false},
}

// writeOffloadCase writes the case's plain checkpoint and its offload
// layout into temporary directories.
func writeOffloadCase(t *testing.T, oc offloadCase) (plain, layout string) {
	t.Helper()
	plain, layout = t.TempDir(), filepath.Join(t.TempDir(), "offload")
	// A wide deviation spreads the routing over the experts.
	if err := WriteRandom(plain, []byte(oc.cfg), RandomOptions{DType: oc.dtype, Seed: 11, Std: 0.3}); err != nil {
		t.Fatal(err)
	}
	if err := ConvertToOffload(plain, layout); err != nil {
		t.Fatal(err)
	}
	return plain, layout
}

// genResult is what greedy generation produced: every pass's logits (per
// sequence, rows of V) and tokens, and the number of expert acquisitions a
// source would see (the distinct experts of every MoE layer of every
// pass).
type genResult struct {
	logits   [][]float32 // per sequence, all its rows of all passes
	tokens   [][]int32
	acquires int
}

// generate runs batch sequences greedily: a prefill of a different prompt
// each, then decode steps, all sequences in one pass (a lone sequence
// through Session.Forward, to cover it too).
func generate(ctx context.Context, m *Model, batch, steps int) (genResult, error) {
	c := m.Cfg
	prompts := [][]int32{{1, 7, 3, 9, 2}, {4, 4, 11}, {13, 0, 5, 6, 8, 10, 12}}[:batch]
	seqs := make([]*Session, batch)
	for i := range seqs {
		seqs[i] = m.NewSession(16)
		seqs[i].RecordRouting = true
	}
	bt := m.NewBatch()
	bt.RecordRouting = true
	res := genResult{logits: make([][]float32, batch), tokens: make([][]int32, batch)}
	in := prompts
	for range steps {
		var out [][]float32
		var routing [][]int32
		if batch == 1 {
			o, err := seqs[0].ForwardContext(ctx, in[0])
			if err != nil {
				return res, err
			}
			out, routing = [][]float32{o}, seqs[0].Routing
		} else {
			var err error
			if out, err = bt.ForwardContext(ctx, seqs, in); err != nil {
				return res, err
			}
			routing = bt.Routing
		}
		for _, ids := range routing {
			if ids != nil {
				res.acquires += len(distinct(ids))
			}
		}
		next := make([][]int32, batch)
		for i, o := range out {
			res.logits[i] = append(res.logits[i], o...)
			last := o[len(o)-c.V:]
			tok := int32(0)
			for v := range last {
				if last[v] > last[tok] {
					tok = int32(v)
				}
			}
			res.tokens[i] = append(res.tokens[i], tok)
			next[i] = []int32{tok}
		}
		in = next
	}
	return res, nil
}

func distinct(ids []int32) []int32 {
	s := slices.Clone(ids)
	slices.Sort(s)
	return slices.Compact(s)
}

// sameBits reports the first logit where a and b differ in any bit.
func sameBits(a, b genResult) error {
	for i := range a.logits {
		if !slices.Equal(a.tokens[i], b.tokens[i]) {
			return fmt.Errorf("sequence %d: tokens %v, want %v", i, b.tokens[i], a.tokens[i])
		}
		if len(a.logits[i]) != len(b.logits[i]) {
			return fmt.Errorf("sequence %d: %d logits, want %d", i, len(b.logits[i]), len(a.logits[i]))
		}
		for j, x := range a.logits[i] {
			if y := b.logits[i][j]; math.Float32bits(x) != math.Float32bits(y) {
				return fmt.Errorf("sequence %d logit %d: %g, want %g (bit-identical)", i, j, y, x)
			}
		}
	}
	return nil
}

// openOffloaded starts a scheduler over layout and loads the model on it;
// both are closed at the end of the test, the scheduler checked for leaks.
func openOffloaded(t *testing.T, layout string, cfg offload.SchedulerConfig, fast bool) (*Model, *offload.Scheduler, error) {
	t.Helper()
	s, err := offload.OpenScheduler(context.Background(), layout, cfg)
	if err != nil {
		return nil, nil, err
	}
	m, err := LoadOffloaded(layout, s)
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	if fast {
		m.SetPrecision(Fast)
	}
	t.Cleanup(func() {
		m.Close()
		if err := s.Close(); err != nil {
			t.Errorf("scheduler Close (a leaked expert?): %v", err)
		}
	})
	return m, s, nil
}

// countingSource counts the Acquires that handed out fewer experts than
// asked (turns), passing hints on.
type countingSource struct {
	moe.ExpertSource
	turns int
}

func (c *countingSource) Prefetch(ctx context.Context, layer int, experts []int) {
	if p, ok := c.ExpertSource.(moe.Prefetcher); ok {
		p.Prefetch(ctx, layer, experts)
	}
}

func (c *countingSource) WantsPrediction() bool {
	sp, ok := c.ExpertSource.(moe.Speculator)
	return ok && sp.WantsPrediction()
}

func (c *countingSource) Acquire(ctx context.Context, layer int, experts []int, w []moe.ExpertWeights) (int, error) {
	n, err := c.ExpertSource.Acquire(ctx, layer, experts, w)
	if err == nil && n < len(experts) {
		c.turns++
	}
	return n, err
}

// TestOffloadedMatchesResident: for every policy, cache, budget and batch
// size, an offloaded model generates the same tokens with bit-identical
// logits as the plain model (for pregated, the pre-gated model's), and the
// scheduler's counters add up.
func TestOffloadedMatchesResident(t *testing.T) {
	const steps = 5
	for _, oc := range offloadCases {
		t.Run(oc.name, func(t *testing.T) {
			plain, layout := writeOffloadCase(t, oc)
			ref, err := Load(plain)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			if oc.fast {
				ref.SetPrecision(Fast)
			}
			want := map[int]genResult{}
			for _, batch := range []int{1, 3} {
				if want[batch], err = generate(context.Background(), ref, batch, steps); err != nil {
					t.Fatal(err)
				}
			}
			lay, err := offload.OpenLayout(layout)
			if err != nil {
				t.Fatal(err)
			}
			c, slot, blocks := ref.Cfg, lay.SlotBytes(), len(lay.Blocks)
			moeLayers, perLayer := len(c.MoELayers()), c.E
			for _, policy := range offload.Policies {
				base := offload.SchedulerConfig{Policy: policy, TopK: c.K, PregateDist: c.PregateDist}
				plan, err := offload.NewPlan(lay, base)
				if policy == offload.Pregated && c.PregateDist == 0 {
					if err == nil || !strings.Contains(err.Error(), "needs a model with pre-gates") {
						t.Fatalf("pregated without pre-gates: %v", err)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				// One slot below the minimum is refused, naming it.
				below := base
				below.Budget = int64(plan.MinSlots-1) * slot
				if _, err := offload.NewPlan(lay, below); plan.MinSlots > 1 &&
					(!errors.Is(err, offload.ErrBudget) || !strings.Contains(err.Error(), fmt.Sprintf("at least %d slots", plan.MinSlots))) {
					t.Fatalf("%s below its minimum: %v, want ErrBudget naming %d slots", policy, err, plan.MinSlots)
				}
				for _, cache := range offload.Caches {
					for _, budget := range []struct {
						name  string
						slots int
					}{{"minimum", plan.MinSlots}, {"between", (plan.MinSlots + blocks) / 2}, {"all", blocks}} {
						for _, batch := range []int{1, 3} {
							t.Run(fmt.Sprintf("%s/%s/%s/batch%d", policy, cache, budget.name, batch), func(t *testing.T) {
								cfg := base
								cfg.Cache, cfg.Budget = cache, int64(budget.slots)*slot
								m, s, err := openOffloaded(t, layout, cfg, oc.fast)
								if err != nil {
									t.Fatal(err)
								}
								p := s.Plan()
								wantSlots := budget.slots
								if policy == offload.Ring {
									wantSlots = min(budget.slots/perLayer, moeLayers) * perLayer
									if p.Sections != wantSlots/perLayer || p.Sections < min(2, moeLayers) {
										t.Fatalf("plan %v: want K=%d", p, wantSlots/perLayer)
									}
								}
								if p.Slots != wantSlots {
									t.Fatalf("plan %v, want %d slots", p, wantSlots)
								}
								cs := &countingSource{ExpertSource: s}
								m.SetExpertSource(cs)
								opened := s.Stats().Snapshot()
								got, err := generate(context.Background(), m, batch, steps)
								if err != nil {
									t.Fatal(err)
								}
								if err := sameBits(want[batch], got); err != nil {
									t.Fatal(err)
								}
								// Closing waits for the reads ahead, so the
								// counts are final.
								if err := s.Close(); err != nil {
									t.Fatal(err)
								}
								checkOffloadCounts(t, p, s.Stats().Snapshot().Sub(opened), opened, got, budget.name, batch, cs.turns, blocks, slot)
							})
						}
					}
				}
			}
		})
	}
}

// checkOffloadCounts checks a generation's scheduler counts n (opened: at
// open) under plan p.
func checkOffloadCounts(t *testing.T, p offload.Plan, n, opened offload.Counts, got genResult, budget string, batch, turns, blocks int, slot int64) {
	t.Helper()
	if n.Hits+n.Misses != int64(got.acquires) {
		t.Fatalf("%d hits + %d misses, want one per acquired expert: %d", n.Hits, n.Misses, got.acquires)
	}
	if n.Reads != n.Misses+n.Prefetches || n.BytesRead != n.Reads*slot || n.ReadErrors != 0 {
		t.Fatalf("counts %+v: want one whole-slot read per miss or fetch ahead", n)
	}
	ahead := p.Policy != offload.Resident && p.Policy != offload.OnDemand
	switch {
	case p.Policy == offload.Resident && (opened.Reads != int64(blocks) || n.Misses != 0):
		t.Fatalf("resident: %d reads at open, %d misses after, want %d and 0", opened.Reads, n.Misses, blocks)
	case budget == "all" && n.Evictions != 0:
		t.Fatalf("%d evictions with a slot per expert", n.Evictions)
	case budget == "all" && p.Cache != offload.CacheNone && n.Reads > int64(blocks):
		t.Fatalf("%d reads with a slot per expert, want at most one per expert (%d)", n.Reads, blocks)
	case !ahead && n.Prefetches != 0:
		t.Fatalf("%s fetched %d experts ahead", p.Policy, n.Prefetches)
	case ahead && (budget == "all" || batch == 1) && n.Prefetches == 0:
		t.Fatalf("%s fetched nothing ahead", p.Policy)
	case p.Policy == offload.OnDemand && budget == "minimum" && p.Cache != offload.CacheNone && n.Evictions == 0:
		t.Fatal("no evictions at the minimum budget")
	case p.Policy == offload.OnDemand && budget == "minimum" && batch > 1 && turns == 0:
		t.Fatal("a batch at the minimum budget never took turns")
	case p.Policy == offload.Pregated && (n.Predicted == 0 || n.PredictedUsed != n.Predicted || n.Unpredicted != 0):
		t.Fatalf("pregated: counts %+v: want exact hints (precision and recall 1)", n)
	case p.Policy == offload.Speculative && (n.Predicted == 0 || n.PredictedUsed == 0 || n.PredictedUsed+n.Unpredicted >= n.Hits+n.Misses):
		t.Fatalf("speculative: counts %+v: want predictions, some right, for every MoE layer but the first", n)
	case p.Policy != offload.Pregated && p.Policy != offload.Speculative && n.Predicted != 0:
		t.Fatalf("%s counted %d predictions", p.Policy, n.Predicted)
	}
}

// A read that fails makes Forward fail, never return logits; the session
// does not advance, so running the same tokens again (the read now
// succeeds) gives the resident logits. Nothing leaks (the cleanup's Close
// checks; under -tags invariants it panics).
func TestOffloadedReadFault(t *testing.T) {
	oc := offloadCases[0]
	plain, layout := writeOffloadCase(t, oc)
	ref, err := Load(plain)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	prompt := []int32{1, 7, 3, 9, 2, 5}
	want, err := ref.NewSession(8).Forward(prompt)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fault  offload.Fault
		at     int64
		sticky bool
	}{
		{offload.FaultError, 1, false},
		{offload.FaultError, 4, false},
		{offload.FaultShort, 3, false},
		{offload.FaultError, 2, true},
	} {
		t.Run(fmt.Sprintf("%v-at-%d-sticky-%v", tc.fault, tc.at, tc.sticky), func(t *testing.T) {
			lay, err := offload.OpenLayout(layout)
			if err != nil {
				t.Fatal(err)
			}
			fs, err := offload.OpenFileStore(lay.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer fs.Close()
			store := offload.NewFaultStore(fs, tc.fault, tc.at)
			store.Sticky = tc.sticky
			s, err := offload.NewScheduler(context.Background(), lay, store, offload.SchedulerConfig{Policy: offload.OnDemand, TopK: 2, Budget: 3 * lay.SlotBytes()})
			if err != nil {
				t.Fatal(err)
			}
			m, err := LoadOffloaded(layout, s)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				m.Close()
				if err := s.Close(); err != nil {
					t.Errorf("scheduler Close (a leaked expert?): %v", err)
				}
			}()
			sess := m.NewSession(8)
			logits, err := sess.Forward(prompt)
			if !errors.Is(err, offload.ErrInjected) || logits != nil || sess.Pos != 0 {
				t.Fatalf("Forward with a failing read = %d logits, %v, position %d; want ErrInjected, none, 0", len(logits), err, sess.Pos)
			}
			if !strings.Contains(err.Error(), "model: layer ") {
				t.Fatalf("error %q does not name the layer", err)
			}
			logits, err = sess.Forward(prompt)
			if tc.sticky {
				if !errors.Is(err, offload.ErrInjected) || logits != nil {
					t.Fatalf("Forward on a failing store = %d logits, %v", len(logits), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(logits, want) {
				t.Fatal("logits after a failed read differ from the resident model's")
			}
		})
	}
}

func TestLoadOffloadedWithoutSource(t *testing.T) {
	_, layout := writeOffloadCase(t, offloadCases[0])
	m, err := LoadOffloaded(layout, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.NewSession(4).Forward([]int32{1}); err == nil || !strings.Contains(err.Error(), "no ExpertSource") {
		t.Fatalf("Forward without experts: %v", err)
	}
}

// prefetchSource is a fake Speculator over a real source: it records the
// hints and the experts acquired per layer.
type prefetchSource struct {
	moe.ExpertSource
	speculate        bool
	hinted, acquired map[int][]int
}

func (p *prefetchSource) Prefetch(_ context.Context, layer int, experts []int) {
	p.hinted[layer] = append(p.hinted[layer], experts...)
}

func (p *prefetchSource) WantsPrediction() bool { return p.speculate }

func (p *prefetchSource) Acquire(ctx context.Context, layer int, experts []int, w []moe.ExpertWeights) (int, error) {
	n, err := p.ExpertSource.Acquire(ctx, layer, experts, w)
	if err == nil {
		p.acquired[layer] = append(p.acquired[layer], experts[:n]...)
	}
	return n, err
}

// The model's hints, one pass: a pre-gated model tells a Prefetcher each
// pre-gate-routed layer's experts, exactly the ones that layer then
// acquires; a Speculator that wants predictions is also told, for each MoE
// layer with its own router after the first, a prediction from the
// previous MoE layer's input (the union of every token's top K); the
// logits do not change.
func TestOffloadedPrefetchHint(t *testing.T) {
	for _, tc := range []struct {
		name      string
		dist      int
		speculate bool
		exact     []int // layers told exactly (tinyConfig: MoE layers 0, 2, 3)
		predicted []int // layers told a prediction
	}{
		{"pregated", 1, false, []int{2, 3}, nil},
		{"pregated, speculating", 1, true, []int{2, 3}, nil},
		{"pregated 2 ahead, speculating", 2, true, []int{3}, []int{2}},
		{"pregated 2 ahead", 2, false, []int{3}, nil},
		{"plain, speculating", 0, true, nil, []int{2, 3}},
		{"plain", 0, false, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tinyConfig()
			c.PregateDist = tc.dist
			_, plain := saveTinyNet(t, c, 8)
			layout := filepath.Join(t.TempDir(), "offload")
			if err := ConvertToOffload(plain, layout); err != nil {
				t.Fatal(err)
			}
			ref, err := Load(plain)
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			s, err := offload.OpenScheduler(context.Background(), layout, offload.SchedulerConfig{Policy: offload.OnDemand, TopK: c.K, Budget: int64(c.K) * offload.Align})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			src := &prefetchSource{ExpertSource: s, speculate: tc.speculate, hinted: map[int][]int{}, acquired: map[int][]int{}}
			m, err := LoadOffloaded(layout, src)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			prompt := []int32{3, 1, 4, 1, 5, 9}
			want, _ := ref.NewSession(8).Forward(prompt)
			got, err := m.NewSession(8).Forward(prompt)
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("offloaded logits differ from the resident model's (%v)", err)
			}
			for l := range c.L {
				hinted, acquired := slices.Sorted(slices.Values(src.hinted[l])), slices.Sorted(slices.Values(src.acquired[l]))
				switch {
				case slices.Contains(tc.exact, l):
					if !slices.Equal(hinted, acquired) {
						t.Fatalf("layer %d: hinted %v, acquired %v; want the same", l, hinted, acquired)
					}
				case slices.Contains(tc.predicted, l):
					if len(hinted) == 0 || len(hinted) > min(len(prompt)*c.K, c.E) || len(slices.Compact(slices.Clone(hinted))) != len(hinted) {
						t.Fatalf("layer %d: predicted %v: want 1 to min(T*K, E) distinct experts", l, hinted)
					}
				case len(hinted) > 0:
					t.Fatalf("layer %d: hinted %v, want no hint", l, hinted)
				}
			}
		})
	}
}
