package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/offload"
	"github.com/moesys/moesys/optim"
	"github.com/moesys/moesys/safetensors"
	"github.com/moesys/moesys/tensor"
)

// StateFileName is the SSD tier's file of expert state in
// StorageOptions.Dir, GradFileName its file of deferred gradients.
const (
	StateFileName = "sparse-state.bin"
	GradFileName  = "sparse-grads.bin"
)

// storageReaders is the SSD tier's read queue depth for fetches ahead:
// this disk reads ~2x faster at depth 8 than at 1 (docs/BENCHMARKS.md).
const storageReaders = 8

// storageWriters is its write-back depth: the forward's updates dirty a
// layer's records while the next layer's are read ahead.
const storageWriters = 4

// sparseStore keeps the routed experts' parameters on the SSD tier with a
// RAM cache: each expert's record holds, per tensor, its fp32 master
// weights and AdamW m and v; its deferred gradient has a record of its own
// in a second file, written whole by the backward (no read first) through
// a cache of one layer's gradients, and read by the update (and, with
// gradient accumulation, by the next micro-batch's backward).
// The Net computes in
// the compute tier's two slots (layerTier; MoE layer i in slot i%2): a
// layer's routed experts are copied in from their records when it is
// reached (forward: Need; backward: NeedGrad, with the gradient
// accumulated so far), and a backward's gradients are written back to the
// records when the layer is done (Done).
//
// Updates are lazy: an expert's AdamW update of step s (its gradient,
// clipped by the step's global factor) is applied when its layer is next
// reached in a forward pass, its zero-gradient updates of steps it was not
// routed in are replayed when it is next routed, and everything is caught
// up before a checkpoint. Each replayed or deferred update is the same
// kernel.AdamW call on the same values as the in-memory optimizer's, and
// the gradient norm adds the same per-tensor sums in the same order, so
// weights and losses are bit-identical to in-memory training. While a
// layer computes, the next MoE layer's records are read ahead (SSD -> RAM):
// exactly the experts with a deferred update, plus those it lags for that
// a pre-gate chose (exact) or that it used last step (predicted); in
// backward, the previous layer's (exact: its forward chose them).
type sparseStore struct {
	net   *model.Net
	plan  StoragePlan
	file  *offload.StateFile
	cache *offload.StateCache
	// The deferred gradients: records of their own (written blind by the
	// backward, read once by the update), with a cache of one layer's.
	gfile            *offload.StateFile
	gcache           *offload.StateCache
	adam             optim.AdamWConfig
	bf16             bool
	E, FD            int // E: the local experts (all, or this rank's share), first..first+E
	first            int
	comm             dist.Comm // a parallel run's (nil: one process)
	mask, masks      []byte    // routing masks: this rank's (global experts), every rank's
	moeIx            []int     // layer -> MoE index, -1 for a dense layer
	layers           []int     // MoE index -> layer
	next             []int     // MoE index -> the next one (wrapping)
	views            [][][3]*model.Param
	tiers            []*layerTier
	upTo             [][]int  // the adam step each expert's state and weights reflect
	pend             [][]bool // its update of step upTo+1 waits, with its gradient in its record
	gradAt           [][]int  // the store step whose gradient its record holds (-1: none)
	fwd              [][]bool // the experts the layer's last forward loaded (its backward's)
	used, prev, hint [][]bool
	sq               [][][3]float64 // this step's per-tensor gradient sums of squares
	lrs              []float64      // lrs[k-base-1]: adam step k's learning rate
	scales           []float32      // scales[k-base-1]: its clipping factor
	base             int
	stepNo           int // the step under way (store steps, applied or not, start at 1)
	zero, tmp        []float32
	slotOf           [2]int // the MoE layer whose forward weights each compute-tier slot holds (-1: none)
	ids              []int  // loadSet's scratch
	sts              [][]float32
	dirty            []bool
	gen              uint64
	layerGen         []uint64
	routed           []bool
	paramAt          map[*model.Param][3]int // expert Param -> (MoE index, expert, tensor)

	wait, waitBack, update, copying time.Duration // exposed state waits (forward, backward), update compute and compute-tier copies, this step
	inBackward                      bool          // inside NeedGrad (its waits count as backward's)
	backward                        bool          // the step is in backward: a Need is a recomputation
	fwdHits, fwdMisses              int64         // this step's forward acquisitions (the prefetch's figure)
	toTier, fromTier                int64         // bytes copied RAM -> compute tier (weights, gradients) and back (gradients), this step
	stats0, gstats0                 offload.CacheStats
}

