package train

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"
	"unsafe"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/offload"
	"github.com/moesys/moesys/optim"
	"github.com/moesys/moesys/tensor"
)

// StateFileName is the SSD tier's file in StorageOptions.Dir.
const StateFileName = "sparse-state.bin"

// storageReaders is the SSD tier's read queue depth for fetches ahead:
// this disk reads ~2x faster at depth 8 than at 1 (docs/BENCHMARKS.md).
const storageReaders = 4

// sparseStore keeps the routed experts' optimizer state (fp32 masters in
// bf16 training, AdamW m and v) on the SSD tier with a RAM cache, and
// updates experts lazily: an expert's AdamW update of step s (its
// gradient, clipped) is applied when its layer is next reached in a
// forward pass (Need), its zero-gradient updates of steps it was not
// routed in are replayed when it is next routed, and everything is caught
// up before a checkpoint. Each replayed or deferred update is the same
// kernel.AdamW call on the same values as the in-memory optimizer's, so
// weights and losses are bit-identical to in-memory training. While a
// layer computes, the next MoE layer's state is read ahead (SSD -> RAM):
// exactly the experts with a deferred update, plus those it lags for
// that a pre-gate chose (exact) or that it used last step (predicted).
type sparseStore struct {
	net              *model.Net
	plan             StoragePlan
	file             *offload.StateFile
	cache            *offload.StateCache
	adam             optim.AdamWConfig
	bf16             bool
	E, FD            int
	moeIx            []int // layer -> MoE index, -1 for a dense layer
	next             []int // MoE index -> the next one (wrapping)
	views            [][][3]*model.Param
	upTo             [][]int  // the adam step each expert's state and weights reflect
	pend             [][]bool // its update of step upTo+1 waits, with its gradient in G
	used, prev, hint [][]bool
	lrs              []float64 // lrs[k-base-1]: adam step k's learning rate
	base             int
	zero             []float32
	gen              uint64
	layerGen         []uint64
	routed           []bool

	wait, update time.Duration // exposed state waits and update compute, this step
	stats0       offload.CacheStats
}

// StorageStep is one step's hierarchical-storage figures.
type StorageStep struct {
	// ExposedSeconds is the time forward waited for sparse state (SSD ->
	// RAM, path 2) that the prefetch did not hide; UpdateSeconds the
	// sparse updates' compute (on the critical path).
	ExposedSeconds float64 `json:"exposed_seconds"`
	UpdateSeconds  float64 `json:"update_seconds"`
	ReadBytes      int64   `json:"ssd_read_bytes"`    // SSD -> RAM
	WriteBytes     int64   `json:"ssd_written_bytes"` // RAM -> SSD
	Hits           int64   `json:"hits"`
	Misses         int64   `json:"misses"`
	HitRate        float64 `json:"hit_rate"`
}

// newSparseStore creates the SSD tier for t.Net under so and fills it
// from the Net's current weights (moments zero, adam step base).
func newSparseStore(net *model.Net, so StorageOptions, bf16 bool, adam optim.AdamWConfig, wrap func(offload.RecordIO) offload.RecordIO) (*sparseStore, error) {
	c := net.Cfg
	if net.Sharded() {
		return nil, fmt.Errorf("%w: hierarchical storage runs in one process (not with --ranks or mpirun yet)", ErrOptions)
	}
	p, err := PlanStorage(c, bf16, so)
	if err != nil {
		return nil, err
	}
	if so.Beta == 0 {
		so.Beta = DefaultLFUBeta
	}
	if so.Every == 0 {
		so.Every = DefaultLFUEvery
	}
	if err := os.MkdirAll(so.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("train: storage: %w", err)
	}
	f, err := offload.CreateStateFile(filepath.Join(so.Dir, StateFileName), p.Records, int(p.RecordBytes), wrap)
	if err != nil {
		return nil, err
	}
	s := &sparseStore{net: net, plan: p, file: f, adam: adam, bf16: bf16, E: c.E, FD: c.ExpertFFN * c.D,
		moeIx: make([]int, c.L), zero: make([]float32, c.ExpertFFN*c.D), routed: make([]bool, c.E)}
	s.cache = offload.NewStateCache(f, offload.StateCacheConfig{Cap: p.CacheRecords, Beta: so.Beta, Every: so.Every, Readers: storageReaders})
	sp := model.SpecFor(c.Arch)
	for l := range s.moeIx {
		s.moeIx[l] = -1
	}
	for mi, l := range c.MoELayers() {
		s.moeIx[l] = mi
		vs := make([][3]*model.Param, c.E)
		for e := range vs {
			g, u, d := sp.Expert(l, e)
			vs[e] = [3]*model.Param{net.Param(g), net.Param(u), net.Param(d)}
		}
		s.views = append(s.views, vs)
		s.upTo = append(s.upTo, make([]int, c.E))
		for _, b := range []*[][]bool{&s.pend, &s.used, &s.prev, &s.hint} {
			*b = append(*b, make([]bool, c.E))
		}
	}
	nm := len(s.views)
	s.next, s.layerGen = make([]int, nm), make([]uint64, nm)
	for mi := range s.next {
		s.next[mi] = (mi + 1) % nm
	}
	// Fresh state: masters are the weights as initialised, moments zero.
	buf := offload.AlignedBytes(f.SlotBytes())
	for mi := range s.views {
		for e := range s.views[mi] {
			st := s.state(f.Payload(buf))
			clear(st)
			for j, p := range s.views[mi][e] {
				if bf16 {
					copy(s.tensor(st, j, 0), p.W)
				}
			}
			s.syncWeights(mi, e, st)
			if err := f.Write(context.Background(), buf, s.id(mi, e)); err != nil {
				s.close()
				return nil, err
			}
		}
	}
	return s, nil
}

