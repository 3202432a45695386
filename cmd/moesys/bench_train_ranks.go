package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/train"
)

// `moesys bench train --ranks 1,2`: data + expert parallel training of the
// small preset over W ranks on this machine, W = 1 (one process, every
// core) against W ranks as MPI processes (mpirun, the cores shared out)
// and as in-process ranks, rounds alternating; tokens/s of the global
// batch and the share of the step each rank waits for communication.

const (
	trainRanksEnv    = "MOESYS_BENCH_TRAIN_RANKS" // set in the MPI ranks of the parallel section
	trainRanksPreset = "small"
)

// rankRun is one parallel measurement: per step, tokens/s of the global
// batch and the communication share of rank 0's step; with the dense
// parameters sharded, the seconds per step path 1 (their gathers and
// reduce-scatters) was exposed and busy.
type rankRun struct {
	tokS, comm, reduce []float64
	exposed, busy      []float64
}

// parallelBenchTrainer builds rank c's trainer of the preset over random
// tokens (c nil: one process), the dense parameters sharded when shard.
func parallelBenchTrainer(c dist.Comm, shard bool) (*train.Trainer, train.Options, error) {
	o, err := train.PresetOptions(trainRanksPreset)
	if err != nil {
		return nil, o, err
	}
	o.ShardDense = shard
	tr, err := train.NewParallelTrainer(o, randomCorpus(o), c)
	return tr, o, err
}

// measureRank runs one warm-up step and steps timed steps on this rank.
func measureRank(c dist.Comm, steps int, shard bool) (rankRun, error) {
	tr, o, err := parallelBenchTrainer(c, shard)
	if err != nil {
		return rankRun{}, err
	}
	var run rankRun
	ctx := context.Background()
	for i := range steps + 1 {
		s, err := tr.TrainStep(ctx)
		if err != nil {
			return rankRun{}, err
		}
		if i == 0 {
			continue
		}
		run.tokS = append(run.tokS, float64(o.Batch*o.Seq*o.Accum)/s.Seconds)
		run.comm = append(run.comm, s.CommSeconds/s.Seconds)
		run.reduce = append(run.reduce, s.ReduceSeconds/s.Seconds)
		if s.Dense != nil {
			run.exposed, run.busy = append(run.exposed, s.Dense.ExposedSeconds), append(run.busy, s.Dense.BusySeconds)
		}
	}
	return run, nil
}

// localRanks measures W in-process ranks, each with its share of the
// cores; rank 0's figures.
func localRanks(W, steps int, shard bool) (rankRun, error) {
	comms, err := dist.NewLocal(W)
	if err != nil {
		return rankRun{}, err
	}
	kernel.SetThreads(max(1, runtime.NumCPU()/W))
	defer kernel.SetThreads(runtime.NumCPU())
	runs := make([]rankRun, W)
	errs := make([]error, W)
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Go(func() { runs[r], errs[r] = measureRank(c, steps, shard) })
	}
	wg.Wait()
	return runs[0], errors.Join(errs...)
}

// mpiRanks measures W MPI ranks (this binary under mpirun); rank 0's
// figures come back as results: tokens/s, comm and reduce shares (and
// path 1's exposed and busy seconds).
func mpiRanks(W, steps int, shard bool, progress io.Writer) (rankRun, error) {
	exe, err := os.Executable()
	if err != nil {
		return rankRun{}, err
	}
	args := []string{"bench", "train", "--ranks", fmt.Sprint(W), "--steps", fmt.Sprint(steps)}
	if shard {
		args = append(args, "--shard-dense")
	}
	cmd := dist.MPIRunCommand(W, exe, args...)
	res, err := runMPIBench(cmd, []string{trainRanksEnv + "=1"}, progress)
	if err != nil {
		return rankRun{}, err
	}
	var run rankRun
	for _, r := range res {
		switch r.Name {
		case "tok_s":
			run.tokS = append(run.tokS, r.Value)
		case "comm":
			run.comm = append(run.comm, r.Value)
		case "reduce":
			run.reduce = append(run.reduce, r.Value)
		case "exposed":
			run.exposed = append(run.exposed, r.Value)
		case "busy":
			run.busy = append(run.busy, r.Value)
		}
	}
	if len(run.tokS) == 0 {
		return rankRun{}, errors.New("the MPI ranks reported no steps")
	}
	return run, nil
}

// trainRanksWorker is one MPI rank of mpiRanks.
func trainRanksWorker(steps int, shard bool) error {
	return mpiBenchWorker("train", func(c dist.Comm) ([]benchResult, error) {
		node, err := dist.NodeOf(context.Background(), c)
		if err != nil {
			return nil, err
		}
		kernel.SetThreads(max(1, runtime.NumCPU()/node.LocalSize))
		run, err := measureRank(c, steps, shard)
		if err != nil {
			return nil, err
		}
		var res []benchResult
		for i := range run.tokS {
			res = append(res, benchResult{Name: "tok_s", Value: run.tokS[i]}, benchResult{Name: "comm", Value: run.comm[i]},
				benchResult{Name: "reduce", Value: run.reduce[i]})
			if i < len(run.exposed) {
				res = append(res, benchResult{Name: "exposed", Value: run.exposed[i]}, benchResult{Name: "busy", Value: run.busy[i]})
			}
		}
		return res, nil
	})
}