// StorageStep is one step's hierarchical-storage figures.
type StorageStep struct {
	// ExposedSeconds is the time forward waited for sparse state (SSD ->
	// RAM, path 2) that the prefetch did not hide; UpdateSeconds the
	// sparse updates' compute (on the critical path).
	ExposedSeconds float64 `json:"exposed_seconds"`
	// BackwardExposedSeconds is the backward's waits for the records of
	// the experts it recomputes with (read ahead one layer, in reverse),
	// for the gradients earlier micro-batches accumulated, and for
	// gradient buffers (a victim's write-back).
	BackwardExposedSeconds float64 `json:"backward_exposed_seconds"`
	UpdateSeconds          float64 `json:"update_seconds"`
	// LoadSeconds is the copying of experts into the compute tier (and
	// their gradients back), on the critical path.
	LoadSeconds float64 `json:"load_seconds"`
	ReadBytes   int64   `json:"ssd_read_bytes"`    // SSD -> RAM, expert states
	WriteBytes  int64   `json:"ssd_written_bytes"` // RAM -> SSD, expert states
	// The deferred gradients' traffic: SSD -> RAM (for an update whose
	// gradient was evicted) and RAM -> SSD.
	GradReadBytes  int64   `json:"ssd_grad_read_bytes"`
	GradWriteBytes int64   `json:"ssd_grad_written_bytes"`
	Hits           int64   `json:"hits"`
	Misses         int64   `json:"misses"`
	HitRate        float64 `json:"hit_rate"`
	// ForwardHitRate counts only the forward pass's acquisitions (a
	// layer's backward finds its experts' records again, mostly in RAM).
	ForwardHitRate float64 `json:"forward_hit_rate"`
	// TierInBytes and TierOutBytes are the bytes copied from the RAM
	// tier into the compute tier (working weights, accumulated gradients)
	// and back (gradients).
	TierInBytes  int64 `json:"tier_in_bytes"`
	TierOutBytes int64 `json:"tier_out_bytes"`
	// ComputeTierBytes is the compute-tier memory resident at the step's
	// end (mincore; the slots are never released, so the most this step;
	// the plan's ComputeBytes bounds it).
	ComputeTierBytes int64 `json:"compute_tier_bytes"`
}

