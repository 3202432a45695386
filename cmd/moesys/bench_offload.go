package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"sync"
	"time"

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
			if opts.device == "cuda" {
				return benchOffloadGPU(context.Background(), opts, progress)
			}
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
		ringRounds:  5,
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
	io     *loggedStore // the scheduler's store, when its reads are replayed
	runs   []runStats
	// lastStep is the reads that started during the last decode step (with
	// io); a disk probe replays them.
	lastStep []readRec
	disk     *offload.DiskStat // the slow tier's device, when measured
}

// decoding is one policy's sequences in a round of alternate.
type decoding struct {
	pr         *policyRun
	seqs       []*model.Session
	toks       [][]int32 // the next pass's tokens per sequence
	seconds    float64
	before     offload.Counts
	predBefore []offload.Prediction
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
