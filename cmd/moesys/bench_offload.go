package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/moe"
	"github.com/moesys/moesys/offload"
	"github.com/moesys/moesys/train"
)

func init() {
	benchSuites["offload"] = struct {
		summary string
		run     func(opts benchOptions, progress io.Writer) ([]benchResult, error)
	}{"expert offloading policies on the disk (O_DIRECT) and on a simulated link: the Pre-gated MoE and SE-MoE evaluations",
		func(opts benchOptions, progress io.Writer) ([]benchResult, error) {
			b := defaultOffloadBench(opts.quick)
			b.only = opts.only
			return benchOffload(context.Background(), b, progress)
		}}
}

// offloadSections are the offload suite's sections, in the order they run:
// pre-gated E=64 on the disk and on the simulated link, prefetch-all on
// E=128, the ring, speculative on the trained model.
var offloadSections = []string{"disk", "sim", "e128", "ring", "speculative"}

// runs reports whether section runs.
func (b offloadBench) runs(section string) bool {
	return b.only == nil || slices.Contains(b.only, section)
}

// offloadBench sizes the offload suite. The full and quick runs use the
// issue's Switch-like decoders (d_model 768, d_ff 3072, 12 layers, MoE
// every other layer, top-1, random bf16 weights) and the trained tiny
// preset; the test shrinks every model and count.
type offloadBench struct {
	cache string   // models are made once under it
	only  []string // sections to run (offloadSections); nil: all
	// shape returns the config.json of the Switch-like decoder with e
	// experts per MoE layer.
	shape func(e int) ([]byte, error)
	// simE: the pre-gated model measured on the disk and the link; bigE:
	// the pre-gated model prefetch-all is compared on; ringE: the model
	// (without pre-gates) the ring runs.
	simE, bigE, ringE int
	pregateDist       int // the pre-gated models' distance
	batches           []int
	// simThreads is the compute threads of every run over a simulated
	// link (the disk runs use every core): the link's transfers take CPU
	// here (mapping pages into slots) where a DMA engine's take none, so
	// on a 2-core machine one core plays the DMA engine.
	simThreads int

	prompt     int // prompt tokens before decoding
	decode     int // decode steps per run
	slowDecode int // decode steps of a prefetch-all run (it reads every expert of every block per step)
	rounds     int // runs per policy, alternating; figures are medians

	ringTokens int // tokens of one ring pass (a prefill chunk from an empty cache)
	ringPasses int // timed passes per ring and round
	ringRounds int // rounds of ring passes (its overhead is a median of ringRounds x ringPasses)

	tiny       tinySource
	tinyDecode int     // decode steps on the trained model
	tinyShare  float64 // expert budget of the speculative runs, share of the experts
}

// tinySource says where the speculative runs' trained model comes from.
type tinySource struct {
	existing string // a trained checkpoint used when present ("": none)
	preset   string // else this preset is trained, once, into the cache
	steps    int
	mod      func(o *train.Options)                           // changes to the preset (nil: none)
	corpus   func(ctx context.Context) (*train.Corpus, error) // nil: the Go sources, as `moesys train`
}

// Offload suite sizes: a few dozen decode tokens per run, after a short
// prompt, keep the full suite near 5 minutes once the models exist.
func defaultOffloadBench(quick bool) offloadBench {
	b := offloadBench{
		cache:       benchCacheDir(),
		shape:       func(e int) ([]byte, error) { return model.ShapeConfig(fmt.Sprintf("switch-base-%d", e)) },
		simE:        64,
		bigE:        128,
		ringE:       8,
		pregateDist: 1,
		batches:     []int{1, 4},
		simThreads:  max(runtime.NumCPU()-1, 1),
		prompt:      8,
		decode:      32,
		slowDecode:  3,
		rounds:      3,
		ringTokens:  256,
		ringPasses:  2,
		ringRounds:  3,
		tiny:        tinySource{existing: filepath.Join("runs", "tiny", "step-00000500"), preset: "tiny", steps: 200},
		tinyDecode:  128,
		tinyShare:   0.25,
	}
	if quick {
		b.batches = []int{1}
		b.decode, b.slowDecode, b.rounds = 16, 1, 2
		b.ringPasses, b.tinyDecode = 1, 64
	}
	return b
}

// benchCacheDir is where benchmark models are made once: the user cache
// (os.UserCacheDir()/moesys), else the temporary directory.
func benchCacheDir() string {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	return filepath.Join(cache, "moesys")
}

func benchOffload(ctx context.Context, b offloadBench, progress io.Writer) ([]benchResult, error) {
	kernel.SetThreads(runtime.NumCPU())
	start := time.Now()
	midDir, err := b.switchModel(b.simE, b.pregateDist, progress)
	if err != nil {
		return nil, err
	}
	bigDir, err := b.switchModel(b.bigE, b.pregateDist, progress)
	if err != nil {
		return nil, err
	}
	ringDir, err := b.switchModel(b.ringE, 0, progress)
	if err != nil {
		return nil, err
	}
	var res []benchResult
	// withModel runs section on the model in dir, loaded once (dense
	// weights resident, packed), whose expert source each run sets.
	withModel := func(dir, label string, section func(bm *benchModel) ([]benchResult, error)) error {
		t := time.Now()
		bm, err := openBenchModel(dir, label)
		if err != nil {
			return err
		}
		r, err := section(bm)
		res = append(res, r...)
		fmt.Fprintf(progress, "offload: %s done in %.0f s (%.0f s so far)\n", label, time.Since(t).Seconds(), time.Since(start).Seconds())
		return errors.Join(err, bm.Close())
	}
	var gbps float64 // the link chosen on the simE model, reused for bigE
	if b.runs("disk") || b.runs("sim") || b.runs("e128") {
		if err := withModel(midDir, expertLabel(b.simE), func(bm *benchModel) ([]benchResult, error) {
			var res []benchResult
			if b.runs("disk") {
				r, err := b.disk(ctx, bm, progress)
				if res = append(res, r...); err != nil {
					return res, err
				}
			}
			if !b.runs("sim") && !b.runs("e128") {
				return res, nil
			}
			// e128 alone still calibrates the link on this model.
			r, g, err := b.sim(ctx, bm, progress)
			gbps = g
			if b.runs("sim") {
				res = append(res, r...)
			}
			return res, err
		}); err != nil {
			return res, err
		}
	}
	if b.runs("e128") {
		if err := withModel(bigDir, expertLabel(b.bigE), func(bm *benchModel) ([]benchResult, error) {
			return b.simPrefetchAll(ctx, bm, gbps, progress)
		}); err != nil {
			return res, err
		}
	}
	if b.runs("ring") {
		if err := withModel(ringDir, expertLabel(b.ringE), func(bm *benchModel) ([]benchResult, error) {
			return b.ring(ctx, bm, progress)
		}); err != nil {
			return res, err
		}
	}
	if !b.runs("speculative") {
		fmt.Fprintf(progress, "offload: done in %.0f s\n", time.Since(start).Seconds())
		return res, nil
	}
	r, err := b.speculative(ctx, progress)
	res = append(res, r...)
	fmt.Fprintf(progress, "offload: suite done in %.0f s\n", time.Since(start).Seconds())
	return res, err
}

// simCompute sets the compute threads of the simulated-link runs and
// returns what restores them.
func (b offloadBench) simCompute() (restore func()) {
	prev := kernel.SetThreads(max(b.simThreads, 1))
	return func() { kernel.SetThreads(prev) }
}

// simNote says how the simulated-link runs use the cores.
func (b offloadBench) simNote() string {
	return fmt.Sprintf("every policy (resident too) computes on %d thread(s) of %d cores, the rest standing in for the link's DMA engine, which maps each expert's cached file pages into its slot (no copy)",
		max(b.simThreads, 1), runtime.NumCPU())
}

func expertLabel(e int) string { return fmt.Sprintf("e%d", e) }

