package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/offload"
	"github.com/moesys/moesys/train"
)

func init() {
	benchSuites["storage"] = struct {
		summary string
		run     func(opts benchOptions, progress io.Writer) ([]benchResult, error)
	}{"training with the experts' optimizer state on the SSD tier (25% cached in RAM) vs all in RAM; exposed prefetch time, bytes per tier, hit rate, a model with 4x its RAM budget of expert state", benchStorage}
}

// storageBenchOptions is the small preset in bf16 (the paper's mixed
// precision: 12 bytes of expert state per parameter), with `experts`
// experts, over random bytes.
func storageBenchOptions(experts int) train.Options {
	o, err := train.PresetOptions("small")
	if err != nil {
		panic(err)
	}
	o.Model.E = experts
	o.BF16, o.EvalEvery, o.SaveEvery, o.Steps = true, 0, 0, 1000
	return o
}

// storageCacheBytes is a RAM cache of frac of o's sparse bytes on the SSD
// tier (expert states and deferred gradients), rounded up to whole records
// and at least one MoE layer's (the planner's floor).
func storageCacheBytes(o train.Options, frac float64) int64 {
	FD := o.Model.ExpertFFN * o.Model.D
	slot := offload.StateSlotBytes(3*FD*12) + offload.StateSlotBytes(3*FD*4)
	n := int64(float64(len(o.Model.MoELayers())*o.Model.E)*frac + 0.999)
	return max(n, int64(o.Model.E)) * slot
}