// newSparseStore creates the SSD tier for the Net's local experts under so,
// fills their records from src (moments zero, adam step base) and binds
// the Net's MoE layers to the two compute-tier slots. In a
// parallel run (comm, W > 1 ranks) each rank keeps its own experts' state
// in files of its own in so.Dir, and learns which of its experts a layer's
// tokens (every rank's) chose from the routing masks gathered over comm.
func newSparseStore(net *model.Net, so StorageOptions, bf16 bool, adam optim.AdamWConfig, wrap func(offload.RecordIO) offload.RecordIO, comm dist.Comm, src expertSource) (*sparseStore, error) {
	c := net.Cfg
	W, rank := 1, 0
	if comm != nil {
		W, rank = comm.Size(), comm.Rank()
	}
	first, El := net.LocalExperts()
	if El*W != c.E {
		return nil, fmt.Errorf("%w: storage: %d local experts of %d over %d ranks", ErrOptions, El, c.E, W)
	}
	p, err := PlanStorageRanks(c, bf16, so, W)
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
	f, err := offload.CreateStateFile(filepath.Join(so.Dir, storageFileName(StateFileName, rank, W)), p.Records, int(p.RecordBytes), wrap)
	if err != nil {
		return nil, err
	}
	s := &sparseStore{net: net, plan: p, file: f, adam: adam, bf16: bf16, E: El, first: first, FD: c.ExpertFFN * c.D,
		moeIx: make([]int, c.L), zero: make([]float32, c.ExpertFFN*c.D), tmp: make([]float32, c.ExpertFFN*c.D),
		routed: make([]bool, El), paramAt: map[*model.Param][3]int{}, mask: make([]byte, c.E)}
	if W > 1 {
		s.comm, s.masks = comm, make([]byte, W*c.E)
	}
	s.cache = offload.NewStateCache(f, offload.StateCacheConfig{Cap: p.CacheRecords, Beta: so.Beta, Every: so.Every, Readers: storageReaders, Writers: storageWriters})
	if s.gfile, err = offload.CreateStateFile(filepath.Join(so.Dir, storageFileName(GradFileName, rank, W)), p.Records, int(p.GradRecordBytes), wrap); err != nil {
		s.close()
		return nil, err
	}
	s.gcache = offload.NewStateCache(s.gfile, offload.StateCacheConfig{Cap: p.GradCacheRecords, Beta: so.Beta, Every: so.Every, Readers: 2})
	sp := model.SpecFor(c.Arch)
	for l := range s.moeIx {
		s.moeIx[l] = -1
	}
	for mi, l := range c.MoELayers() {
		s.moeIx[l] = mi
		s.layers = append(s.layers, l)
		vs := make([][3]*model.Param, El)
		for e := range vs {
			g, u, d := sp.Expert(l, first+e)
			vs[e] = [3]*model.Param{net.Param(g), net.Param(u), net.Param(d)}
			for j, q := range vs[e] {
				s.paramAt[q] = [3]int{mi, e, j}
			}
		}
		s.views = append(s.views, vs)
		s.upTo = append(s.upTo, make([]int, El))
		s.gradAt = append(s.gradAt, make([]int, El))
		s.sq = append(s.sq, make([][3]float64, El))
		for _, b := range []*[][]bool{&s.pend, &s.used, &s.prev, &s.hint, &s.fwd} {
			*b = append(*b, make([]bool, El))
		}
	}
	nm := len(s.views)
	s.next, s.layerGen = make([]int, nm), make([]uint64, nm)
	s.slotOf = [2]int{-1, -1}
	for mi := range s.next {
		s.next[mi] = (mi + 1) % nm
		for e := range s.gradAt[mi] {
			s.gradAt[mi][e] = -1
		}
	}
	// Fresh state: masters are the initial weights src gives, moments
	// zero, one record at a time.
	if err := s.fillRecords(src); err != nil {
		s.close()
		return nil, err
	}
	// The compute tier: two layers' buffers, MoE layer mi computing in
	// slot mi%2 (so the next layer's is the other one).
	w13, w2, bf16c := net.ExpertBufferLens()
	for mi, l := range s.layers {
		if mi < 2 {
			t, err := newLayerTier(w13, w2, bf16c)
			if err != nil {
				s.close()
				return nil, err
			}
			s.tiers = append(s.tiers, t)
		}
		if err := net.BindExpertBuffers(l, s.tiers[mi%2].bufs); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

func (s *sparseStore) id(mi, e int) int { return mi*s.E + e }

// expertSource gives the stored experts' initial weights: it calls emit
// with each of the rank's routed expert tensors (any order; vals valid
// during the call).
type expertSource func(emit func(p *model.Param, vals []float32) error) error

// netExperts is the weights a Net holds (its experts inside it).
func netExperts(net *model.Net) expertSource {
	return func(emit func(p *model.Param, vals []float32) error) error {
		for _, p := range net.Params {
			if _, routed := net.RoutedExpert(p); routed && p.W != nil {
				if err := emit(p, p.W); err != nil {
					return err
				}
			}
		}
		return nil
	}
}

// initExperts is Init's values for a Net keeping its experts outside.
func initExperts(net *model.Net, seed uint64, std float64) expertSource {
	return func(emit func(p *model.Param, vals []float32) error) error {
		return net.InitExperts(seed, std, emit)
	}
}

// checkpointExperts reads the experts of net (kept outside it) from the
// weights of checkpoint dir.
func checkpointExperts(dir string, net *model.Net) expertSource {
	return func(emit func(p *model.Param, vals []float32) error) error {
		set, err := safetensors.OpenModel(dir)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrCheckpoint, dir, err)
		}
		defer set.Close()
		var buf []float32
		for _, p := range net.Params {
			if _, routed := net.RoutedExpert(p); !routed {
				continue
			}
			n := 1
			for _, d := range p.Shape {
				n *= d
			}
			if cap(buf) < n {
				buf = make([]float32, n)
			}
			if err := model.ReadParam(set, p, buf[:n]); err != nil {
				return fmt.Errorf("%w: %s: %v", ErrCheckpoint, dir, err)
			}
			if err := emit(p, buf[:n]); err != nil {
				return err
			}
		}
		return nil
	}
}

// fillRecords writes every expert's first record: masters from src,
// moments zero. An expert's record is written once its three tensors have
// come (src gives them one expert after another; a record is staged at a
// time).
func (s *sparseStore) fillRecords(src expertSource) error {
	buf := offload.AlignedBytes(s.file.SlotBytes())
	st := s.state(s.file.Payload(buf))
	pending, have, written := -1, 0, 0
	err := src(func(p *model.Param, vals []float32) error {
		at, ok := s.paramAt[p]
		if !ok {
			return fmt.Errorf("train: storage: %s is not one of this rank's experts", p.Name)
		}
		if len(vals) != s.FD {
			return fmt.Errorf("train: storage: %s: %d values, want %d", p.Name, len(vals), s.FD)
		}
		id := s.id(at[0], at[1])
		if id != pending {
			if pending >= 0 {
				return fmt.Errorf("train: storage: expert record %d left with %d of its 3 tensors", pending, have)
			}
			clear(st)
			pending, have = id, 0
		}
		copy(s.part(st, at[2], partW), vals)
		if have++; have == 3 {
			if err := s.file.Write(context.Background(), buf, id); err != nil {
				return err
			}
			pending, written = -1, written+1
		}
		return nil
	})
	if err == nil && (pending >= 0 || written != s.plan.Records) {
		err = fmt.Errorf("train: storage: %d of %d expert records filled", written, s.plan.Records)
	}
	return err
}

// storageFileName is a rank's name for a storage file (the name itself in
// one process).
func storageFileName(name string, rank, W int) string {
	if W == 1 {
		return name
	}
	base, ext, _ := strings.Cut(name, ".")
	return fmt.Sprintf("%s.rank-%d-of-%d.%s", base, rank, W, ext)
}