// policyName is a policy as result names spell it (no hyphen).
func policyName(p offload.Policy) string {
	if p == offload.PrefetchAll {
		return "prefetchall"
	}
	return string(p)
}

// switchModel returns the offload layout of a random Switch-like bf16
// decoder with e experts, pre-gated dist MoE blocks ahead when dist > 0,
// making it on first use: a random checkpoint (seed 1; random pre-gates
// are fine for speed) written next to the layout, converted
// (model.ConvertToOffload) and removed. The layout is renamed into place
// whole, so an existing directory is complete.
func (b offloadBench) switchModel(e, dist int, progress io.Writer) (string, error) {
	name := fmt.Sprintf("switch-base-%d-bf16-random", e)
	if dist > 0 {
		name = fmt.Sprintf("switch-base-%d-pregate%d-bf16-random", e, dist)
	}
	dir := filepath.Join(b.cache, name+".offload")
	if isOffloadLayout(dir) {
		return dir, nil
	}
	cfg, err := b.shape(e)
	if err != nil {
		return "", err
	}
	if dist > 0 {
		var m map[string]any
		if err := json.Unmarshal(cfg, &m); err != nil {
			return "", err
		}
		m["pregate_distance"] = dist
		if cfg, err = json.MarshalIndent(m, "", "  "); err != nil {
			return "", err
		}
	}
	plain, tmp := dir+".plain.tmp", dir+".tmp"
	for _, d := range []string{plain, tmp} {
		if err := os.RemoveAll(d); err != nil {
			return "", err
		}
	}
	fmt.Fprintf(progress, "offload: writing a random %s checkpoint and converting it to %s (once)\n", name, dir)
	t := time.Now()
	if err := model.WriteRandom(plain, cfg, model.RandomOptions{Seed: 1}); err != nil {
		return "", err
	}
	if err := model.ConvertToOffload(plain, tmp); err != nil {
		return "", err
	}
	if err := os.RemoveAll(plain); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	fmt.Fprintf(progress, "offload: made %s in %.0f s\n", dir, time.Since(t).Seconds())
	return dir, nil
}

// benchModel is an offload layout loaded once: its dense weights resident
// (copied out of the file and packed, as bench decode does), its routed
// experts from whichever source a run sets.
type benchModel struct {
	label  string // names results: "e64", "tiny"
	cfg    *model.Config
	lay    *offload.Layout
	m      *model.Model
	batch  *model.Batch
	prompt func(seq, n int) []int32 // sequence seq's prompt of n tokens
}

func openBenchModel(dir, label string) (*benchModel, error) {
	lay, err := offload.OpenLayout(dir)
	if err != nil {
		return nil, err
	}
	m, err := model.LoadOffloaded(dir, nil)
	if err != nil {
		return nil, err
	}
	m.SetPrecision(model.Fast)
	if _, err := m.MakeResident(true); err != nil {
		return nil, errors.Join(err, m.Close())
	}
	V := m.Cfg.V
	synthetic := func(seq, n int) []int32 {
		t := make([]int32, n)
		for i := range t {
			t[i] = int32((i*7919 + seq*104729 + 13) % V)
		}
		return t
	}
	return &benchModel{label: label, cfg: m.Cfg, lay: lay, m: m, batch: m.NewBatch(), prompt: synthetic}, nil
}

func (bm *benchModel) Close() error { return bm.m.Close() }

func (bm *benchModel) moeLayers() int { return len(bm.cfg.MoELayers()) }

// schedConfig is the scheduler configuration of a policy with slots
// slots (LRU beyond the working set) for batch sequences.
func (bm *benchModel) schedConfig(p offload.Policy, batch, slots int) offload.SchedulerConfig {
	return offload.SchedulerConfig{Policy: p, Cache: offload.CacheLRU, Budget: int64(slots) * bm.lay.SlotBytes(),
		TopK: bm.cfg.K, Batch: batch, PregateDist: bm.cfg.PregateDist, Depth: offload.DefaultDepth}
}

// minSlots is the planner's minimum for p at batch.
func (bm *benchModel) minSlots(p offload.Policy, batch int) (int, error) {
	plan, err := offload.NewPlan(bm.lay, bm.schedConfig(p, batch, 0))
	return plan.MinSlots, err
}

// open starts a scheduler over store (borrowed) for p with slots slots.
func (bm *benchModel) open(ctx context.Context, store offload.Store, p offload.Policy, batch, slots int) (*blockTimer, error) {
	s, err := offload.NewScheduler(ctx, bm.lay, store, bm.schedConfig(p, batch, slots))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", bm.label, p, err)
	}
	return newBlockTimer(s), nil
}

// blockTimer is the expert source a benchmark run gives the model: the
// scheduler, timing each MoE block from its first Acquire to its last
// Release (the wait for its experts and their compute; a block is a run
// of Acquires of one layer) and noting the most experts one block
// acquired. The scheduler's Prefetch and WantsPrediction pass through, so
// the model sends the same hints.
type blockTimer struct {
	*offload.Scheduler

	mu        sync.Mutex
	layer     int       // the block being timed; -1: none
	first     time.Time // its first Acquire
	last      time.Time // its last Release so far
	total     time.Duration
	blocks    int
	maxActive int
}

var (
	_ moe.Speculator    = (*blockTimer)(nil)
	_ moe.AcquireThener = (*blockTimer)(nil)
)

func newBlockTimer(s *offload.Scheduler) *blockTimer { return &blockTimer{Scheduler: s, layer: -1} }

func (t *blockTimer) Acquire(ctx context.Context, layer int, experts []int, w []moe.ExpertWeights) (int, error) {
	return t.AcquireThen(ctx, layer, experts, w, nil)
}

func (t *blockTimer) AcquireThen(ctx context.Context, layer int, experts []int, w []moe.ExpertWeights, then func()) (int, error) {
	now := time.Now()
	t.mu.Lock()
	if layer != t.layer {
		t.endLocked()
		t.layer, t.first, t.last = layer, now, time.Time{}
		t.maxActive = max(t.maxActive, len(experts))
	}
	t.mu.Unlock()
	return t.Scheduler.AcquireThen(ctx, layer, experts, w, then)
}

func (t *blockTimer) Release(w []moe.ExpertWeights) {
	t.Scheduler.Release(w)
	t.mu.Lock()
	t.last = time.Now()
	t.mu.Unlock()
}

func (t *blockTimer) endLocked() {
	if t.layer >= 0 && !t.last.IsZero() {
		t.total += t.last.Sub(t.first)
		t.blocks++
	}
	t.layer = -1
}

// reset starts a new measurement.
func (t *blockTimer) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.layer, t.total, t.blocks, t.maxActive = -1, 0, 0, 0
}

// result is the mean block latency and the most experts one block
// acquired since reset.
func (t *blockTimer) result() (time.Duration, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.endLocked()
	if t.blocks == 0 {
		return 0, t.maxActive
	}
	return t.total / time.Duration(t.blocks), t.maxActive
}

// runStats is what one timed run did.
type runStats struct {
	tokens    int     // token positions computed (decode: batch x steps)
	seconds   float64 // forward passes (waits for experts included, sampling not)
	counts    offload.Counts
	block     time.Duration // mean MoE-block latency
	maxActive int           // most experts one block acquired
	preds     []offload.Prediction
	plan      offload.Plan
	// readSeconds is the time the reads took, summed over reads (a timed
	// store's); 0: not timed.
	readSeconds float64
	// dev is the kernel's accounting of the experts file's block device
	// over the run's steps (with policyRun.disk), devOK whether it was read.
	dev   offload.DiskCounters
	devOK bool
}

func (r runStats) tokS() float64 { return float64(r.tokens) / r.seconds }

func (r runStats) readPerToken() float64 { return float64(r.counts.BytesRead) / float64(r.tokens) }

func (r runStats) stall() float64 { return r.counts.Stall.Seconds() / r.seconds }