func (s *sparseStore) id(mi, e int) int { return mi*s.E + e }

// state views a record's payload as float32s.
func (s *sparseStore) state(b []byte) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// tensor returns part k (master, m, v in bf16 training; m, v in f32) of
// tensor j (gate, up, down) of an expert's state.
func (s *sparseStore) tensor(st []float32, j, k int) []float32 {
	parts := 2
	if s.bf16 {
		parts = 3
	}
	o := (j*parts + k) * s.FD
	return st[o : o+s.FD]
}

func (s *sparseStore) moments(st []float32, j int) (w, m, v []float32, ok bool) {
	if s.bf16 {
		return s.tensor(st, j, 0), s.tensor(st, j, 1), s.tensor(st, j, 2), true
	}
	return nil, s.tensor(st, j, 0), s.tensor(st, j, 1), false
}

// syncWeights sets the expert's working weights from its masters (bf16:
// their rounding and the bf16 copy, as Trainer.syncBF16 does).
func (s *sparseStore) syncWeights(mi, e int, st []float32) {
	if !s.bf16 {
		return
	}
	for j, p := range s.views[mi][e] {
		for i, v := range s.tensor(st, j, 0) {
			h := tensor.F32ToBF16(v)
			p.W[i] = math.Float32frombits(uint32(h) << 16)
			if p.B != nil {
				p.B[i] = h
			}
		}
	}
}

func (s *sparseStore) steps() int { return s.base + len(s.lrs) }

// catchUp brings expert e of MoE layer mi to the current adam step:
// its deferred update (with its gradient) and zero-gradient replays.
func (s *sparseStore) catchUp(ctx context.Context, mi, e int) error {
	A := s.steps()
	if s.upTo[mi][e] >= A && !s.pend[mi][e] {
		return nil
	}
	t0 := time.Now()
	b, err := s.cache.Acquire(ctx, s.id(mi, e))
	t1 := time.Now()
	s.wait += t1.Sub(t0)
	if err != nil {
		return fmt.Errorf("storage: layer %d expert %d: %w", s.net.Cfg.MoELayers()[mi], e, err)
	}
	st := s.state(b)
	c := s.adam
	for k := s.upTo[mi][e] + 1; k <= A; k++ {
		lr := s.lrs[k-s.base-1]
		for j, p := range s.views[mi][e] {
			g := s.zero
			if s.pend[mi][e] && k == s.upTo[mi][e]+1 {
				g = p.G
			}
			w, m, v, master := s.moments(st, j)
			if !master {
				w = p.W
			}
			kernel.AdamW(w, g, m, v, k, float32(lr), float32(c.Beta1), float32(c.Beta2), float32(c.Eps), float32(c.WeightDecay))
		}
	}
	if s.pend[mi][e] {
		for _, p := range s.views[mi][e] {
			clear(p.G)
		}
	}
	s.syncWeights(mi, e, st)
	s.upTo[mi][e], s.pend[mi][e] = A, false
	s.cache.Release(s.id(mi, e), true)
	s.update += time.Since(t1)
	return nil
}