// routedLocal sets s.routed to the local experts idsTK chooses, or, in a
// parallel run, that any rank's tokens choose (a collective).
func (s *sparseStore) routedLocal(ctx context.Context, idsTK []int32) error {
	clear(s.mask)
	for _, e := range idsTK {
		s.mask[e] = 1
	}
	if s.comm != nil {
		if err := dist.AllGatherOf(ctx, s.comm, s.mask, s.masks); err != nil {
			return fmt.Errorf("storage: routing masks: %w", err)
		}
		for i, v := range s.masks {
			s.mask[i%len(s.mask)] |= v
		}
	}
	for e := range s.routed {
		s.routed[e] = s.mask[s.first+e] != 0
	}
	return nil
}

// state views a record's payload as float32s.
func (s *sparseStore) state(b []byte) []float32 {
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// A record's parts per tensor.
const (
	partW     = iota // fp32 master weights
	partM            // AdamW m
	partV            // AdamW v
	statParts        // parts per tensor
)

// part returns part k of tensor j (gate, up, down) of an expert's state.
func (s *sparseStore) part(st []float32, j, k int) []float32 {
	o := (j*statParts + k) * s.FD
	return st[o : o+s.FD]
}

// loadWeights sets expert e's working weights in the compute tier from its
// masters: in bf16 training the bf16 copies, which are all the layer's
// products read, or, where the CPU has no bf16 products (no copies), the
// weights rounded to bf16 as Trainer.syncBF16 rounds them.
func (s *sparseStore) loadWeights(mi, e int, st []float32) {
	for j, p := range s.views[mi][e] {
		w := s.part(st, j, partW)
		if !s.bf16 {
			copy(p.W, w)
			continue
		}
		if p.B != nil {
			tensor.F32SliceToBF16(p.B, w)
			continue
		}
		for i, v := range w {
			p.W[i] = math.Float32frombits(uint32(tensor.F32ToBF16(v)) << 16)
		}
	}
}

func (s *sparseStore) steps() int { return s.base + len(s.lrs) }

// acquire pins expert e of MoE layer mi's record, brought up to the
// current adam step: its deferred update (with its clipped gradient, from
// its gradient record) and zero-gradient replays. Release it with
// s.cache.Release(id, dirty).
func (s *sparseStore) acquire(ctx context.Context, mi, e int) (st []float32, dirty bool, err error) {
	t0 := time.Now()
	b, err := s.cache.Acquire(ctx, s.id(mi, e))
	t1 := time.Now()
	if s.inBackward {
		s.waitBack += t1.Sub(t0)
	} else {
		s.wait += t1.Sub(t0)
	}
	if err != nil {
		return nil, false, fmt.Errorf("storage: layer %d expert %d: %w", s.layers[mi], e, err)
	}
	st = s.state(b)
	A := s.steps()
	if s.upTo[mi][e] >= A && !s.pend[mi][e] {
		return st, false, nil
	}
	var gst []float32
	if s.pend[mi][e] {
		gb, err := s.gcache.Acquire(ctx, s.id(mi, e))
		if err != nil {
			s.cache.Release(s.id(mi, e), false)
			return nil, false, fmt.Errorf("storage: layer %d expert %d: gradient: %w", s.layers[mi], e, err)
		}
		defer s.gcache.Release(s.id(mi, e), false)
		gst = s.state(gb)
	}
	t2 := time.Now()
	if s.inBackward {
		s.waitBack += t2.Sub(t1)
	} else {
		s.wait += t2.Sub(t1)
	}
	c := s.adam
	for k := s.upTo[mi][e] + 1; k <= A; k++ {
		lr := s.lrs[k-s.base-1]
		for j := range 3 {
			g := s.zero
			if s.pend[mi][e] && k == s.upTo[mi][e]+1 {
				g = gst[j*s.FD : (j+1)*s.FD]
				if sc := s.scales[k-s.base-1]; sc != 1 { // ClipTo's scaling, on a copy
					for i, v := range g {
						s.tmp[i] = v * sc
					}
					g = s.tmp
				}
			}
			kernel.AdamW(s.part(st, j, partW), g, s.part(st, j, partM), s.part(st, j, partV), k, float32(lr), float32(c.Beta1), float32(c.Beta2), float32(c.Eps), float32(c.WeightDecay))
		}
	}
	s.upTo[mi][e], s.pend[mi][e] = A, false
	s.update += time.Since(t2)
	return st, true, nil
}

// loadSet copies the experts in set of MoE layer mi into the compute tier
// (its slot), caught up: their records are acquired in turn, then
// converted in parallel, then released.
func (s *sparseStore) loadSet(ctx context.Context, mi int, set []bool) error {
	s.ids, s.sts, s.dirty = s.ids[:0], s.sts[:0], s.dirty[:0]
	release := func() {
		for i, e := range s.ids {
			s.cache.Release(s.id(mi, e), s.dirty[i])
		}
	}
	for e, in := range set {
		if !in {
			continue
		}
		st, dirty, err := s.acquire(ctx, mi, e)
		if err != nil {
			release()
			return err
		}
		s.ids, s.sts, s.dirty = append(s.ids, e), append(s.sts, st), append(s.dirty, dirty)
	}
	t := time.Now()
	kernel.Parallel(len(s.ids), func(i int) { s.loadWeights(mi, s.ids[i], s.sts[i]) })
	s.copying += time.Since(t)
	per := int64(3 * s.FD * 4) // f32 weights
	if s.bf16 && s.views[mi][0][0].B != nil {
		per /= 2 // the bf16 copies alone
	}
	s.toTier += int64(len(s.ids)) * per
	release()
	return nil
}

// catchUp brings expert e of MoE layer mi to the current adam step.
func (s *sparseStore) catchUp(ctx context.Context, mi, e int) error {
	_, dirty, err := s.acquire(ctx, mi, e)
	if err == nil {
		s.cache.Release(s.id(mi, e), dirty)
	}
	return err
}

// Need implements model.ExpertWatch: before MoE layer l computes, apply
// its deferred updates, catch up the experts it routes to and copy their
// weights into the compute tier, then start reading the next MoE layer's
// state.
func (s *sparseStore) Need(ctx context.Context, l int, idsTK []int32) error {
	mi := s.moeIx[l]
	if err := s.routedLocal(ctx, idsTK); err != nil {
		return err
	}
	st0 := s.cache.Stats()
	defer func() {
		st := s.cache.Stats()
		s.fwdHits += st.Hits - st0.Hits
		s.fwdMisses += st.Misses - st0.Misses
	}()
	clear(s.fwd[mi])
	for e := 0; e < s.E; e++ {
		if s.pend[mi][e] && !s.routed[e] { // a deferred update only
			if err := s.catchUp(ctx, mi, e); err != nil {
				return err
			}
		}
	}
	s.slotOf[mi%2] = -1
	if err := s.loadSet(ctx, mi, s.routed); err != nil {
		return err
	}
	copy(s.fwd[mi], s.routed)
	s.slotOf[mi%2] = mi
	// Used only once caught up: after a failed pass, afterStep must not
	// defer an update onto an expert still behind.
	for e, r := range s.routed {
		s.used[mi][e] = s.used[mi][e] || r
	}
	if s.backward { // a recomputation inside backward: the next layer's backward is done
		return nil
	}
	clear(s.hint[mi])
	s.cache.DropAhead(s.layerGen[mi])
	s.gcache.DropAhead(s.layerGen[mi])
	s.prefetch(s.next[mi])
	return nil
}

// NeedGrad implements model.ExpertWatch: before MoE layer l's backward,
// copy its forward's experts back into the compute tier with the gradient
// they accumulated in this step's earlier micro-batches, and start reading
// the previous MoE layer's records (exact: its forward chose them).
func (s *sparseStore) NeedGrad(ctx context.Context, l int) error {
	mi := s.moeIx[l]
	s.backward = true // until the step ends (zeroGrads, afterStep)
	s.inBackward = true
	defer func() { s.inBackward = false }()
	if s.slotOf[mi%2] != mi { // else the forward's weights are still there
		if err := s.loadSet(ctx, mi, s.fwd[mi]); err != nil {
			return err
		}
		s.slotOf[mi%2] = mi
	}
	for e, in := range s.fwd[mi] {
		if !in {
			continue
		}
		if s.gradAt[mi][e] != s.stepNo {
			for _, p := range s.views[mi][e] {
				clear(p.G)
			}
			continue
		}
		t0 := time.Now()
		gb, err := s.gcache.Acquire(ctx, s.id(mi, e)) // an earlier micro-batch's (read ahead, or read back)
		s.waitBack += time.Since(t0)
		if err != nil {
			return fmt.Errorf("storage: layer %d expert %d: gradient: %w", l, e, err)
		}
		g := s.state(gb)
		for j, p := range s.views[mi][e] {
			copy(p.G, g[j*s.FD:(j+1)*s.FD])
		}
		s.toTier += int64(len(g)) * 4
		s.gcache.Release(s.id(mi, e), false)
	}
	if mi > 0 { // the previous layer's, during this one's compute
		s.gen++
		s.layerGen[mi-1] = s.gen
		resident := s.slotOf[(mi-1)%2] == mi-1 // its forward copies are still in its slot
		for e, in := range s.fwd[mi-1] {
			if !in {
				continue
			}
			if !resident {
				s.cache.Prefetch(s.id(mi-1, e), s.gen)
			}
			if s.gradAt[mi-1][e] == s.stepNo { // an earlier micro-batch's gradient
				s.gcache.Prefetch(s.id(mi-1, e), s.gen)
			}
		}
	}
	return nil
}

// Done implements model.ExpertWatch: after MoE layer l's backward, its
// experts' gradients go to their gradient records (written whole, not
// read first), with their sums of squares for the norm.
func (s *sparseStore) Done(ctx context.Context, l int, backward bool) error {
	mi := s.moeIx[l]
	if !backward {
		return nil
	}
	for e, in := range s.fwd[mi] {
		if !in {
			continue
		}
		t0 := time.Now()
		gb, err := s.gcache.AcquireBlank(ctx, s.id(mi, e)) // may wait for a victim's write-back
		s.waitBack += time.Since(t0)
		if err != nil {
			return fmt.Errorf("storage: layer %d expert %d: gradient: %w", l, e, err)
		}
		t := time.Now()
		g := s.state(gb)
		for j, p := range s.views[mi][e] {
			copy(g[j*s.FD:(j+1)*s.FD], p.G)
			// The gradient accumulated so far: an expert's last backward
			// of the step leaves its total (micro-batches after it may
			// not route to it).
			s.sq[mi][e][j] = optim.SqSum(p.G)
		}
		s.gradAt[mi][e] = s.stepNo
		s.fromTier += int64(len(g)) * 4
		s.copying += time.Since(t)
		s.gcache.Release(s.id(mi, e), true)
	}
	return nil
}

// residentBytes is the compute tier's memory in use (mincore).
func (s *sparseStore) residentBytes() int64 {
	var n int64
	for _, t := range s.tiers {
		n += t.resident()
	}
	return n
}

// Hint implements model.ExpertWatch: a pre-gate's exact choice of layer l.
func (s *sparseStore) Hint(l int, idsTK []int32) {
	if s.backward { // a recomputation's: that layer's forward is past
		return
	}
	mi := s.moeIx[l]
	for _, e := range idsTK {
		if le := int(e) - s.first; le >= 0 && le < s.E {
			s.hint[mi][le] = true
		}
	}
}

// prefetch starts reading MoE layer mi's records that its next Need will
// touch: deferred updates (exact) and the experts the pre-gate chose
// (exact in one process) or, without a hint, that it used last step
// (predicted).
func (s *sparseStore) prefetch(mi int) {
	s.gen++
	s.layerGen[mi] = s.gen
	hinted := false
	for _, h := range s.hint[mi] {
		hinted = hinted || h
	}
	for e := 0; e < s.E; e++ {
		// A rank's pre-gate sees its own tokens only: with ranks, a hint
		// adds to the prediction instead of replacing it.
		want := s.hint[mi][e] || (!hinted || s.comm != nil) && s.prev[mi][e]
		if s.pend[mi][e] || want { // its weights load from the record, lagging or not
			s.cache.Prefetch(s.id(mi, e), s.gen)
		}
		if s.pend[mi][e] {
			s.gcache.Prefetch(s.id(mi, e), s.gen)
		}
	}
}

// zeroGrads starts a step: a new store step number (the gradients
// records hold from an earlier, perhaps failed, step are not this one's)
// and cleared dense gradients (the experts' start from their records, or
// zero).
func (s *sparseStore) zeroGrads() {
	s.stepNo++
	s.backward = false
	for _, p := range s.net.Params {
		if _, stored := s.paramAt[p]; !stored {
			clear(p.G)
		}
	}
}

// gradSq returns the step's global sum of squared gradients in one
// process: every Param's sum in Net order, the stored experts' from their
// backward, added as optim.GradSq adds them.
func (s *sparseStore) gradSq() float64 {
	var owned []*model.Param
	var G [][]float32
	for _, p := range s.net.Params {
		if _, stored := s.paramAt[p]; !stored {
			owned, G = append(owned, p), append(G, p.G)
		}
	}
	return s.gradSqWith(owned, G)
}

// gradSqWith is the sum of squared gradients over owned (Params in Net
// order, with gradients G) and the stored experts, added in Net order as
// optim.GradSq adds them: in a parallel run, over a rank's owned
// parameters (the stored experts among them).
func (s *sparseStore) gradSqWith(owned []*model.Param, G [][]float32) float64 {
	type term struct {
		g      []float32 // an owned Param's gradient
		at     [3]int    // or a stored expert's tensor
		stored bool
	}
	var ts []term
	k := 0
	for _, p := range s.net.Params {
		if a, ok := s.paramAt[p]; ok {
			ts = append(ts, term{at: a, stored: true})
		} else if k < len(owned) && owned[k] == p {
			ts = append(ts, term{g: G[k]})
			k++
		}
	}
	if k != len(owned) {
		panic("train: storage: the owned Params are not in Net order")
	}
	sums := make([]float64, len(ts))
	kernel.Parallel(len(ts), func(i int) {
		if a := ts[i].at; !ts[i].stored {
			sums[i] = optim.SqSum(ts[i].g)
		} else if s.gradAt[a[0]][a[1]] == s.stepNo {
			sums[i] = s.sq[a[0]][a[1]][a[2]]
		}
	})
	return optim.SumInOrder(sums)
}

// afterStep ends an optimizer step: applied with learning rate lr and
// clipping factor scale (the experts with a gradient this step then have
// their update deferred), or skipped.
func (s *sparseStore) afterStep(applied bool, lr float64, scale float32) {
	if applied {
		s.lrs = append(s.lrs, lr)
		s.scales = append(s.scales, scale)
	}
	A := s.steps()
	for mi := range s.used {
		for e, u := range s.used[mi] {
			if u && applied {
				if s.upTo[mi][e] != A-1 || s.pend[mi][e] {
					panic(fmt.Sprintf("train: storage: layer %d expert %d at step %d (pending %v) after step %d", mi, e, s.upTo[mi][e], s.pend[mi][e], A))
				}
				// Used in a validation pass only: no gradient, a
				// zero-gradient replay later.
				s.pend[mi][e] = s.gradAt[mi][e] == s.stepNo
			}
		}
		s.prev[mi], s.used[mi] = s.used[mi], s.prev[mi]
		clear(s.used[mi])
	}
	s.backward = false
	s.cache.Tick()
	s.cache.DropAhead(s.gen)
	s.gcache.Tick()
	s.gcache.DropAhead(s.gen)
	s.prefetch(0) // the next step's first MoE layer, during its attention
}

// flush catches every expert up, writes the cache back and syncs the file:
// the state is then the in-memory optimizer's.
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
	// Every expert is at the current step with nothing pending: the
	// learning rates and clipping factors so far are no longer needed.
	s.base, s.lrs, s.scales = s.steps(), s.lrs[:0], s.scales[:0]
	return s.file.Sync()
}