// memory describes the run's expert memory.
func (r runStats) memory() string {
	return fmt.Sprintf("%s (%d slots of %s)", humanBytes(r.plan.Bytes()), r.plan.Slots, humanBytes(r.plan.SlotBytes))
}

// pass runs one forward pass of tokens tokens from an empty cache (a
// prefill chunk) with src as the expert source.
func (bm *benchModel) pass(ctx context.Context, src *blockTimer, tokens int) (runStats, error) {
	bm.m.SetExpertSource(src)
	defer bm.m.SetExpertSource(nil)
	s := bm.m.NewSession(tokens)
	before := src.Stats().Snapshot()
	src.reset()
	start := time.Now()
	if _, err := s.ForwardContext(ctx, bm.prompt(0, tokens)); err != nil {
		return runStats{}, err
	}
	r := runStats{tokens: tokens, seconds: time.Since(start).Seconds(), plan: src.Plan()}
	r.counts = src.Stats().Snapshot().Sub(before)
	r.block, r.maxActive = src.result()
	return r, nil
}

// subPredictions is the per-layer predictor counts of the interval
// between snapshots before and after.
func subPredictions(after, before []offload.Prediction) []offload.Prediction {
	old := map[int]offload.Prediction{}
	for _, p := range before {
		old[p.Layer] = p
	}
	var d []offload.Prediction
	for _, p := range after {
		o := old[p.Layer]
		d = append(d, offload.Prediction{Layer: p.Layer, Predicted: p.Predicted - o.Predicted, Used: p.Used - o.Used, Unpredicted: p.Unpredicted - o.Unpredicted})
	}
	return d
}

// medianRun is the run of median speed (the slower middle one of an even
// count).
func medianRun(runs []runStats) runStats {
	s := append([]runStats(nil), runs...)
	sort.Slice(s, func(i, j int) bool { return s[i].tokS() < s[j].tokS() })
	return s[(len(s)-1)/2]
}

// policyRun is one policy's scheduler in a comparison and its runs.
type policyRun struct {
	policy offload.Policy
	slots  int
	src    *blockTimer
	io     *timedStore // the scheduler's store, when timed
	runs   []runStats
	// lastStep is the reads that started during the last decode step (with
	// io); a disk probe replays them.
	lastStep []readRec
	disk     *offload.DiskStat // the slow tier's device, when measured
}

// timedStore counts the time a store's reads take, for the run's read
// speed as the policy saw it (with one read in flight at a time, its
// reads' bandwidth; with more, an average over overlapping reads).
type timedStore struct {
	offload.Store
	nanos atomic.Int64 // time in ReadAt, summed

	mu  sync.Mutex
	log []readRec // the reads since the last take, in the order they started
}

// readRec is one read of a timedStore.
type readRec struct {
	off int64
	n   int
}

// take returns the reads logged since the last take and clears the log.
func (t *timedStore) take() []readRec {
	t.mu.Lock()
	defer t.mu.Unlock()
	l := t.log
	t.log = nil
	return l
}

func (t *timedStore) ReadAt(ctx context.Context, dst []byte, off int64) error {
	t.mu.Lock()
	t.log = append(t.log, readRec{off, len(dst)})
	t.mu.Unlock()
	start := time.Now()
	err := t.Store.ReadAt(ctx, dst, off)
	t.nanos.Add(int64(time.Since(start)))
	return err
}

// Close does not close the store under it, which is shared.
func (t *timedStore) Close() error { return nil }

// decoding is one policy's sequences in a round of alternate.
type decoding struct {
	pr         *policyRun
	seqs       []*model.Session
	toks       [][]int32 // the next pass's tokens per sequence
	seconds    float64
	before     offload.Counts
	predBefore []offload.Prediction
	ioBefore   int64                // pr.io's read time, ns
	dev        offload.DiskCounters // pr.disk's counters over the steps
	devErr     error                // a failed read of them
}

// step runs the sequences' next pass with the source set, and picks each
// sequence's next token greedily.
func (d *decoding) step(ctx context.Context, bm *benchModel) error {
	bm.m.SetExpertSource(d.pr.src)
	if d.pr.io != nil {
		d.pr.io.take()
	}
	var devBefore offload.DiskCounters
	if d.pr.disk != nil && d.devErr == nil {
		devBefore, d.devErr = d.pr.disk.Read()
	}
	t := time.Now()
	out, err := bm.batch.ForwardContext(ctx, d.seqs, d.toks)
	if err != nil {
		return fmt.Errorf("%s: %w", d.pr.policy, err)
	}
	d.seconds += time.Since(t).Seconds()
	if d.pr.disk != nil && d.devErr == nil {
		var after offload.DiskCounters
		if after, d.devErr = d.pr.disk.Read(); d.devErr == nil {
			dd := after.Sub(devBefore)
			d.dev = offload.DiskCounters{Reads: d.dev.Reads + dd.Reads, ReadBytes: d.dev.ReadBytes + dd.ReadBytes, Busy: d.dev.Busy + dd.Busy}
		}
	}
	if d.pr.io != nil {
		d.pr.lastStep = d.pr.io.take()
	}
	for i, lg := range out {
		d.toks[i] = []int32{argmax(lg[len(lg)-bm.cfg.V:])}
	}
	return nil
}

// alternate decodes with the policies side by side, rounds times. In a
// round each policy has batch sequences of its own, prefilled with
// bm.prompt's prompt tokens (untimed), and then each of steps greedy
// decode steps runs once per policy, and once the side step if not nil,
// in an order that rotates from step to step, so the slow spells of this
// shared machine (tens of percent, lasting seconds) hit every policy
// alike, and none is always the one that reads just after another (a
// virtual disk serves recently read blocks faster). A round's runStats
// cover its decode steps. The policies must leave no read in flight
// after a step, or the next one's step would share the slow tier with
// it: true of every policy but prefetch-all and ring (which fetch the
// next token's first blocks ahead), which run in groups of their own.
func (bm *benchModel) alternate(ctx context.Context, what string, prs []*policyRun, batch, prompt, steps, rounds int, side func(ctx context.Context) error, progress io.Writer) error {
	defer bm.m.SetExpertSource(nil)
	for range rounds {
		ds := make([]*decoding, len(prs))
		for i, pr := range prs {
			d := &decoding{pr: pr, seqs: make([]*model.Session, batch), toks: make([][]int32, batch)}
			for j := range batch {
				d.seqs[j] = bm.m.NewSession(prompt + steps + 1)
				d.toks[j] = bm.prompt(j, prompt)
			}
			if err := d.step(ctx, bm); err != nil {
				return fmt.Errorf("%s %s prefill: %w", bm.label, what, err)
			}
			ds[i] = d
		}
		for _, d := range ds {
			d.seconds, d.before, d.predBefore, d.dev = 0, d.pr.src.Stats().Snapshot(), d.pr.src.Predictions(), offload.DiskCounters{}
			if d.pr.io != nil {
				d.ioBefore = d.pr.io.nanos.Load()
			}
			d.pr.src.reset()
			d.pr.src.Stats().PeakInFlight.Store(0) // the decode steps', not the prefill's
		}
		turns := make([]func() error, 0, len(ds)+1)
		for _, d := range ds {
			turns = append(turns, func() error { return d.step(ctx, bm) })
		}
		if side != nil {
			turns = append(turns, func() error { return side(ctx) })
		}
		for s := range steps {
			for i := range turns {
				if err := turns[(s+i)%len(turns)](); err != nil {
					return fmt.Errorf("%s %s: %w", bm.label, what, err)
				}
			}
		}
		for _, d := range ds {
			src := d.pr.src
			r := runStats{tokens: batch * steps, seconds: d.seconds, plan: src.Plan()}
			r.counts = src.Stats().Snapshot().Sub(d.before)
			r.block, r.maxActive = src.result()
			r.preds = subPredictions(src.Predictions(), d.predBefore)
			if d.pr.io != nil {
				r.readSeconds = float64(d.pr.io.nanos.Load()-d.ioBefore) / 1e9
			}
			if d.pr.disk != nil {
				if d.devErr != nil {
					fmt.Fprintf(progress, "offload: warning: %s: %v\n", d.pr.disk, d.devErr)
				} else {
					r.dev, r.devOK = d.dev, true
				}
			}
			d.pr.runs = append(d.pr.runs, r)
			fmt.Fprintf(progress, "offload: %s %s %s b%d: %.1f tokens/s, %.1f MB read per token, MoE block %.2f ms, stalled %.0f%%\n",
				bm.label, what, d.pr.policy, batch, r.tokS(), r.readPerToken()/1e6, ms(r.block), 100*r.stall())
		}
	}
	return nil
}

