package train

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/optim"
	"github.com/moesys/moesys/tensor"
)

// Trainer runs the training loop of one process (or of one rank of a
// parallel run: NewParallelTrainer): per optimizer step, Accum
// micro-batches of forward and backward (gradients averaged), gradient
// clipping, the learning-rate schedule and an AdamW update; periodic
// validation and checkpoints. Everything it does is a function of the
// options (seed included), the corpus and the step, so a run resumed from a
// checkpoint continues bit-identically.
type Trainer struct {
	Opts   Options
	Net    *model.Net
	Step   int            // optimizer steps done
	params []*optim.Param // what this rank updates: every Param, or the dense ones and its own experts
	idx    []int          // params[i] is Net.Params[idx[i]]
	master [][]float32    // fp32 master weights of params when Opts.BF16 (else nil)
	par    *parallel      // data + expert parallelism (nil: one process)
	adam   *optim.AdamW
	sched  optim.WarmupCosine
	train  batchSource // *Batcher, or a multi-task run's taskBatcher
	val    []ValBatch
	inputs []int32
	target []int32
	tokens int64 // tokens trained on, this process
	// sparse keeps the experts' parameters on the SSD tier
	// (Opts.Storage, storage.go), else nil.
	sparse *sparseStore
}

// StepResult is one optimizer step's figures.
type StepResult struct {
	Step     int     `json:"step"` // 1-based: steps done after this one
	Loss     float64 `json:"loss"` // total, averaged over micro-batches
	CE       float64 `json:"ce"`
	Aux      float64 `json:"aux"`
	Z        float64 `json:"z"`
	LR       float64 `json:"lr"`
	GradNorm float64 `json:"grad_norm"` // before clipping
	Tokens   int     `json:"tokens"`
	Seconds  float64 `json:"seconds"`
	// CommSeconds is, in a parallel run, the part of Seconds this rank
	// waited for communication: the expert exchanges, the loss sums, the
	// gradient all-reduce's tail that backward did not hide, and the
	// gradient norm. ReduceSeconds is the time the gradient all-reduce
	// took in all, mostly hidden behind backward.
	CommSeconds   float64 `json:"comm_seconds,omitempty"`
	ReduceSeconds float64 `json:"reduce_seconds,omitempty"`
	// Dense is the sharded dense parameters' figures (Opts.ShardDense):
	// path 1 of 2D prefetch. Its exposed time is part of CommSeconds, its
	// busy time of ReduceSeconds.
	Dense *DenseStep `json:"dense,omitempty"`
	// Storage is the hierarchical storage's figures (Opts.Storage).
	Storage *StorageStep `json:"storage,omitempty"`
}

// NewTrainer builds a model from o (weights initialised from o.Seed) over
// corpus. The corpus must hold at least one training and one validation
// window.
func NewTrainer(o Options, corpus *Corpus) (*Trainer, error) {
	return NewParallelTrainer(o, corpus, nil)
}