// working returns a stored expert tensor's working weights as the Net
// computes with them (caught up): f32, and its bf16 copy where the Net
// keeps one. Fresh slices; the compute tier is not touched (tests compare
// weights through it: MoE layers share the tier's slots).
func (s *sparseStore) working(ctx context.Context, p *model.Param) (w []float32, b []uint16, err error) {
	at, ok := s.paramAt[p]
	if !ok {
		return nil, nil, fmt.Errorf("train: storage: %s is not a stored expert tensor", p.Name)
	}
	err = s.with(ctx, at[0], at[1], false, func(st []float32) error {
		w = slices.Clone(s.part(st, at[2], partW))
		if !s.bf16 {
			return nil
		}
		if p.B != nil {
			b = make([]uint16, len(w))
		}
		for i, v := range w {
			h := tensor.F32ToBF16(v)
			w[i] = math.Float32frombits(uint32(h) << 16)
			if b != nil {
				b[i] = h
			}
		}
		return nil
	})
	return w, b, err
}

// each calls fn with every expert tensor's Param and its state parts
// (master, m, v), caught up (flush first), reading through the cache; with
// write, the parts fn changed are kept.
func (s *sparseStore) each(ctx context.Context, write bool, fn func(p *model.Param, master, m, v []float32) error) error {
	for mi := range s.views {
		for e := range s.views[mi] {
			if err := s.with(ctx, mi, e, write, func(st []float32) error {
				for j, p := range s.views[mi][e] {
					if err := fn(p, s.part(st, j, partW), s.part(st, j, partM), s.part(st, j, partV)); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				return err
			}
		}
	}
	return nil
}

// with calls fn with expert e of MoE layer mi's record, caught up.
func (s *sparseStore) with(ctx context.Context, mi, e int, write bool, fn func(st []float32) error) error {
	st, dirty, err := s.acquire(ctx, mi, e)
	if err != nil {
		return err
	}
	err = fn(st)
	s.cache.Release(s.id(mi, e), dirty || write && err == nil)
	return err
}

// fill returns, for an expert Param, a function that writes part k of its
// state (caught up: flush first) into dst; nil for other Params.
func (s *sparseStore) fill(p *model.Param, k int) func(dst []float32) error {
	at, ok := s.paramAt[p]
	if !ok {
		return nil
	}
	return func(dst []float32) error {
		return s.with(context.Background(), at[0], at[1], false, func(st []float32) error {
			copy(dst, s.part(st, at[2], k))
			return nil
		})
	}
}

// resume sets the adam step count the state reflects (a checkpoint's).
func (s *sparseStore) resume(steps int) {
	s.base, s.lrs, s.scales = steps, nil, nil
	for mi := range s.upTo {
		for e := range s.upTo[mi] {
			s.upTo[mi][e], s.pend[mi][e], s.gradAt[mi][e] = steps, false, -1
		}
	}
}

// stepFigures returns this step's figures and starts the next step's.
func (s *sparseStore) stepFigures() *StorageStep {
	st, gst := s.cache.Stats(), s.gcache.Stats()
	d := &StorageStep{GradReadBytes: gst.ReadBytes - s.gstats0.ReadBytes, GradWriteBytes: gst.WriteBytes - s.gstats0.WriteBytes, ExposedSeconds: s.wait.Seconds(), BackwardExposedSeconds: s.waitBack.Seconds(), UpdateSeconds: s.update.Seconds(), LoadSeconds: s.copying.Seconds(),
		ReadBytes: st.ReadBytes - s.stats0.ReadBytes, WriteBytes: st.WriteBytes - s.stats0.WriteBytes,
		Hits: st.Hits - s.stats0.Hits, Misses: st.Misses - s.stats0.Misses, ComputeTierBytes: s.residentBytes(), TierInBytes: s.toTier, TierOutBytes: s.fromTier}
	if d.Hits+d.Misses > 0 {
		d.HitRate = float64(d.Hits) / float64(d.Hits+d.Misses)
	}
	if s.fwdHits+s.fwdMisses > 0 {
		d.ForwardHitRate = float64(s.fwdHits) / float64(s.fwdHits+s.fwdMisses)
	}
	s.toTier, s.fromTier = 0, 0
	s.stats0, s.gstats0, s.wait, s.waitBack, s.update, s.copying, s.fwdHits, s.fwdMisses = st, gst, 0, 0, 0, 0, 0, 0
	return d
}

// close stops the caches, closes the files and unmaps the compute tier,
// unbinding the Net's MoE layers from it first (the Net cannot compute its
// experts after).
func (s *sparseStore) close() error {
	s.cache.Close()
	err := s.file.Close()
	if s.gcache != nil {
		s.gcache.Close()
	}
	if s.gfile != nil {
		err = errors.Join(err, s.gfile.Close())
	}
	if len(s.tiers) > 0 {
		for _, l := range s.layers {
			s.net.UnbindExpertBuffers(l)
		}
		for _, t := range s.tiers {
			t.free()
		}
		s.tiers = nil
	}
	return err
}

// openStorage moves the (local) experts' parameters to the storage tiers.
func (t *Trainer) openStorage(acfg optim.AdamWConfig, src expertSource) error {
	var comm dist.Comm
	if t.par != nil {
		comm = t.par.comm
	}
	var err error
	if t.sparse, err = newSparseStore(t.Net, *t.Opts.Storage, t.Opts.BF16, acfg, t.Opts.Storage.Wrap, comm, src); err != nil {
		return err
	}
	if t.par != nil {
		t.par.sparse = t.sparse
	}
	t.Net.Watch = t.sparse
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

// Close releases the storage tiers (their files stay; a run resumes from
// its checkpoints, not from the files) and the compute tier: the Net can
// no longer compute its experts.
func (t *Trainer) Close() error {
	if t.sparse == nil {
		return nil
	}
	return t.sparse.close()
}

// weightTensors lists the stored experts' weights for a checkpoint, each
// read from its record when it is written (flush first).
func (s *sparseStore) weightTensors() []model.F32Tensor {
	var ts []model.F32Tensor
	for mi := range s.views {
		for e := range s.views[mi] {
			for _, p := range s.views[mi][e] {
				ts = append(ts, model.F32Tensor{Name: p.Name, Shape: p.Shape, Fill: s.fill(p, partW)})
			}
		}
	}
	return ts
}

// appendTensors adds every expert's state to a checkpoint's optimizer
// tensors, named as the in-memory optimizer names them (so either kind of
// run resumes the other's checkpoints), each read from its record when it
// is written. Call flush first.
func (s *sparseStore) appendTensors(ts []model.F32Tensor) []model.F32Tensor {
	for mi := range s.views {
		for e := range s.views[mi] {
			for _, p := range s.views[mi][e] {
				ts = append(ts, model.F32Tensor{Name: p.Name + ".exp_avg", Shape: p.Shape, Fill: s.fill(p, partM)},
					model.F32Tensor{Name: p.Name + ".exp_avg_sq", Shape: p.Shape, Fill: s.fill(p, partV)})
				if s.bf16 {
					ts = append(ts, model.F32Tensor{Name: p.Name + ".master", Shape: p.Shape, Fill: s.fill(p, partW)})
				}
			}
		}
	}
	return ts
}

// load fills the state from a checkpoint's optimizer tensors (read) taken
// after adam step steps: the moments, and in bf16 training the masters
// (in f32 the weights are the masters, which newSparseStore wrote from
// the checkpoint's weights: checkpointExperts).
func (s *sparseStore) load(read func(name string, dst []float32) error, steps int) error {
	s.resume(steps)
	err := s.each(context.Background(), true, func(p *model.Param, w, m, v []float32) error {
		if err := read(p.Name+".exp_avg", m); err != nil {
			return err
		}
		if err := read(p.Name+".exp_avg_sq", v); err != nil {
			return err
		}
		if s.bf16 {
			return read(p.Name+".master", w)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.cache.Flush(context.Background())
}