// calibrate is the median of rounds resident decodes with src: what the
// simulated links are sized by.
func (bm *benchModel) calibrate(ctx context.Context, src *blockTimer, prompt, steps, rounds int, progress io.Writer) (runStats, error) {
	pr := &policyRun{policy: offload.Resident, src: src}
	if err := bm.alternate(ctx, "calibration", []*policyRun{pr}, 1, prompt, steps, rounds, nil, progress); err != nil {
		return runStats{}, err
	}
	return medianRun(pr.runs), nil
}

func ms(d time.Duration) float64 { return d.Seconds() * 1000 }

// blockResult is a run's mean MoE-block latency as a result.
func blockResult(name string, d runStats) benchResult {
	return benchResult{Name: name, Value: ms(d.block), Unit: "ms",
		Note: fmt.Sprintf("mean MoE block, first Acquire to last Release (waiting for experts and computing them); %.1f tokens/s, %.1f MB read per token, expert memory %s",
			d.tokS(), d.readPerToken()/1e6, d.memory())}
}

// diskProbe measures how fast a store delivers the expert blocks a policy
// read, read as the scheduler reads them: the reads of the policy's last
// decode step, replayed (the same offsets and sizes, in the same order),
// depth in flight. Its replays run side by side with the policies' decode
// steps (an alternate side step), so its figure is the disk's over the same
// seconds and on the same blocks: this virtual disk's speed drifts between
// about 0.8 and 2.4 GB/s over minutes, and the host serves blocks read
// recently faster (as every policy's step here reads what the policy
// beside it read one turn before; random blocks of the file measured 0.2
// GB/s in a spell when the runs' own read 0.85).
type diskProbe struct {
	reader *offload.Reader
	mem    offload.HostMemory
	region []byte // depth slots
	slot   int64
	depth  int
	probe  offload.ReadProbe // accumulated
}

func newDiskProbe(lay *offload.Layout, store *offload.FileStore, depth int) (*diskProbe, error) {
	p := &diskProbe{depth: depth, slot: lay.SlotBytes()}
	var err error
	if p.region, err = p.mem.Alloc(depth * int(p.slot)); err != nil {
		return nil, err
	}
	p.reader = offload.NewReader(store, offload.ReaderConfig{Depth: depth})
	p.probe = offload.ReadProbe{Chunk: p.slot, Depth: depth, Direct: store.Direct(), Note: store.Note()}
	return p, nil
}

// replay reads recs, depth in flight, adding to the figure.
func (p *diskProbe) replay(ctx context.Context, recs []readRec) error {
	pend := make([]*offload.Pending, 0, len(recs))
	// Waits are without ctx: every read ends, and a buffer is not reused
	// while the reader owns it.
	wait := func(pd *offload.Pending) error { return pd.Wait(context.Background()) }
	var err error
	var bytes int64
	start := time.Now()
	for i, r := range recs {
		if i >= p.depth {
			if err = wait(pend[i-p.depth]); err != nil {
				break
			}
		}
		if int64(r.n) > p.slot {
			err = fmt.Errorf("a read of %d bytes, over a slot's %d", r.n, p.slot)
			break
		}
		buf := p.region[int64(i%p.depth)*p.slot:]
		pend = append(pend, p.reader.Submit(ctx, offload.Request{Dst: buf[:r.n], Off: r.off}))
		bytes += int64(r.n)
	}
	for _, pd := range pend {
		err = errors.Join(err, wait(pd))
	}
	if err != nil {
		return fmt.Errorf("disk probe: %w", err)
	}
	p.probe.Seconds += time.Since(start).Seconds()
	p.probe.Bytes += bytes
	p.probe.Reads += len(recs)
	return nil
}

func (p *diskProbe) Close() error {
	return errors.Join(p.reader.Close(), p.mem.Free(p.region))
}