// newTrainer builds the Trainer of net, a rank of c's parallel run when c
// is not nil (net then gets its expert parallelism here). With
// o.Storage, src gives the experts' initial weights (nil: those in net).
func newTrainer(o Options, corpus *Corpus, net *model.Net, c dist.Comm, src expertSource) (*Trainer, error) {
	t := &Trainer{Opts: o, Net: net}
	if o.ShardDense && c == nil {
		return nil, fmt.Errorf("%w: shard_dense shards the dense parameters over the ranks of a parallel run; one process has no ranks to shard over", ErrOptions)
	}
	if o.EmbedPartition && c == nil {
		return nil, fmt.Errorf("%w: embed_partition splits the embedding over the ranks of a parallel run; one process has no ranks to split over", ErrOptions)
	}
	if c != nil {
		var err error
		if t.par, err = newParallel(o, net, c); err != nil {
			return nil, err
		}
	}
	net.Recompute, net.Train, net.JitterSeed = o.Recompute, true, o.Seed
	for i, p := range net.Params {
		if expert, local := net.ExpertParam(p); expert && !local {
			continue // another rank's expert
		}
		if _, routed := net.RoutedExpert(p); routed && o.Storage != nil {
			continue // kept by the storage tiers
		}
		t.params = append(t.params, &optim.Param{Name: p.Name, W: p.W, G: p.G})
		t.idx = append(t.idx, i)
	}
	if t.par != nil {
		if err := t.par.split(t); err != nil {
			return nil, err
		}
	}
	if o.BF16 {
		// The optimiser updates fp32 masters; the model computes with
		// their bf16 roundings.
		t.master = make([][]float32, len(t.params))
		for i, p := range t.params {
			t.master[i] = append([]float32(nil), p.W...)
			p.W = t.master[i]
		}
		net.SetBF16Products(true) // where the CPU has bf16 dot products
		t.syncBF16()
	}
	var err error
	acfg := t.adamConfig()
	t.adam, err = optim.NewAdamW(t.params, acfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrOptions, err)
	}
	if o.Storage != nil {
		if src == nil {
			src = netExperts(net)
		}
		if err := t.openStorage(acfg, src); err != nil {
			return nil, err
		}
	}
	ok := false
	defer func() {
		if !ok {
			t.Close() // the storage tiers, opened above
		}
	}()
	t.sched = optim.WarmupCosine{Peak: o.LR, Min: o.MinLR, Warmup: o.Warmup, Total: o.Steps}
	if t.train, err = NewBatcher(corpus.Train, o.Batch, o.Seq, o.Seed); err != nil {
		return nil, err
	}
	evalBatches := o.EvalBatches
	if evalBatches == 0 {
		evalBatches = 1
	}
	if t.val, err = ValBatches(corpus.Val, o.Batch, o.Seq, evalBatches); err != nil {
		return nil, err
	}
	t.inputs, t.target = make([]int32, o.Batch*o.Seq), make([]int32, o.Batch*o.Seq)
	ok = true
	return t, nil
}

// adamConfig is the optimizer's configuration from the options.
func (t *Trainer) adamConfig() optim.AdamWConfig {
	o := t.Opts
	return optim.AdamWConfig{Beta1: o.Beta1, Beta2: o.Beta2, Eps: o.Eps, WeightDecay: o.WeightDecay}
}

// syncBF16 sets the model's weights to the bf16 rounding of the masters
// (and the bf16 copies the products use).
func (t *Trainer) syncBF16() {
	kernel.Parallel(len(t.params), func(i int) {
		p := t.Net.Params[t.idx[i]]
		for j, v := range t.master[i] {
			h := tensor.F32ToBF16(v)
			p.W[j] = math.Float32frombits(uint32(h) << 16)
			if p.B != nil {
				p.B[j] = h
			}
		}
	})
}

