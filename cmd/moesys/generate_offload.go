package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/offload"
)

// offloadFlags are generate's flags for a run whose routed experts stay on
// disk (the offload layout `moesys convert` writes) under a memory budget.
type offloadFlags struct {
	policy    string
	budget    byteSize
	cache     string
	depth     int
	dryRun    bool
	report    bool
	noMeasure bool
}

// offloadOnly names the flags that only mean something for an offloaded
// run (--offload itself turns offloading on).
var offloadOnly = []string{"expert-mem", "cache", "read-depth", "dry-run", "report", "no-measure"}

func (o *offloadFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&o.policy, "offload", "", "keep routed experts on disk and run them under a policy: "+
		policyNames()+" (auto: pregated for a model with pre-gates, else speculative; the default for an offload layout)")
	fs.Var(&o.budget, "expert-mem", "expert memory budget: bytes or 512MiB, 2GiB, 1.5G (binary), 3GB (decimal); 0 = one slot per expert")
	fs.StringVar(&o.cache, "cache", string(offload.CacheLRU), "which expert slots beyond the working set keep: "+cacheNames())
	fs.IntVar(&o.depth, "read-depth", offload.DefaultDepth, "expert reads in flight (the disk's queue depth)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print the offload plan (slots, bytes, minimum) and exit without generating")
	fs.BoolVar(&o.report, "report", true, "print the offload report after the run (--report=false: don't)")
	fs.BoolVar(&o.noMeasure, "no-measure", false, "skip measuring the disk's read bandwidth (the report's bound says n/a)")
}

func policyNames() string {
	s := make([]string, len(offload.Policies))
	for i, p := range offload.Policies {
		s[i] = string(p)
	}
	return strings.Join(s, ", ")
}

func cacheNames() string {
	s := make([]string, len(offload.Caches))
	for i, c := range offload.Caches {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}

// isOffloadLayout reports whether dir holds the offload layout.
func isOffloadLayout(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, offload.IndexFile))
	return err == nil
}

// offloaded decides whether a run offloads: --offload given, or dir in
// the offload layout. Offload-only flags on a resident run are an error,
// and so is --offload on a plain checkpoint.
func (o *offloadFlags) offloaded(fs *flag.FlagSet, dir string) (bool, error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	layout := isOffloadLayout(dir)
	on := set["offload"] || layout
	if !on {
		for _, name := range offloadOnly {
			if set[name] {
				return false, fmt.Errorf("--%s needs --offload (and a checkpoint in the offload layout)", name)
			}
		}
		return false, nil
	}
	if !layout {
		return false, fmt.Errorf("--offload: %s is not in the offload layout (no %s); convert it first: moesys convert --model %s --out %s.offload",
			dir, offload.IndexFile, dir, filepath.Clean(dir))
	}
	if o.depth < 1 {
		return false, fmt.Errorf("--read-depth %d: want at least 1", o.depth)
	}
	return true, nil
}

// autoNote says how NewPlan resolved auto for cfg ("" for an explicit
// policy).
func autoNote(asked, got offload.Policy, cfg *model.Config) string {
	if asked != offload.Auto {
		return ""
	}
	why := "the model has no pre-gates"
	if cfg.PregateDist > 0 {
		why = fmt.Sprintf("the model has pre-gates, distance %d", cfg.PregateDist)
	}
	return fmt.Sprintf("auto: %s (%s)", got, why)
}

// offloadRun is an offloaded run's scheduler, plan and counters.
type offloadRun struct {
	plan  offload.Plan
	depth int
	auto  string             // how auto chose the policy, or ""
	probe *offload.ReadProbe // nil: not measured
	sched *offload.Scheduler
	last  offload.Counts // the counters at the end of the last interval
	open  offload.Counts // what opening read (resident: every expert)
}

// planOffload checks the layout and turns the flags into the scheduler's
// configuration and the planner's plan for passes of batch sequences: a
// budget below the policy's minimum fails here, naming the minimum.
func planOffload(dir string, cfg *model.Config, o *offloadFlags, batch int) (offload.SchedulerConfig, *offloadRun, error) {
	policy := offload.Auto
	if o.policy != "" {
		p, err := offload.ParsePolicy(o.policy)
		if err != nil {
			return offload.SchedulerConfig{}, nil, err
		}
		policy = p
	}
	cache, err := offload.ParseCache(o.cache)
	if err != nil {
		return offload.SchedulerConfig{}, nil, err
	}
	lay, err := offload.OpenLayout(dir)
	if err != nil {
		return offload.SchedulerConfig{}, nil, err
	}
	// A pass's working set is up to batch x K experts a layer (generate
	// decodes one sequence; serve up to --max-seqs).
	scfg := offload.SchedulerConfig{Policy: policy, Cache: cache, Budget: int64(o.budget), TopK: cfg.K, Batch: batch,
		PregateDist: cfg.PregateDist, Depth: o.depth}
	plan, err := offload.NewPlan(lay, scfg)
	if err != nil {
		return offload.SchedulerConfig{}, nil, err
	}
	return scfg, &offloadRun{plan: plan, depth: o.depth, auto: autoNote(policy, plan.Policy, cfg)}, nil
}