// Need implements model.ExpertWatch: before MoE layer l computes, apply
// its deferred updates and catch up the experts it routes to, then start
// reading the next MoE layer's state.
func (s *sparseStore) Need(ctx context.Context, l int, idsTK []int32) error {
	mi := s.moeIx[l]
	clear(s.routed)
	for _, e := range idsTK {
		s.routed[e] = true
	}
	A := s.steps()
	for e := 0; e < s.E; e++ {
		if s.pend[mi][e] || s.routed[e] && s.upTo[mi][e] < A {
			if err := s.catchUp(ctx, mi, e); err != nil {
				return err
			}
		}
	}
	// Used only once caught up: after a failed pass, afterStep must not
	// defer an update onto an expert still behind.
	for e, r := range s.routed {
		s.used[mi][e] = s.used[mi][e] || r
	}
	clear(s.hint[mi])
	s.cache.DropAhead(s.layerGen[mi])
	s.prefetch(s.next[mi])
	return nil
}

// Hint implements model.ExpertWatch: a pre-gate's exact choice of layer l.
func (s *sparseStore) Hint(l int, idsTK []int32) {
	mi := s.moeIx[l]
	for _, e := range idsTK {
		s.hint[mi][e] = true
	}
}

// prefetch starts reading MoE layer mi's state that its next Need will
// touch: deferred updates (exact) and lagging experts the pre-gate chose
// (exact) or, without a hint, that it used last step (predicted).
func (s *sparseStore) prefetch(mi int) {
	s.gen++
	s.layerGen[mi] = s.gen
	A := s.steps()
	hinted := false
	for _, h := range s.hint[mi] {
		hinted = hinted || h
	}
	for e := 0; e < s.E; e++ {
		lag := s.upTo[mi][e] < A && (s.hint[mi][e] || !hinted && s.prev[mi][e])
		if s.pend[mi][e] || lag {
			s.cache.Prefetch(s.id(mi, e), s.gen)
		}
	}
}

// zeroGrads clears the gradients a step accumulates into: every dense
// one and every expert's without a deferred update.
func (s *sparseStore) zeroGrads() {
	for _, p := range s.net.Params {
		if expert, _ := s.net.ExpertParam(p); !expert {
			clear(p.G)
		}
	}
	for mi := range s.views {
		for e, vs := range s.views[mi] {
			if !s.pend[mi][e] {
				for _, p := range vs {
					clear(p.G)
				}
			}
		}
	}
}

// afterStep ends an optimizer step: applied with learning rate lr (the
// experts routed this step then have their update deferred), or skipped.
func (s *sparseStore) afterStep(applied bool, lr float64) {
	if applied {
		s.lrs = append(s.lrs, lr)
	}
	A := s.steps()
	for mi := range s.used {
		for e, u := range s.used[mi] {
			if u && applied {
				if s.upTo[mi][e] != A-1 || s.pend[mi][e] {
					panic(fmt.Sprintf("train: storage: layer %d expert %d at step %d (pending %v) after step %d", mi, e, s.upTo[mi][e], s.pend[mi][e], A))
				}
				s.pend[mi][e] = true
			}
		}
		s.prev[mi], s.used[mi] = s.used[mi], s.prev[mi]
		clear(s.used[mi])
	}
	s.cache.Tick()
	s.cache.DropAhead(s.gen)
	s.prefetch(0) // the next step's first MoE layer, during its attention
}

// flush catches every expert up, writes the cache back and syncs the file:
// the weights and state are then the in-memory optimizer's.
func (s *sparseStore) flush(ctx context.Context) error {
	for mi := range s.views {
		for e := range s.views[mi] {
			if err := s.catchUp(ctx, mi, e); err != nil {
				return err
			}
		}
	}
	if err := s.cache.Flush(ctx); err != nil {
		return err
	}
	return s.file.Sync()
}