// TrainStep runs one optimizer step. An error (from expert exchanges)
// leaves the weights unchanged and the step not counted. In a parallel run
// every rank calls it; each computes its rows of every micro-batch, and
// the step's figures are the global batch's.
func (t *Trainer) TrainStep(ctx context.Context) (StepResult, error) {
	o := t.Opts
	start := time.Now()
	var busy0, reduce0 time.Duration
	var z0 zero
	if t.par != nil {
		busy0, reduce0 = t.Net.CommBusy(), t.par.fused.Busy()
		t.par.wait = 0
		if z := t.par.zero; z != nil {
			z.settle() // before reading the chain's counters
			z0 = zero{exposed: z.exposed, busy: z.busy, bytes: z.bytes}
			z.zeroGrad()
		}
	}
	if t.sparse != nil {
		t.sparse.zeroGrads()
	} else {
		t.Net.ZeroGrad()
	}
	var r StepResult
	scale := float32(1)
	inv := 1 / float64(o.Accum)
	fail := func(err error) (StepResult, error) {
		return StepResult{}, fmt.Errorf("train: step %d: %w", t.Step+1, err)
	}
	for m := 0; m < o.Accum; m++ {
		t.train.Batch(t.Step*o.Accum+m, t.inputs, t.target)
		ids, tgt, B := t.inputs, t.target, o.Batch
		if t.par != nil {
			ids, tgt, B = t.par.rows(t, ids), t.par.rows(t, tgt), t.par.batch
		}
		loss, err := t.Net.Forward(ctx, ids, tgt, B, o.Seq, uint64(t.Step*o.Accum+m))
		if err != nil {
			return fail(err)
		}
		if err := t.backward(ctx, float32(inv), m == o.Accum-1); err != nil {
			return fail(err)
		}
		r.Loss += loss.Total * inv
		r.CE += loss.CE * inv
		r.Aux += loss.Aux * inv
		r.Z += loss.Z * inv
		r.Tokens += loss.Tokens
	}
	if t.par != nil {
		var err error
		tn := time.Now()
		if r.GradNorm, err = t.par.norm(ctx); err != nil {
			return fail(err)
		}
		t.par.wait += time.Since(tn)
		r.CommSeconds = (t.Net.CommBusy() - busy0 + t.par.wait).Seconds()
		r.ReduceSeconds = (t.par.fused.Busy() - reduce0).Seconds()
		optim.ClipTo(t.params, r.GradNorm, o.Clip)
		scale = optim.ClipScale(r.GradNorm, o.Clip) // the stored experts': applied with their updates
		if z := t.par.zero; z != nil {
			optim.ClipTo(z.params, r.GradNorm, o.Clip)
			d := &DenseStep{ExposedSeconds: (z.exposed - z0.exposed).Seconds(), BusySeconds: (z.busy - z0.busy).Seconds(), Bytes: z.bytes - z0.bytes}
			r.Dense = d
			r.CommSeconds += d.ExposedSeconds
			r.ReduceSeconds += d.BusySeconds
		}
	} else if t.sparse != nil {
		r.GradNorm = math.Sqrt(t.sparse.gradSq())
		scale = optim.ClipScale(r.GradNorm, o.Clip)
		optim.ClipTo(t.params, r.GradNorm, o.Clip) // the experts' gradients are scaled when applied
	} else {
		r.GradNorm = optim.ClipGradNorm(t.params, o.Clip)
	}
	r.LR = t.sched.LR(t.Step)
	applied := !math.IsNaN(r.GradNorm) && !math.IsInf(r.GradNorm, 0)
	if applied {
		t.adam.Step(r.LR)
		if t.master != nil {
			t.syncBF16()
		}
		if t.par != nil && t.par.zero != nil {
			t.par.zero.step(r.LR)
		}
	}
	if t.sparse != nil {
		t.sparse.afterStep(applied, r.LR, scale)
		r.Storage = t.sparse.stepFigures()
	}
	t.Step++
	t.tokens += int64(r.Tokens)
	r.Step = t.Step
	r.Seconds = time.Since(start).Seconds()
	return r, nil
}

// backward runs the Net's Backward. In a parallel run, the step's last one
// also sums the dense gradients over the ranks, bucket by bucket as
// backward finishes them (overlapping the rest of backward).
func (t *Trainer) backward(ctx context.Context, scale float32, last bool) error {
	if t.par != nil && t.par.zero != nil {
		return t.par.zero.backward(ctx, t.Net, scale) // every micro-batch: the full gradients do not stay
	}
	if t.par == nil || !last {
		return t.Net.Backward(ctx, scale)
	}
	f := t.par.fused
	f.Start(ctx)
	t.Net.GradsDone = t.par.ready
	err := t.Net.Backward(ctx, scale)
	t.Net.GradsDone = nil
	tw := time.Now()
	ferr := f.Wait()
	t.par.wait += time.Since(tw)
	if err == nil && ferr != nil {
		err = fmt.Errorf("gradients over the ranks: %w", ferr)
	}
	return err
}

// Evaluate returns the mean cross-entropy over the validation batches (in
// a parallel run, every rank calls it and gets the same value).
func (t *Trainer) Evaluate(ctx context.Context) (float64, error) {
	var sum float64
	var n int
	train := t.Net.Train
	t.Net.Train = false
	defer func() { t.Net.Train = train }()
	for _, vb := range t.val {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		ids, tgt, B := vb.Inputs, vb.Targets, vb.Rows
		if t.par != nil {
			ids, tgt, B = t.par.valRows(vb, t.Opts.Seq)
		}
		loss, err := t.Net.Forward(ctx, ids, tgt, B, t.Opts.Seq, 0)
		if err != nil {
			return 0, fmt.Errorf("train: validation: %w", err)
		}
		sum += loss.CE * float64(loss.Tokens)
		n += loss.Tokens
	}
	return sum / float64(n), nil
}