// disk measures pregated, ondemand and prefetch-all on the experts file
// read with O_DIRECT, each at its planner minimum (ondemand at
// pregated's), against the bound the disk sets: its bandwidth at the
// queue depth the policy keeps, measured side by side with the policy's
// steps, over the bytes the policy read per token.
func (b offloadBench) disk(ctx context.Context, bm *benchModel, progress io.Writer) ([]benchResult, error) {
	store, err := offload.OpenFileStore(bm.lay.Path)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	if !store.Direct() {
		fmt.Fprintf(progress, "offload: warning: %s\n", store.Note())
	}
	ds, err := offload.OpenDiskStat(bm.lay.Path)
	if err != nil {
		fmt.Fprintf(progress, "offload: warning: %v: the disk bounds use the reader's busy time instead of the device's\n", err)
		ds = nil
	}
	var res []benchResult
	for _, batch := range b.batches {
		r, err := b.diskBatch(ctx, bm, store, ds, batch, progress)
		res = append(res, r...)
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

func (b offloadBench) diskBatch(ctx context.Context, bm *benchModel, store *offload.FileStore, ds *offload.DiskStat, batch int, progress io.Writer) ([]benchResult, error) {
	// Reads in flight: pregated and ondemand read one block's experts at
	// once (W of them, one at batch 1); prefetch-all a whole layer, the
	// reader's depth at a time.
	W := min(batch*bm.cfg.K, bm.cfg.E)
	preSlots, err := bm.minSlots(offload.Pregated, batch)
	if err != nil {
		return nil, err
	}
	allSlots, err := bm.minSlots(offload.PrefetchAll, batch)
	if err != nil {
		return nil, err
	}
	pre := &policyRun{policy: offload.Pregated, slots: preSlots}
	ond := &policyRun{policy: offload.OnDemand, slots: preSlots}
	all := &policyRun{policy: offload.PrefetchAll, slots: allSlots}
	prs := []*policyRun{pre, ond, all}
	// One probe per policy, at the most reads the policy can keep in
	// flight: ondemand one block's W; pregated its slots' worth (this
	// block's and the next's); prefetch-all the reader's depth.
	depth := map[offload.Policy]int{offload.OnDemand: min(W, offload.DefaultDepth),
		offload.Pregated: min(preSlots, offload.DefaultDepth), offload.PrefetchAll: offload.DefaultDepth}
	probes := map[offload.Policy]*diskProbe{}
	for _, pr := range prs {
		if probes[pr.policy], err = newDiskProbe(bm.lay, store, depth[pr.policy]); err != nil {
			break
		}
	}
	for _, pr := range prs {
		if err != nil {
			break
		}
		pr.io, pr.disk = &timedStore{Store: store}, ds
		pr.src, err = bm.open(ctx, pr.io, pr.policy, batch, pr.slots)
	}
	// Each step's side turn replays, on each policy's probe, the reads of
	// that policy's last step, in alternating order (the second replay
	// reads blocks the first just read).
	flip := false
	if err == nil {
		err = bm.alternate(ctx, "disk", []*policyRun{pre, ond}, batch, b.prompt, b.decode, b.rounds,
			func(ctx context.Context) error {
				first, second := pre, ond
				if flip = !flip; flip {
					first, second = ond, pre
				}
				return errors.Join(probes[first.policy].replay(ctx, first.lastStep), probes[second.policy].replay(ctx, second.lastStep))
			}, progress)
	}
	// Prefetch-all last, alone: it leaves reads in flight after each
	// step, and its steps take seconds.
	if err == nil {
		err = bm.alternate(ctx, "disk", []*policyRun{all}, batch, b.prompt, b.slowDecode, 1,
			func(ctx context.Context) error { return probes[all.policy].replay(ctx, all.lastStep) }, progress)
	}
	err = errors.Join(err, closePolicies(prs))
	for _, p := range probes {
		if p != nil {
			err = errors.Join(err, p.Close())
		}
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "offload: disk read beside the b%d runs (their reads replayed): pregated's %s; ondemand's %s; prefetch-all's %s\n",
		batch, probes[offload.Pregated].probe, probes[offload.OnDemand].probe, probes[offload.PrefetchAll].probe)
	suffix := ""
	if batch > 1 {
		suffix = fmt.Sprintf("_b%d", batch)
	}
	var res []benchResult
	for _, pr := range prs {
		d, p := medianRun(pr.runs), probes[pr.policy].probe
		name := fmt.Sprintf("offload_%s_%s_disk%s", policyName(pr.policy), bm.label, suffix)
		// The bound: the disk's bandwidth at the queue depth this run kept,
		// measured on its own reads (the device's bytes over its busy time
		// during the run's steps; the reader's where the kernel's counters
		// cannot be read), over the bytes read per token (the device's
		// during the steps: prefetch-all's reads run on past a step's end).
		// The ratio is then the share of the run the disk was kept busy.
		bw, how, perToken := 0.0, "", d.readPerToken()
		if d.devOK && d.dev.Busy > 0 {
			bw = float64(d.dev.ReadBytes) / d.dev.Busy.Seconds()
			perToken = float64(d.dev.ReadBytes) / float64(d.tokens)
			how = fmt.Sprintf("%s (kernel accounting): %.0f MB read in %.3f s busy, %.0f%% of the run", ds, float64(d.dev.ReadBytes)/1e6, d.dev.Busy.Seconds(), 100*d.dev.Busy.Seconds()/d.seconds)
		} else if d.counts.Busy > 0 {
			bw = float64(d.counts.BytesRead) / d.counts.Busy.Seconds()
			how = fmt.Sprintf("the reader's accounting: %.0f MB read in %.3f s with a read in flight, %.0f%% of the run", float64(d.counts.BytesRead)/1e6, d.counts.Busy.Seconds(), 100*d.counts.Busy.Seconds()/d.seconds)
		}
		bound := bw / perToken
		r := benchResult{Name: name + "_ratio", Value: d.tokS(), Unit: "tokens/s", Bound: bound, Ratio: d.tokS() / bound,
			Note: fmt.Sprintf("batch %d, %d decode tokens, %s; bound = the disk's bandwidth at the queue depth the run kept (at most %d reads in flight), on the run's own reads: %.2f GB/s (%s) / %.1f MB read per token (the scheduler's count: %.1f); the same reads replayed beside the runs at %d in flight: %.2f GB/s; MoE block %.1f ms; stalled %.0f%%; peak expert memory %s",
				batch, d.tokens, directNote(p), d.counts.PeakInFlight, bw/1e9, how, perToken/1e6, d.readPerToken()/1e6,
				p.Depth, p.BytesPerSecond()/1e9, ms(d.block), 100*d.stall(), d.memory())}
		if pr.policy == offload.Pregated && batch == 1 {
			r.Target = 0.85
		}
		rb := p.BytesPerSecond() / d.readPerToken()
		replay := benchResult{Name: name + "_replay_ratio", Value: d.tokS(), Unit: "tokens/s", Bound: rb, Ratio: d.tokS() / rb,
			Note: fmt.Sprintf("the same run against a second bound: its reads replayed beside the runs (each decode step's, one turn later, %d in flight): %.2f GB/s / %.1f MB per token (this disk serves the same blocks at speeds that differ by 2x from one turn to the next)",
				p.Depth, p.BytesPerSecond()/1e9, d.readPerToken()/1e6)}
		res = append(res, r, replay, blockResult(name+"_block_ms", d))
	}
	return res, nil
}

func directNote(p offload.ReadProbe) string {
	if p.Direct {
		return "O_DIRECT"
	}
	return "page cache: " + p.Note
}

func closePolicies(prs []*policyRun) error {
	var err error
	for _, pr := range prs {
		if pr.src != nil {
			err = errors.Join(err, pr.src.Close())
			pr.src = nil
		}
	}
	return err
}

// mapExperts maps an experts file read-only with every page read in,
// holding it in the page cache while mapped: the pages a simulated link's
// pageStore maps into slots come from RAM, so the link alone sets the
// transfer time. unmap releases it.
func mapExperts(path string) (data []byte, unmap func() error, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	data, err = unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, nil, fmt.Errorf("map %s: %w", path, err)
	}
	return data, func() error { return unix.Munmap(data) }, nil
}

// simLink is a simulated link's setup: the experts file in RAM (the page
// cache, held by a mapping), a store delivering it into slots without a
// copy (mem), and the link bandwidth, once chosen.
type simLink struct {
	data  []byte
	unmap func() error
	mem   *pageStore
	gbps  float64
}

// link returns a link of its own for one scheduler over mem: policies
// compared side by side do not queue behind each other's transfers. It is
// not closed (it holds nothing; closing it would close mem).
func (s *simLink) link() *offload.SimLink { return offload.NewSimLink(s.mem, s.gbps, 0) }

func openSim(lay *offload.Layout, progress io.Writer) (*simLink, error) {
	t := time.Now()
	data, unmap, err := mapExperts(lay.Path)
	if err != nil {
		return nil, err
	}
	mem, err := openPageStore(lay.Path)
	if err != nil {
		return nil, errors.Join(err, unmap())
	}
	fmt.Fprintf(progress, "offload: %s of experts in RAM for the simulated link (%.1f s)\n", humanBytes(int64(len(data))), time.Since(t).Seconds())
	return &simLink{data: data, unmap: unmap, mem: mem}, nil
}

// pageStore is the simulated link's source: a Store that "reads" a block
// of the experts file by mapping the file's cached pages over the slot
// (private, read-only, page tables filled at once), so a transfer costs
// the link's delay and a few hundred microseconds of page-table work,
// where a copy out of RAM would take a core for milliseconds per expert
// and as much memory bandwidth as the decode itself. Every slot filled
// through it stays read-only and must only ever be filled through it
// (each fill maps over the last); slots must be page-aligned host memory
// (offload.HostMemory), as blocks are.
type pageStore struct{ f *os.File }

func openPageStore(path string) (*pageStore, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &pageStore{f: f}, nil
}

func (s *pageStore) ReadAt(ctx context.Context, dst []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(dst) == 0 {
		return nil
	}
	p := unsafe.Pointer(unsafe.SliceData(dst))
	if uintptr(p)%offload.Align != 0 || len(dst)%offload.Align != 0 || off%offload.Align != 0 {
		return fmt.Errorf("page store: read of %d bytes at %d into %p: %w", len(dst), off, p, offload.ErrAlign)
	}
	if _, err := unix.MmapPtr(int(s.f.Fd()), off, p, uintptr(len(dst)), unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_FIXED|unix.MAP_POPULATE); err != nil {
		return fmt.Errorf("page store: map %d bytes at %d: %w", len(dst), off, err)
	}
	return nil
}

func (s *pageStore) Close() error { return s.f.Close() }

// Close closes the store and unmaps the file.
func (s *simLink) Close() error { return errors.Join(s.mem.Close(), s.unmap()) }

// sim runs the paper regime on the pre-gated simE model: a link whose
// bandwidth makes one expert's transfer take one MoE block's compute
// (measured first on the resident model: a decode step's time over its MoE
// blocks, the window in which block N+1's experts can arrive while block N
// and the dense layer after it compute), then resident, pregated and
// ondemand alternating at pregated's minimum budget, and prefetch-all
// once. It returns the link's bandwidth.
func (b offloadBench) sim(ctx context.Context, bm *benchModel, progress io.Writer) ([]benchResult, float64, error) {
	defer b.simCompute()()
	sl, err := openSim(bm.lay, progress)
	if err != nil {
		return nil, 0, err
	}
	prs, res, gbps, err := b.simRuns(ctx, bm, sl, progress)
	err = errors.Join(err, closePolicies(prs), sl.Close())
	return res, gbps, err
}

func (b offloadBench) simRuns(ctx context.Context, bm *benchModel, sl *simLink, progress io.Writer) ([]*policyRun, []benchResult, float64, error) {
	resident := &policyRun{policy: offload.Resident, slots: len(bm.lay.Blocks)}
	prs := []*policyRun{resident}
	var err error
	// Resident reads every expert once, at open, from RAM: no link.
	if resident.src, err = bm.open(ctx, sl.mem, offload.Resident, 1, resident.slots); err != nil {
		return prs, nil, 0, err
	}
	calib, err := bm.calibrate(ctx, resident.src, b.prompt, b.decode, b.rounds, progress)
	if err != nil {
		return prs, nil, 0, err
	}
	block := calib.seconds / float64(calib.tokens) / float64(bm.moeLayers())
	slot := bm.lay.SlotBytes()
	sl.gbps = float64(slot) / block / 1e9
	fmt.Fprintf(progress, "offload: resident %s decodes %.1f tokens/s: %.2f ms per MoE block; simulated link %.2f GB/s moves one expert (%s) in that time\n",
		bm.label, calib.tokS(), 1000*block, sl.gbps, humanBytes(slot))
	res := []benchResult{{Name: "offload_sim_link_gbps", Value: sl.gbps, Unit: "GB/s",
		Note: fmt.Sprintf("chosen so one %s expert (%s) crosses the simulated link in one MoE block's compute, %.2f ms (resident %s decode step %.2f ms, median of %d runs, / %d MoE blocks), as transfer and compute compare in the Pre-gated MoE paper (A100, PCIe 4; this disk is ~20x slower); %s",
			bm.label, humanBytes(slot), 1000*block, bm.label, 1000/calib.tokS(), b.rounds, bm.moeLayers(), b.simNote())}}

	preSlots, err := bm.minSlots(offload.Pregated, 1)
	if err != nil {
		return prs, res, sl.gbps, err
	}
	allSlots, err := bm.minSlots(offload.PrefetchAll, 1)
	if err != nil {
		return prs, res, sl.gbps, err
	}
	pre := &policyRun{policy: offload.Pregated, slots: preSlots}
	ond := &policyRun{policy: offload.OnDemand, slots: preSlots}
	all := &policyRun{policy: offload.PrefetchAll, slots: allSlots}
	for _, pr := range []*policyRun{pre, ond, all} {
		if pr.src, err = bm.open(ctx, sl.link(), pr.policy, 1, pr.slots); err != nil {
			return prs, res, sl.gbps, err
		}
		prs = append(prs, pr)
	}
	if err := bm.alternate(ctx, "sim", []*policyRun{resident, pre, ond}, 1, b.prompt, b.decode, b.rounds, nil, progress); err != nil {
		return prs, res, sl.gbps, err
	}
	if err := bm.alternate(ctx, "sim", []*policyRun{all}, 1, b.prompt, b.slowDecode, 1, nil, progress); err != nil {
		return prs, res, sl.gbps, err
	}
	dr, dp, do, da := medianRun(resident.runs), medianRun(pre.runs), medianRun(ond.runs), medianRun(all.runs)
	at := fmt.Sprintf("batch 1, link %.2f GB/s, %d decode tokens (medians of %d rounds, each step run once per policy in turn), both at pregated's minimum budget %s", sl.gbps, dp.tokens, b.rounds, dp.memory())
	res = append(res,
		benchResult{Name: fmt.Sprintf("offload_pregated_vs_ondemand_%s_sim", bm.label), Value: dp.tokS(), Unit: "tokens/s", Bound: do.tokS(), Ratio: dp.tokS() / do.tokS(), Target: 1.5,
			Note: fmt.Sprintf("pregated tokens/s over ondemand's (the bound), %s; stalled %.0f%% vs %.0f%%", at, 100*dp.stall(), 100*do.stall())},
		benchResult{Name: fmt.Sprintf("offload_pregated_vs_resident_%s_sim", bm.label), Value: dp.tokS(), Unit: "tokens/s", Bound: dr.tokS(), Ratio: dp.tokS() / dr.tokS(), Target: 0.75,
			Note: fmt.Sprintf("pregated tokens/s over resident's (every expert in memory, %s), same alternation; the first MoE block of each token reads its expert serially (stalled %.0f%%)", dr.memory(), 100*dp.stall())},
		benchResult{Name: fmt.Sprintf("offload_prefetchall_vs_pregated_%s_sim", bm.label), Value: da.tokS(), Unit: "tokens/s", Bound: dp.tokS(), Ratio: da.tokS() / dp.tokS(),
			Note: fmt.Sprintf("prefetch-all tokens/s (%d decode tokens, run after the others) over pregated's; expert memory %s, %.0f MB moved per token", da.tokens, da.memory(), da.readPerToken()/1e6)},
		memoryResult(bm.label, dp),
	)
	for _, pr := range prs {
		res = append(res, blockResult(fmt.Sprintf("offload_%s_%s_sim_block_ms", policyName(pr.policy), bm.label), medianRun(pr.runs)))
	}
	return prs, res, sl.gbps, nil
}

// memoryResult is pregated's peak expert memory against twice the most
// experts one block activated (the paper's claim: only two blocks'
// activated experts need be resident).
func memoryResult(label string, d runStats) benchResult {
	bound := float64(2*d.maxActive) * float64(d.plan.SlotBytes) / (1 << 20)
	return benchResult{Name: fmt.Sprintf("offload_pregated_memory_%s_sim", label), Value: float64(d.plan.Bytes()) / (1 << 20), Unit: "MiB",
		Bound: bound, Ratio: float64(d.plan.Bytes()) / (1 << 20) / bound, Target: 1, TargetMax: true,
		Note: fmt.Sprintf("peak expert memory (%d slots, allocated whole at open) over 2 x the most experts one block activated (%d) x %s", d.plan.Slots, d.maxActive, humanBytes(d.plan.SlotBytes))}
}

// simPrefetchAll compares prefetch-all with pregated on the bigE model
// over the link of gbps (chosen on the simE model, whose experts and
// blocks are the same size: the bigE model is not run resident, which
// would hold every expert twice in RAM).
func (b offloadBench) simPrefetchAll(ctx context.Context, bm *benchModel, gbps float64, progress io.Writer) ([]benchResult, error) {
	defer b.simCompute()()
	sl, err := openSim(bm.lay, progress)
	if err != nil {
		return nil, err
	}
	sl.gbps = gbps
	preSlots, err := bm.minSlots(offload.Pregated, 1)
	if err != nil {
		return nil, errors.Join(err, sl.Close())
	}
	allSlots, err := bm.minSlots(offload.PrefetchAll, 1)
	if err != nil {
		return nil, errors.Join(err, sl.Close())
	}
	pre := &policyRun{policy: offload.Pregated, slots: preSlots}
	all := &policyRun{policy: offload.PrefetchAll, slots: allSlots}
	prs := []*policyRun{pre, all}
	for _, pr := range prs {
		if pr.src, err = bm.open(ctx, sl.link(), pr.policy, 1, pr.slots); err != nil {
			break
		}
	}
	if err == nil {
		err = bm.alternate(ctx, "sim", []*policyRun{pre}, 1, b.prompt, b.decode, b.rounds, nil, progress)
	}
	if err == nil {
		err = bm.alternate(ctx, "sim", []*policyRun{all}, 1, b.prompt, b.slowDecode, 1, nil, progress)
	}
	if err = errors.Join(err, closePolicies(prs), sl.Close()); err != nil {
		return nil, err
	}
	dp, da := medianRun(pre.runs), medianRun(all.runs)
	return []benchResult{
		{Name: fmt.Sprintf("offload_prefetchall_vs_pregated_%s_sim", bm.label), Value: da.tokS(), Unit: "tokens/s", Bound: dp.tokS(), Ratio: da.tokS() / dp.tokS(),
			Target: 0.1, TargetMax: true,
			Note: fmt.Sprintf("prefetch-all tokens/s over pregated's, batch 1, link %.2f GB/s (chosen on %s); prefetch-all moves %.0f MB per token in %s of slots, pregated %.1f MB in %s",
				gbps, expertLabel(b.simE), da.readPerToken()/1e6, humanBytes(da.plan.Bytes()), dp.readPerToken()/1e6, humanBytes(dp.plan.Bytes()))},
		memoryResult(bm.label, dp),
		blockResult(fmt.Sprintf("offload_pregated_%s_sim_block_ms", bm.label), dp),
		blockResult(fmt.Sprintf("offload_prefetchall_%s_sim_block_ms", bm.label), da),
	}, nil
}

// ring measures SE-MoE's ring memory on the ringE model: K whole-layer
// sections for K from 2 to the MoE layers, against resident, over a link
// at which one whole layer's transfer takes one MoE block's compute (the
// regime SE-MoE assumes, compute >= transfer). The passes are prefill
// chunks of ringTokens tokens: at batch-1 decode a block computes in about
// the time one expert, not a layer, crosses the link.
func (b offloadBench) ring(ctx context.Context, bm *benchModel, progress io.Writer) ([]benchResult, error) {
	defer b.simCompute()()
	sl, err := openSim(bm.lay, progress)
	if err != nil {
		return nil, err
	}
	prs, res, err := b.ringRuns(ctx, bm, sl, progress)
	return res, errors.Join(err, closePolicies(prs), sl.Close())
}

func (b offloadBench) ringRuns(ctx context.Context, bm *benchModel, sl *simLink, progress io.Writer) ([]*policyRun, []benchResult, error) {
	L, E := bm.moeLayers(), bm.cfg.E
	resident := &policyRun{policy: offload.Resident, slots: len(bm.lay.Blocks)}
	prs := []*policyRun{resident}
	var err error
	if resident.src, err = bm.open(ctx, sl.mem, offload.Resident, 1, resident.slots); err != nil {
		return prs, nil, err
	}
	// The link is sized by the fastest of a few resident passes, so that a
	// block's compute covers a layer's transfer in the slow spells and the
	// fast ones alike.
	var c runStats
	for i := range ringCalibration + 1 {
		d, err := bm.pass(ctx, resident.src, b.ringTokens)
		if err != nil {
			return prs, nil, err
		}
		if i == 1 || (i > 1 && d.seconds < c.seconds) {
			c = d
		}
	}
	block := c.seconds / float64(L)
	layerBytes := int64(E) * bm.lay.SlotBytes()
	gbps := float64(layerBytes) / block / 1e9
	sl.gbps = gbps
	fmt.Fprintf(progress, "offload: resident %s runs %d-token passes in %.0f ms: %.1f ms per MoE block; ring link %.2f GB/s moves one layer (%s) in that time\n",
		bm.label, b.ringTokens, 1000*c.seconds, 1000*block, gbps, humanBytes(layerBytes))
	res := []benchResult{{Name: "offload_ring_link_gbps", Value: gbps, Unit: "GB/s",
		Note: fmt.Sprintf("chosen so one whole %s layer (%d experts, %s) crosses the link in one MoE block's compute of a %d-token pass, %.1f ms (the fastest of %d resident passes, %.0f ms, / %d MoE blocks): compute >= transfer; %s",
			bm.label, E, humanBytes(layerBytes), b.ringTokens, 1000*block, ringCalibration, 1000*c.seconds, L, b.simNote())}}
	for k := 2; k <= L; k++ {
		pr := &policyRun{policy: offload.Ring, slots: k * E}
		if pr.src, err = bm.open(ctx, sl.link(), offload.Ring, 1, pr.slots); err != nil {
			return prs, res, err
		}
		prs = append(prs, pr)
	}
	// Each round times, for every K, a resident pass and right after it
	// ringPasses passes of the ring, the first of them after an untimed
	// one (the layers a ring fetched ahead at the end of its last pass,
	// wrapping to the first blocks, arrived while the others ran: a head
	// start the steady state lacks). The overhead is the median over the
	// rounds of each ring's time over the resident pass beside it, so
	// that the slow spells of this shared machine cancel.
	overheads := make([][]float64, len(prs))
	for range b.ringRounds {
		for i, pr := range prs[1:] {
			res0, err := bm.pass(ctx, resident.src, b.ringTokens)
			if err != nil {
				return prs, res, err
			}
			resident.runs = append(resident.runs, res0)
			for j := range 1 + b.ringPasses {
				d, err := bm.pass(ctx, pr.src, b.ringTokens)
				if err != nil {
					return prs, res, fmt.Errorf("ring %s: %w", pr.src.Plan(), err)
				}
				if j > 0 {
					pr.runs = append(pr.runs, d)
					overheads[i+1] = append(overheads[i+1], d.seconds/res0.seconds-1)
				}
			}
			d := pr.runs[len(pr.runs)-1]
			fmt.Fprintf(progress, "offload: %s ring %s: %.0f tokens/s (resident beside it %.0f), MoE block %.1f ms, stalled %.0f%%\n",
				bm.label, sectionsName(pr.src.Plan()), d.tokS(), res0.tokS(), ms(d.block), 100*d.stall())
		}
	}
	dr := medianRun(resident.runs)
	overheadK, overhead := 0, 0.0
	for i, pr := range prs[1:] {
		d := medianRun(pr.runs)
		k := d.plan.Sections
		saved := 1 - float64(d.plan.Slots)/float64(len(bm.lay.Blocks))
		over := median(overheads[i+1])
		if overheadK == 0 && saved >= 0.30 {
			overheadK, overhead = k, over
		}
		res = append(res, benchResult{Name: fmt.Sprintf("offload_ring_k%d_%s_sim", k, bm.label), Value: d.tokS(), Unit: "tokens/s", Bound: dr.tokS(), Ratio: d.tokS() / dr.tokS(),
			Note: fmt.Sprintf("K=%d sections of %d experts (%s of %s): saves %.0f%% of the expert memory; time overhead %+.1f%% vs the resident pass beside it (median of %d); MoE block %.1f ms, stalled %.0f%%",
				k, E, humanBytes(d.plan.Bytes()), humanBytes(int64(len(bm.lay.Blocks))*bm.lay.SlotBytes()), 100*saved, 100*over, len(overheads[i+1]), ms(d.block), 100*d.stall())})
	}
	if overheadK > 0 {
		res = append(res, benchResult{Name: "offload_ring_overhead_sim", Value: overhead, Unit: "fraction", Ratio: overhead, Target: 0.10, TargetMax: true,
			Note: fmt.Sprintf("time overhead vs resident (pass time / resident's - 1) at K=%d, the smallest K saving >= 30%% of the expert memory (%.0f%%); %s, %d-token passes, link %.2f GB/s",
				overheadK, 100*(1-float64(overheadK)/float64(L)), bm.label, b.ringTokens, gbps)})
	} else {
		fmt.Fprintf(progress, "offload: no ring K saves 30%% of %s's expert memory (%d MoE layers): no offload_ring_overhead_sim\n", bm.label, L)
	}
	return prs, res, nil
}

// ringCalibration is the resident passes the ring's link is sized by
// (after one untimed): enough to catch a pass outside a slow spell.
const ringCalibration = 4

func sectionsName(p offload.Plan) string {
	if p.Policy == offload.Ring {
		return fmt.Sprintf("K=%d", p.Sections)
	}
	return string(p.Policy)
}

// tinyPrompt is Go source: what the trained tiny model has read.
const tinyPrompt = "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() {\n\tif len(os.Args) < 2 {\n\t\tfmt."

// speculative runs a model moesys trained (no pre-gates) under
// speculative and ondemand at a budget of tinyShare of its experts, on
// the disk and over a link chosen as in sim, and reports the predictor's
// precision and recall per layer.
func (b offloadBench) speculative(ctx context.Context, progress io.Writer) ([]benchResult, error) {
	src, err := b.tinyCheckpoint(ctx, progress)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(b.cache, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(b.cache, "tiny-offload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "offload")
	if err := model.ConvertToOffload(src, dir); err != nil {
		return nil, err
	}
	bm, err := openBenchModel(dir, "tiny")
	if err != nil {
		return nil, err
	}
	defer bm.Close()
	prompt := []byte(tinyPrompt)
	bm.prompt = func(seq, n int) []int32 {
		t := make([]int32, n)
		for i := range t {
			t[i] = int32(prompt[(i+seq)%len(prompt)])
		}
		return t
	}
	n := len(prompt)
	slots := int(math.Ceil(b.tinyShare * float64(len(bm.lay.Blocks))))
	if m, err := bm.minSlots(offload.Speculative, 1); err != nil || slots < m {
		return nil, fmt.Errorf("tiny: %d slots (%.0f%% of the experts) below speculative's minimum %d: %v", slots, 100*b.tinyShare, m, err)
	}
	fmt.Fprintf(progress, "offload: speculative on %s (%d MoE layers x %d experts, top-%d), budget %d slots (%.0f%% of the experts)\n",
		src, bm.moeLayers(), bm.cfg.E, bm.cfg.K, slots, 100*b.tinyShare)

	// compare alternates speculative and ondemand, each over a store
	// from store.
	compare := func(what string, store func() offload.Store) (spec, ond runStats, err error) {
		prs := []*policyRun{{policy: offload.Speculative, slots: slots}, {policy: offload.OnDemand, slots: slots}}
		for _, pr := range prs {
			if pr.src, err = bm.open(ctx, store(), pr.policy, 1, pr.slots); err != nil {
				break
			}
		}
		if err == nil {
			err = bm.alternate(ctx, what, prs, 1, n, b.tinyDecode, b.rounds, nil, progress)
		}
		if err = errors.Join(err, closePolicies(prs)); err != nil {
			return spec, ond, err
		}
		return medianRun(prs[0].runs), medianRun(prs[1].runs), nil
	}
	var res []benchResult
	vs := func(name, how string, spec, ond runStats) benchResult {
		return benchResult{Name: name, Value: spec.tokS(), Unit: "tokens/s", Bound: ond.tokS(), Ratio: spec.tokS() / ond.tokS(),
			Note: fmt.Sprintf("speculative tokens/s over ondemand's, %s, both at %s (%.0f%% of the experts), %d decode tokens after a %d-byte Go prompt; hit rate %.0f%% vs %.0f%%, %.2f vs %.2f MB read per token",
				how, spec.memory(), 100*b.tinyShare, spec.tokens, n, 100*spec.counts.HitRate(), 100*ond.counts.HitRate(), spec.readPerToken()/1e6, ond.readPerToken()/1e6)}
	}

	store, err := offload.OpenFileStore(bm.lay.Path)
	if err != nil {
		return nil, err
	}
	spec, ond, err := compare("disk", func() offload.Store { return store })
	if err = errors.Join(err, store.Close()); err != nil {
		return nil, err
	}
	res = append(res, vs("offload_speculative_vs_ondemand_tiny_disk", "experts read with O_DIRECT", spec, ond))
	for _, p := range spec.preds {
		c := offload.Counts{Predicted: p.Predicted, PredictedUsed: p.Used, Unpredicted: p.Unpredicted}
		res = append(res,
			benchResult{Name: fmt.Sprintf("offload_speculative_tiny_l%d_precision", p.Layer), Value: c.Precision(), Unit: "fraction",
				Note: fmt.Sprintf("layer %d: %d of the %d experts predicted (layer %d's router on the previous MoE layer's input) were used", p.Layer, p.Used, p.Predicted, p.Layer)},
			benchResult{Name: fmt.Sprintf("offload_speculative_tiny_l%d_recall", p.Layer), Value: c.Recall(), Unit: "fraction",
				Note: fmt.Sprintf("layer %d: %d of the %d experts used were predicted", p.Layer, p.Used, p.Used+p.Unpredicted)})
	}
	all := spec.counts
	res = append(res, benchResult{Name: "offload_speculative_tiny_precision", Value: all.Precision(), Unit: "fraction",
		Note: fmt.Sprintf("all predicted layers; recall %.3f", all.Recall())})

	// The same over a link chosen as in sim: one expert per MoE block.
	defer b.simCompute()()
	sl, err := openSim(bm.lay, progress)
	if err != nil {
		return res, err
	}
	resident, err := bm.open(ctx, sl.mem, offload.Resident, 1, len(bm.lay.Blocks))
	if err != nil {
		return res, errors.Join(err, sl.Close())
	}
	calib, err := bm.calibrate(ctx, resident, n, b.tinyDecode, b.rounds, progress)
	if err = errors.Join(err, resident.Close()); err != nil {
		return res, errors.Join(err, sl.Close())
	}
	block := calib.seconds / float64(calib.tokens) / float64(bm.moeLayers())
	sl.gbps = float64(bm.lay.SlotBytes()) / block / 1e9
	gbps := sl.gbps
	fmt.Fprintf(progress, "offload: resident tiny: %.3f ms per MoE block; link %.2f GB/s moves one expert (%s) in that time\n", 1000*block, gbps, humanBytes(bm.lay.SlotBytes()))
	spec, ond, err = compare("sim", func() offload.Store { return sl.link() })
	if err = errors.Join(err, sl.Close()); err != nil {
		return res, err
	}
	res = append(res, vs("offload_speculative_vs_ondemand_tiny_sim", fmt.Sprintf("simulated link %.2f GB/s (one expert per MoE block's compute, %.3f ms; %s)", gbps, 1000*block, b.simNote()), spec, ond))
	return res, nil
}

// tinyCheckpoint returns a checkpoint of the tiny preset trained by
// moesys: tiny.existing when present (runs/tiny/step-00000500 after `make
// demo`-like training), else one trained once in-process into the cache.
func (b offloadBench) tinyCheckpoint(ctx context.Context, progress io.Writer) (string, error) {
	t := b.tiny
	if t.existing != "" {
		if _, err := os.Stat(filepath.Join(t.existing, "config.json")); err == nil {
			return t.existing, nil
		}
	}
	out := filepath.Join(b.cache, fmt.Sprintf("%s-trained-%d", t.preset, t.steps))
	if dir, err := train.ResolveCheckpoint(out); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
			return dir, nil
		}
	}
	o, err := train.PresetOptions(t.preset)
	if err != nil {
		return "", err
	}
	o.Steps = t.steps
	if t.mod != nil {
		t.mod(&o)
	}
	var corpus *train.Corpus
	if t.corpus != nil {
		corpus, err = t.corpus(ctx)
	} else {
		corpus, err = train.LoadCorpus(ctx, train.DataSpec{}, nil)
	}
	if err != nil {
		return "", err
	}
	tr, err := train.NewTrainer(o, corpus)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(progress, "offload: training the %s preset for %d steps on %s (once, into %s)\n", t.preset, t.steps, corpus.Source, out)
	start := time.Now()
	var last train.StepResult
	for range t.steps {
		if last, err = tr.TrainStep(ctx); err != nil {
			return "", err
		}
	}
	dir, err := tr.Save(out, 1)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(progress, "offload: trained %d steps in %.0f s (loss %.2f)\n", t.steps, time.Since(start).Seconds(), last.Loss)
	return dir, nil
}