// each calls fn with every expert tensor's name and its state parts
// (master or nil, m, v), caught up (flush first), reading through the cache.
func (s *sparseStore) each(ctx context.Context, write bool, fn func(p *model.Param, master, m, v []float32) error) error {
	for mi := range s.views {
		for e := range s.views[mi] {
			b, err := s.cache.Acquire(ctx, s.id(mi, e))
			if err != nil {
				return err
			}
			st := s.state(b)
			for j, p := range s.views[mi][e] {
				w, m, v, _ := s.moments(st, j)
				if err = fn(p, w, m, v); err != nil {
					break
				}
			}
			if write && err == nil {
				s.syncWeights(mi, e, st)
			}
			s.cache.Release(s.id(mi, e), write)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// resume sets the adam step count the state reflects (a checkpoint's).
func (s *sparseStore) resume(steps int) {
	s.base, s.lrs = steps, nil
	for mi := range s.upTo {
		for e := range s.upTo[mi] {
			s.upTo[mi][e], s.pend[mi][e] = steps, false
		}
	}
}

// stepFigures returns this step's figures and starts the next step's.
func (s *sparseStore) stepFigures() *StorageStep {
	st := s.cache.Stats()
	d := &StorageStep{ExposedSeconds: s.wait.Seconds(), UpdateSeconds: s.update.Seconds(),
		ReadBytes: st.ReadBytes - s.stats0.ReadBytes, WriteBytes: st.WriteBytes - s.stats0.WriteBytes,
		Hits: st.Hits - s.stats0.Hits, Misses: st.Misses - s.stats0.Misses}
	if d.Hits+d.Misses > 0 {
		d.HitRate = float64(d.Hits) / float64(d.Hits+d.Misses)
	}
	s.stats0, s.wait, s.update = st, 0, 0
	return d
}

func (s *sparseStore) close() error {
	s.cache.Close()
	return s.file.Close()
}

// openStorage moves the experts' optimizer state to the storage tiers.
func (t *Trainer) openStorage(acfg optim.AdamWConfig) error {
	if t.par != nil {
		return fmt.Errorf("%w: hierarchical storage runs in one process (not with --ranks or mpirun yet)", ErrOptions)
	}
	var err error
	if t.sparse, err = newSparseStore(t.Net, *t.Opts.Storage, t.Opts.BF16, acfg, t.Opts.Storage.Wrap); err != nil {
		return err
	}
	t.Net.Watch = t.sparse
	for _, p := range t.Net.Params {
		t.clip = append(t.clip, &optim.Param{Name: p.Name, W: p.W, G: p.G})
	}
	return nil
}

// StoragePlan returns the hierarchical storage plan, or nil without one.
func (t *Trainer) StoragePlan() *StoragePlan {
	if t.sparse == nil {
		return nil
	}
	return &t.sparse.plan
}

// StorageStats returns the RAM cache's counts since the start.
func (t *Trainer) StorageStats() offload.CacheStats {
	if t.sparse == nil {
		return offload.CacheStats{}
	}
	return t.sparse.cache.Stats()
}

// Close releases the storage tiers (their file stays; a run resumes from
// its checkpoints, not from the file).
func (t *Trainer) Close() error {
	if t.sparse == nil {
		return nil
	}
	return t.sparse.close()
}

// appendTensors adds every expert's state to a checkpoint's optimizer
// tensors, named as the in-memory optimizer names them (so either kind of
// run resumes the other's checkpoints). Call flush first. The copies are
// held until the checkpoint is written.
func (s *sparseStore) appendTensors(ts []model.F32Tensor) ([]model.F32Tensor, error) {
	err := s.each(context.Background(), false, func(p *model.Param, w, m, v []float32) error {
		ts = append(ts, model.F32Tensor{Name: p.Name + ".exp_avg", Shape: p.Shape, Data: slices.Clone(m)},
			model.F32Tensor{Name: p.Name + ".exp_avg_sq", Shape: p.Shape, Data: slices.Clone(v)})
		if w != nil {
			ts = append(ts, model.F32Tensor{Name: p.Name + ".master", Shape: p.Shape, Data: slices.Clone(w)})
		}
		return nil
	})
	return ts, err
}

// load fills the state from a checkpoint's optimizer tensors (read) taken
// after adam step steps, and sets the experts' working weights from the
// masters.
func (s *sparseStore) load(read func(name string, dst []float32) error, steps int) error {
	s.resume(steps)
	err := s.each(context.Background(), true, func(p *model.Param, w, m, v []float32) error {
		if err := read(p.Name+".exp_avg", m); err != nil {
			return err
		}
		if err := read(p.Name+".exp_avg_sq", v); err != nil {
			return err
		}
		if w != nil {
			return read(p.Name+".master", w)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.cache.Flush(context.Background())
}