// measure probes the experts file's read bandwidth at the scheduler's
// queue depth, through a file handle of its own, before the scheduler
// reads anything.
func (r *offloadRun) measure(ctx context.Context, dir string) error {
	lay, err := offload.OpenLayout(dir)
	if err != nil {
		return err
	}
	store, err := offload.OpenFileStore(lay.Path)
	if err != nil {
		return err
	}
	defer store.Close()
	p, err := offload.MeasureRead(ctx, lay, store, offload.ProbeConfig{Depth: r.depth})
	if err != nil {
		return err
	}
	r.probe = &p
	return nil
}

// openOffloaded measures the disk (unless noMeasure), opens the scheduler
// and loads the model's dense weights; the model borrows the scheduler.
// close closes both, model first.
func openOffloaded(ctx context.Context, dir string, scfg offload.SchedulerConfig, r *offloadRun, noMeasure bool, stderr io.Writer) (m *model.Model, close func() error, err error) {
	if !noMeasure {
		if err := r.measure(ctx, dir); err != nil {
			return nil, nil, err
		}
		fmt.Fprintf(stderr, "offload: disk read %s\n", r.probe)
	}
	if r.sched, err = offload.OpenScheduler(ctx, dir, scfg); err != nil {
		return nil, nil, err
	}
	if m, err = model.LoadOffloaded(dir, r.sched); err != nil {
		return nil, nil, errors.Join(err, r.sched.Close())
	}
	r.open = r.sched.Stats().Snapshot()
	r.last = r.open
	return m, func() error { return errors.Join(m.Close(), r.sched.Close()) }, nil
}

// interval reports on the run since the last call: tokens positions
// computed in elapsed.
func (r *offloadRun) interval(phase string, tokens int, elapsed time.Duration) offload.Report {
	now := r.sched.Stats().Snapshot()
	c := now.Sub(r.last)
	r.last = now
	return offload.NewReport(offload.ReportInput{Phase: phase, Plan: r.plan, Counts: c, Tokens: int64(tokens), Elapsed: elapsed, Probe: r.probe})
}

// planResult is the plan as --dry-run --json and the report print it.
type planResult struct {
	Text      string `json:"text"` // Plan.String()
	Policy    string `json:"policy"`
	Auto      string `json:"auto,omitempty"` // how auto chose the policy
	Cache     string `json:"cache"`
	Budget    int64  `json:"budget_bytes"` // 0: no limit
	Slots     int    `json:"slots"`
	SlotBytes int64  `json:"slot_bytes"`
	Bytes     int64  `json:"bytes"` // slots x slot bytes
	Experts   int    `json:"experts"`
	MinSlots  int    `json:"min_slots"`
	MinBytes  int64  `json:"min_bytes"`
	Depth     int    `json:"read_depth"`
}

func (r *offloadRun) planResult() planResult {
	p := r.plan
	return planResult{Text: p.String(), Policy: string(p.Policy), Auto: r.auto, Cache: string(p.Cache), Budget: p.Budget,
		Slots: p.Slots, SlotBytes: p.SlotBytes, Bytes: p.Bytes(), Experts: p.Experts, MinSlots: p.MinSlots,
		MinBytes: int64(p.MinSlots) * p.SlotBytes, Depth: r.depth}
}

// dryRun prints the plan: its String on stdout (how auto chose on
// stderr), or the plan as JSON.
func (r *offloadRun) dryRun(asJSON bool, stdout, stderr io.Writer) error {
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Plan planResult `json:"plan"`
		}{r.planResult()})
	}
	if r.auto != "" {
		fmt.Fprintf(stderr, "offload policy %s\n", r.auto)
	}
	fmt.Fprintln(stdout, r.plan)
	return nil
}

// offloadResult is the offload part of generate's --json output.
type offloadResult struct {
	Plan planResult `json:"plan"`
	// OpenBytesRead is what opening the scheduler read (resident: every
	// expert), before the first token.
	OpenBytesRead int64          `json:"open_bytes_read"`
	Prefill       offload.Report `json:"prefill"` // the prompt's pass
	Decode        offload.Report `json:"decode"`  // the one-token passes after it
}

// printOffloadReport writes the decode report (the steady state the bound
// is about) and a line on the prefill.
func printOffloadReport(w io.Writer, res *offloadResult) {
	p := res.Prefill
	fmt.Fprintf(w, "offload prefill: %d tokens in %.3f s, %s read in %d reads, %d slot hits, %d misses, stalled %.3f s",
		p.Tokens, p.Seconds, humanBytes(p.BytesRead), p.Reads, p.Hits, p.Misses, p.StallSeconds)
	if res.OpenBytesRead > 0 {
		fmt.Fprintf(w, " (and %s read at open)", humanBytes(res.OpenBytesRead))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, res.Decode)
}