func benchStorage(opts benchOptions, progress io.Writer) ([]benchResult, error) {
	ctx := context.Background()
	rounds, steps := 3, 4
	if opts.quick {
		rounds, steps = 2, 2
	}
	rng := rand.New(rand.NewPCG(1, 2))
	toks := make([]int32, 1<<20)
	for i := range toks {
		toks[i] = int32(rng.IntN(256))
	}
	corpus := &train.Corpus{Train: toks[:len(toks)*3/4], Val: toks[len(toks)*3/4:], Source: "random bytes"}
	dir, err := os.MkdirTemp("", "moesys-bench-storage-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	// In RAM vs on the SSD tier with 25% cached, alternating rounds.
	o := storageBenchOptions(8)
	so := o
	so.Storage = &train.StorageOptions{Dir: dir, SparseMem: storageCacheBytes(o, 0.25)}
	mem, err := train.NewTrainer(o, corpus)
	if err != nil {
		return nil, err
	}
	st, err := train.NewTrainer(so, corpus)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	fmt.Fprint(progress, st.StoragePlan())
	var memTPS, stTPS, exposed, exposedBack, update, load, fwdHit []float64
	var tierPeak int64
	var agg train.StorageStep
	nsteps := 0
	run := func(tr *train.Trainer, n int, rec bool) (float64, error) {
		tok, secs := 0, 0.0
		for range n {
			r, err := tr.TrainStep(ctx)
			if err != nil {
				return 0, err
			}
			tok, secs = tok+r.Tokens, secs+r.Seconds
			if rec && r.Storage != nil {
				exposed, update = append(exposed, r.Storage.ExposedSeconds), append(update, r.Storage.UpdateSeconds)
				load, fwdHit = append(load, r.Storage.LoadSeconds), append(fwdHit, r.Storage.ForwardHitRate)
				exposedBack = append(exposedBack, r.Storage.BackwardExposedSeconds)
				tierPeak = max(tierPeak, r.Storage.ComputeTierBytes)
				agg.ReadBytes += r.Storage.ReadBytes
				agg.WriteBytes += r.Storage.WriteBytes
				agg.GradReadBytes += r.Storage.GradReadBytes
				agg.GradWriteBytes += r.Storage.GradWriteBytes
				agg.TierInBytes += r.Storage.TierInBytes
				agg.TierOutBytes += r.Storage.TierOutBytes
				agg.Hits += r.Storage.Hits
				agg.Misses += r.Storage.Misses
				nsteps++
			}
		}
		return float64(tok) / secs, nil
	}
	for _, tr := range []*train.Trainer{mem, st} { // warm-up (and the first reads)
		if _, err := run(tr, 2, false); err != nil {
			return nil, err
		}
	}
	for i := range rounds {
		a, err := run(mem, steps, false)
		if err != nil {
			return nil, err
		}
		b, err := run(st, steps, true)
		if err != nil {
			return nil, err
		}
		memTPS, stTPS = append(memTPS, a), append(stTPS, b)
		fmt.Fprintf(progress, "round %d: in RAM %.0f tokens/s, SSD tier + 25%% cache %.0f tokens/s\n", i+1, a, b)
	}
	m, s := median(memTPS), median(stTPS)
	ratios := make([]float64, len(memTPS)) // each round's, side by side: robust to the host's drift between rounds
	for i := range ratios {
		ratios[i] = stTPS[i] / memTPS[i]
	}
	n := float64(nsteps)
	hit := 0.0
	if agg.Hits+agg.Misses > 0 {
		hit = float64(agg.Hits) / float64(agg.Hits+agg.Misses)
	}
	p := st.StoragePlan()
	res := []benchResult{
		{Name: "storage_offload_vs_inram", Value: s, Unit: "tokens/s", Bound: m, Ratio: median(ratios), Target: 0.70,
			Note: fmt.Sprintf("small preset bf16, %d experts x %d MoE layers, expert state %.0f MiB on the SSD tier, RAM cache %.0f MiB (%d of %d states); ratio: the median of the rounds' ratios %.2f", o.Model.E, p.MoELayers, float64(p.StateBytes)/(1<<20), float64(p.CacheBytes)/(1<<20), p.CacheRecords, p.Records, ratios)},
		{Name: "storage_exposed_path2_seconds_per_step", Value: median(exposed), Unit: "s", Note: "forward's waits for expert state (SSD -> RAM) the prefetch did not hide, median; path 1 (dense all-gather between ranks) runs over ranks: bench train --ranks 2 --shard-dense reports it"},
		{Name: "storage_exposed_backward_seconds_per_step", Value: median(exposedBack), Unit: "s", Note: "backward's waits for the records of the experts it recomputes with (read one layer ahead, in reverse), median"},
		{Name: "storage_update_seconds_per_step", Value: median(update), Unit: "s", Note: "sparse AdamW updates (compute, on the critical path), median"},
		{Name: "storage_ssd_read_per_step", Value: float64(agg.ReadBytes) / n / (1 << 20), Unit: "MiB", Note: "SSD -> RAM cache"},
		{Name: "storage_ssd_written_per_step", Value: float64(agg.WriteBytes) / n / (1 << 20), Unit: "MiB", Note: "RAM cache -> SSD (write-back)"},
		{Name: "storage_ssd_grad_read_per_step", Value: float64(agg.GradReadBytes) / n / (1 << 20), Unit: "MiB", Note: "deferred gradients SSD -> RAM (for updates whose gradient was evicted)"},
		{Name: "storage_ssd_grad_written_per_step", Value: float64(agg.GradWriteBytes) / n / (1 << 20), Unit: "MiB", Note: "deferred gradients RAM -> SSD (written whole, never read first)"},
		{Name: "storage_tier_in_per_step", Value: float64(agg.TierInBytes) / n / (1 << 20), Unit: "MiB", Note: "RAM -> compute tier: working weights (bf16 copies) and accumulated gradients"},
		{Name: "storage_tier_out_per_step", Value: float64(agg.TierOutBytes) / n / (1 << 20), Unit: "MiB", Note: "compute tier -> RAM: gradients"},
		{Name: "storage_cache_hit_rate", Value: hit, Unit: "", Note: "expert states found in RAM (or on their way), every acquisition (forward, backward, gradient write)"},
		{Name: "storage_forward_hit_rate", Value: median(fwdHit), Unit: "", Note: "the forward pass's acquisitions only (what the one-layer-ahead prefetch had to bring), median"},
		{Name: "storage_compute_tier_load_seconds_per_step", Value: median(load), Unit: "s", Note: "copying experts into the compute tier (forward and backward) and gradients back to their records, median"},
		{Name: "storage_compute_tier_peak_bytes", Value: float64(tierPeak) / (1 << 20), Unit: "MiB", Bound: float64(p.ComputeBytes) / (1 << 20),
			Note: fmt.Sprintf("compute-tier memory resident at the step's end (mincore; the slots are never released), over the plan's bound (two slots of one layer's experts: weights, gradients, bf16 copies); all %d layers' experts would take %.0f MiB", p.MoELayers, float64(p.ComputeBytes)*float64(p.MoELayers)/2/(1<<20))},
	}

	// A model with 4x its RAM budget of expert state trains.
	big := storageBenchOptions(32)
	big.Storage = &train.StorageOptions{Dir: dir, SparseMem: storageCacheBytes(big, 0.25)}
	bt, err := train.NewTrainer(big, corpus)
	if err != nil {
		return nil, err
	}
	defer bt.Close()
	bp := bt.StoragePlan()
	fmt.Fprint(progress, bp)
	var losses, tps []float64
	t0 := time.Now()
	nb := 2 * steps
	for range nb {
		r, err := bt.TrainStep(ctx)
		if err != nil {
			return nil, err
		}
		losses, tps = append(losses, r.Loss), append(tps, float64(r.Tokens)/r.Seconds)
	}
	fmt.Fprintf(progress, "big model: %d steps in %.1fs, loss %.3f -> %.3f\n", nb, time.Since(t0).Seconds(), losses[0], losses[len(losses)-1])
	res = append(res, benchResult{Name: "storage_big_state_over_ram", Value: float64(bp.StateBytes) / float64(bp.CacheBytes), Unit: "x",
		Bound: 3, Ratio: float64(bp.StateBytes) / float64(bp.CacheBytes) / 3, Target: 1,
		Note: fmt.Sprintf("%d experts x %d MoE layers: %.0f MiB of expert state over a %.0f MiB RAM cache; trained %d steps at %.0f tokens/s (median), loss %.3f -> %.3f",
			big.Model.E, bp.MoELayers, float64(bp.StateBytes)/(1<<20), float64(bp.CacheBytes)/(1<<20), nb, median(slices.Clone(tps)), losses[0], losses[len(losses)-1])})
	two, err := benchStorage2D(opts, progress, corpus, dir)
	if err != nil {
		return nil, err
	}
	return append(res, two...), nil
}

// benchStorage2D is both paths of 2D prefetch at once: the storage
// model on 2 in-process ranks (one thread each) with the dense parameters
// sharded (path 1) and each rank's experts on the SSD tier with 25% of its
// share cached (path 2), against the same 2 ranks sharded in RAM,
// alternating rounds; rank 0's figures.
func benchStorage2D(opts benchOptions, progress io.Writer, corpus *train.Corpus, dir string) ([]benchResult, error) {
	const W = 2
	rounds, steps := 3, 3
	if opts.quick {
		rounds, steps = 2, 2
	}
	kernel.SetThreads(1)
	defer kernel.SetThreads(runtime.NumCPU())
	build := func(storage bool) ([]*train.Trainer, error) {
		comms, err := dist.NewLocal(W)
		if err != nil {
			return nil, err
		}
		o := storageBenchOptions(8)
		o.ShardDense = true
		if storage {
			FD := o.Model.ExpertFFN * o.Model.D
			slot := offload.StateSlotBytes(3*FD*12) + offload.StateSlotBytes(3*FD*4)
			El := o.Model.E / W
			n := max((len(o.Model.MoELayers())*El+3)/4, El)
			o.Storage = &train.StorageOptions{Dir: filepath.Join(dir, "2d"), SparseMem: int64(n) * slot}
		}
		trs := make([]*train.Trainer, W)
		errs := make([]error, W)
		var wg sync.WaitGroup
		for r, c := range comms {
			wg.Go(func() { trs[r], errs[r] = train.NewParallelTrainer(o, corpus, c) })
		}
		wg.Wait()
		return trs, errors.Join(errs...)
	}
	run := func(trs []*train.Trainer, n int) ([]train.StepResult, error) {
		out := make([][]train.StepResult, W)
		errs := make([]error, W)
		var wg sync.WaitGroup
		for r, tr := range trs {
			wg.Go(func() {
				for range n {
					s, err := tr.TrainStep(context.Background())
					if err != nil {
						errs[r] = err
						return
					}
					out[r] = append(out[r], s)
				}
			})
		}
		wg.Wait()
		return out[0], errors.Join(errs...)
	}
	mem, err := build(false)
	if err != nil {
		return nil, err
	}
	st, err := build(true)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, tr := range st {
			tr.Close()
		}
	}()
	fmt.Fprint(progress, st[0].StoragePlan())
	for _, trs := range [][]*train.Trainer{mem, st} { // warm-up
		if _, err := run(trs, 1); err != nil {
			return nil, err
		}
	}
	var memTPS, stTPS, p1, p1mem, p2 []float64
	tps := func(r train.StepResult) float64 { return float64(r.Tokens) / r.Seconds }
	for i := range rounds {
		a, err := run(mem, steps)
		if err != nil {
			return nil, err
		}
		b, err := run(st, steps)
		if err != nil {
			return nil, err
		}
		for _, r := range a {
			memTPS, p1mem = append(memTPS, tps(r)), append(p1mem, r.Dense.ExposedSeconds)
		}
		for _, r := range b {
			stTPS, p1 = append(stTPS, tps(r)), append(p1, r.Dense.ExposedSeconds)
			p2 = append(p2, r.Storage.ExposedSeconds+r.Storage.BackwardExposedSeconds)
		}
		fmt.Fprintf(progress, "2D round %d: 2 ranks sharded in RAM %.0f tokens/s, + SSD tier %.0f tokens/s\n", i+1, median(slices.Clone(memTPS[len(memTPS)-steps:])), median(slices.Clone(stTPS[len(stTPS)-steps:])))
	}
	m, s := median(memTPS), median(stTPS)
	return []benchResult{
		{Name: "storage_2d_offload_vs_inram_ranks2", Value: s, Unit: "tokens/s", Bound: m, Ratio: s / m,
			Note: "both paths of 2D prefetch: 2 in-process ranks (1 thread each), dense parameters ZeRO-3 sharded, each rank's experts on the SSD tier with 25% of its share cached, over the same 2 sharded ranks in RAM; global tokens/s, median"},
		{Name: "storage_2d_exposed_path1_seconds_per_step", Value: median(p1), Unit: "s", Bound: median(p1mem),
			Note: "rank 0's waits for the next layer's dense parameters (AllGather from their shards) and gradient reduce-scatters, with storage (bound column: the same in RAM), median"},
		{Name: "storage_2d_exposed_path2_seconds_per_step", Value: median(p2), Unit: "s",
			Note: "rank 0's waits for its experts' records (SSD -> RAM), forward and backward, median"},
	}, nil
}
