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

// parallelRun is `moesys train` over several ranks: in-process ones
// (--ranks N, one goroutine each) or, under mpirun, this process as one
// rank of the MPI job.
type parallelRun struct {
	o       train.Options
	corpus  *train.Corpus
	corpora []*train.Corpus // a multi-task run's, one per task (nil otherwise)
	ckpt    string          // resume from this checkpoint ("" = fresh)
	out     string
	log     string // JSON log path (rank 0)
	ranks   int    // in-process ranks (ignored under mpirun)
	// threads is --threads (0: unset; under mpirun each process then takes
	// its share of the machine's cores).
	threads int
	stderr  io.Writer
}

// run trains on every rank and returns rank 0's summary (nil on the other
// ranks of an MPI job).
func (p *parallelRun) run(ctx context.Context) (*train.Summary, error) {
	if dist.UnderMPI() {
		c, err := dist.InitMPI()
		if err != nil {
			return nil, err
		}
		defer c.Close()
		if p.threads == 0 {
			node, err := dist.NodeOf(ctx, c)
			if err != nil {
				return nil, err
			}
			kernel.SetThreads(max(1, runtime.NumCPU()/node.LocalSize))
		}
		s, err := p.rank(ctx, c, nil)
		if err != nil {
			return nil, fmt.Errorf("rank %d of %d: %w", c.Rank(), c.Size(), err)
		}
		if c.Rank() != 0 {
			return nil, nil
		}
		return &s, nil
	}
	comms, err := dist.NewLocal(p.ranks)
	if err != nil {
		return nil, err
	}
	sums := make([]train.Summary, p.ranks)
	errs := make([]error, p.ranks)
	// A rank that fails aborts the others' collectives: they stop with an
	// error instead of waiting for it.
	abort, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Go(func() {
			if sums[r], errs[r] = p.rank(ctx, c, abort); errs[r] != nil {
				errs[r] = fmt.Errorf("rank %d of %d: %w", r, p.ranks, errs[r])
				cancel()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &sums[0], nil
}

// rank is one rank's run. Rank 0 reports progress and writes the log.
func (p *parallelRun) rank(ctx context.Context, c dist.Comm, abort context.Context) (train.Summary, error) {
	var tr *train.Trainer
	var err error
	switch {
	case len(p.corpora) > 0 && p.ckpt != "":
		tr, err = train.ResumeMultiTask(p.ckpt, p.o, p.corpora, c)
	case len(p.corpora) > 0:
		tr, err = train.NewMultiTaskTrainer(p.o, p.corpora, c)
	case p.ckpt != "":
		tr, err = train.ResumeParallel(p.ckpt, p.o, p.corpus, c)
	default:
		tr, err = train.NewParallelTrainer(p.o, p.corpus, c)
	}
	// A rank that cannot start must not leave the others waiting in the
	// first collective: every rank learns whether all started.
	if err := dist.Agree(ctx, c, "start", err); err != nil {
		return train.Summary{}, err
	}
	rc := train.RunConfig{Out: p.out, Abort: abort}
	if c.Rank() == 0 {
		cfg := tr.Net.Cfg
		fmt.Fprintf(p.stderr, "model: %d layers (%d MoE), d_model %d, %d experts top-%d over %d ranks (%d each); global batch %d (%d per rank) x seq %d x accum %d; %d steps -> %s\n",
			cfg.L, len(cfg.MoELayers()), cfg.D, cfg.E, cfg.K, c.Size(), cfg.E/c.Size(), p.o.Batch, p.o.Batch/c.Size(), p.o.Seq, p.o.Accum, p.o.Steps, p.out)
		if state, ring := tr.ShardedDenseBytes(); state > 0 {
			fmt.Fprintf(p.stderr, "dense parameters sharded over %d ranks (ZeRO-3): %.2f MiB of dense state per rank, %.2f MiB of gathered-layer buffers\n",
				c.Size(), float64(state)/(1<<20), float64(ring)/(1<<20))
		}
		if on, _, cols := tr.Net.EmbedPartitioned(); on {
			fmt.Fprintf(p.stderr, "embedding partitioned over %d ranks: [%d, %d] per rank (%.2f MiB of embedding per rank)\n",
				c.Size(), cfg.V, cols, float64(tr.Net.EmbedBytes())/(1<<20))
		}
		rc.Progress, rc.TTY = p.stderr, isTerminal(p.stderr)
		if p.log != "" {
			f, err := os.Create(p.log)
			if err != nil {
				return train.Summary{}, fmt.Errorf("--log: %w", err)
			}
			defer f.Close()
			rc.Log = f
		}
	}
	return tr.Run(ctx, rc)
}