// benchTrainRanks is the parallel section: W = 1 and each W of ranks, in
// alternating rounds.
func benchTrainRanks(opts benchOptions, progress io.Writer) ([]benchResult, error) {
	if dist.UnderMPI() {
		if os.Getenv(trainRanksEnv) == "" {
			return nil, errors.New("bench train --ranks starts its MPI ranks itself: run it without mpirun")
		}
		return nil, trainRanksWorker(opts.steps, opts.shard)
	}
	rounds, steps := 3, 5
	if opts.quick {
		rounds, steps = 2, 3
	}
	if opts.steps > 0 {
		steps = opts.steps
	}
	o, err := train.PresetOptions(trainRanksPreset)
	if err != nil {
		return nil, err
	}
	type key struct {
		W          int
		mpi, shard bool
	}
	var keys []key
	for _, W := range opts.ranks {
		if W < 1 || o.Model.E%W != 0 || o.Batch%W != 0 {
			return nil, fmt.Errorf("--ranks %d: the %s preset's %d experts and batch of %d must divide over the ranks", W, trainRanksPreset, o.Model.E, o.Batch)
		}
		if W == 1 {
			continue
		}
		for _, shard := range []bool{false, true} {
			if shard && !opts.shard {
				continue
			}
			if dist.MPIAvailable() {
				keys = append(keys, key{W, true, shard})
			} else if !shard {
				fmt.Fprintf(progress, "train --ranks: no MPI backend in this binary (make build): W=%d runs in-process only\n", W)
			}
			keys = append(keys, key{W, false, shard})
		}
	}
	keys = append([]key{{1, false, false}}, keys...)
	got := map[key]*rankRun{}
	for _, k := range keys {
		got[k] = &rankRun{}
	}
	for r := range rounds {
		for _, k := range keys {
			var run rankRun
			var err error
			switch {
			case k.W == 1:
				kernel.SetThreads(runtime.NumCPU())
				run, err = measureRank(nil, steps, false)
			case k.mpi:
				run, err = mpiRanks(k.W, steps, k.shard, progress)
			default:
				run, err = localRanks(k.W, steps, k.shard)
			}
			if err != nil {
				return nil, fmt.Errorf("%d ranks (%s): %w", k.W, backendName(k.W, k.mpi), err)
			}
			g := got[k]
			g.tokS, g.comm, g.reduce = append(g.tokS, run.tokS...), append(g.comm, run.comm...), append(g.reduce, run.reduce...)
			g.exposed, g.busy = append(g.exposed, run.exposed...), append(g.busy, run.busy...)
			if k.shard {
				fmt.Fprintf(progress, "round %d W=%d %s, dense sharded: %.0f tokens/s, communication %.0f%% of the step; path 1 exposed %.1f of %.1f ms busy per step\n",
					r+1, k.W, backendName(k.W, k.mpi), median(run.tokS), 100*median(run.comm), 1000*median(run.exposed), 1000*median(run.busy))
				continue
			}
			fmt.Fprintf(progress, "round %d W=%d %s: %.0f tokens/s, communication %.0f%% of the step (all-reduce %.0f%%, mostly hidden)\n",
				r+1, k.W, backendName(k.W, k.mpi), median(run.tokS), 100*median(run.comm), 100*median(run.reduce))
		}
	}
	base := median(got[key{1, false, false}].tokS)
	res := []benchResult{{Name: "train_ranks_small_w1", Value: base, Unit: "tok/s",
		Note: fmt.Sprintf("one process, %d threads, %s preset (global batch %d x seq %d); median of %d steps", runtime.NumCPU(), trainRanksPreset, o.Batch, o.Seq, len(got[key{1, false, false}].tokS))}}
	for _, k := range keys[1:] {
		g := got[k]
		name := fmt.Sprintf("train_ranks_small_w%d_%s", k.W, map[bool]string{true: "mpi", false: "local"}[k.mpi])
		tps := median(g.tokS)
		if k.shard {
			name += "_shard_dense"
			res = append(res, benchResult{Name: name, Value: tps, Unit: "tok/s", Bound: base, Ratio: tps / base,
				Note: fmt.Sprintf("%d ranks (%s), dense parameters sharded (ZeRO-3: each group gathered one ahead, gradients reduce-scattered); bound = W=1 tokens/s; medians of %d steps", k.W, backendName(k.W, k.mpi), len(g.tokS))},
				benchResult{Name: name + "_exposed_path1", Value: 1000 * median(g.exposed), Unit: "ms/step",
					Note: fmt.Sprintf("rank 0's wait for the dense gathers and reduce-scatters (path 1 of 2D prefetch) not hidden behind compute; they took %.1f ms/step in all", 1000*median(g.busy))})
			continue
		}
		res = append(res, benchResult{Name: name, Value: tps, Unit: "tok/s", Bound: base, Ratio: tps / base,
			Note: fmt.Sprintf("%d ranks (%s), %d thread(s) each, same global batch; bound = W=1 tokens/s; medians of %d steps", k.W, backendName(k.W, k.mpi), max(1, runtime.NumCPU()/k.W), len(g.tokS))},
			benchResult{Name: name + "_comm_fraction", Value: median(g.comm), Unit: "of step",
				Note: fmt.Sprintf("rank 0's wait for communication (expert all-to-alls, loss sums, the gradient all-reduce's exposed tail, the norm); the all-reduce itself took %.0f%% of the step, overlapped with backward", 100*median(g.reduce))})
	}
	return res, nil
}

func backendName(W int, mpi bool) string {
	switch {
	case W == 1:
		return "one process"
	case mpi:
		return "MPI processes"
	}
	return "in-process ranks"
}
