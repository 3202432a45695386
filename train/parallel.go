package train

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/optim"
)

// NewParallelTrainer builds rank c.Rank() of a data- and expert-parallel
// run over c's W ranks: every rank builds the same model (the same seed),
// keeps the dense parameters replicated and owns E/W of every MoE layer's
// experts; o.Batch is the global batch, of which each rank computes
// o.Batch/W rows (the rows a single process would give rank-order
// positions r*B/W..). The tokens reach their experts through all-to-alls
// (moe.EP), the dense gradients are summed over the ranks in fused buckets,
// the gradient norm is the global one, and each rank's AdamW updates the
// dense parameters (identically on every rank) and its own experts. The
// run then equals one process training on the global batch, up to the
// float32 rounding of the cross-rank sums. Every rank must call every
// method that communicates (TrainStep, Evaluate, Run, Save) in the same
// order. With c nil it is NewTrainer: one process.
func NewParallelTrainer(o Options, corpus *Corpus, c dist.Comm) (*Trainer, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if err := corpus.Check(o.Seq); err != nil {
		return nil, err
	}
	rank, W := 0, 1
	if c != nil {
		rank, W = c.Rank(), c.Size()
	}
	// With storage the experts live on its tiers from the start: the Net
	// never holds them all (their initial values go straight to their
	// records).
	net, err := model.NewNetOpts(o.Model, o.Seq, rank, W, model.NetOptions{ExpertsOutside: o.Storage != nil})
	if err != nil {
		return nil, err
	}
	net.Init(o.Seed, o.InitStd)
	var src expertSource
	if o.Storage != nil {
		src = initExperts(net, o.Seed, o.InitStd)
	}
	t, err := newTrainer(o, corpus, net, c, src)
	if err != nil {
		return nil, err
	}
	if o.ShardDense {
		if err := t.shardDense(); err != nil {
			t.Close()
			return nil, err
		}
	}
	return t, nil
}

// parallel is a Trainer's part of a parallel run.
type parallel struct {
	comm  dist.Comm
	batch int // rows per micro-batch on this rank
	lo    int // its first row in the global micro-batch
	// tasks is a multi-task run's plan and task groups (multitask.go), or
	// nil.
	tasks *taskGroups
	// dense are the replicated parameters (gradients summed over the
	// ranks), owned this rank's experts (gradients whole here).
	dense, owned []*optim.Param
	ownedNet     []*model.Param // the owned ones' Net Params
	ownedG       [][]float32    // and their gradients (the optimizer's: a partitioned embedding's slice)
	// sparse is the storage tiers of this rank's experts (Options.Storage),
	// or nil: their gradients are not among owned.
	sparse *sparseStore
	gc     dist.Comm            // the gradients' communicator, split off comm
	fused  *dist.Fused          // the dense gradients' all-reduce, on gc
	zero   *zero                // the dense parameters' shards (Options.ShardDense), or nil
	fidx   map[*model.Param]int // dense Param -> its index in fused
	sq     []float64            // this rank's experts' squared gradient norm (1)
	sqs    []float64            // every rank's
	pad    valPad
	wait   time.Duration   // this step's wait for the gradient all-reduce and norm
	ctx    context.Context // Save's collectives during Run (nil: Background)
}

// newParallel checks that o fits c and gives net its expert parallelism.
func newParallel(o Options, net *model.Net, c dist.Comm) (*parallel, error) {
	W := c.Size()
	if o.Batch%W != 0 && len(o.Tasks) == 0 {
		return nil, fmt.Errorf("%w: batch %d over %d ranks: the global batch must divide evenly", ErrOptions, o.Batch, W)
	}
	if net.Cfg.E > 0 && net.Cfg.E%W != 0 {
		return nil, fmt.Errorf("%w: %d experts over %d ranks: the experts must divide evenly", ErrOptions, net.Cfg.E, W)
	}
	p := &parallel{comm: c, batch: o.Batch / W, lo: c.Rank() * (o.Batch / W), sq: make([]float64, 1), sqs: make([]float64, W)}
	if len(o.Tasks) > 0 {
		if err := p.planTasks(o, net); err != nil {
			return nil, err
		}
	}
	if len(net.Cfg.MoELayers()) > 0 {
		xc, err := exchangeComm(o, c)
		if err != nil {
			return nil, err
		}
		if err := net.SetExpertParallel(xc); err != nil {
			return nil, err
		}
	}
	if o.EmbedPartition {
		// The embedding's columns: this rank's slice becomes an owned
		// parameter (ExpertParam), whose gradient is already the global
		// batch's (no all-reduce) and whose optimizer state is the slice's.
		if net.Cfg.D%W != 0 {
			return nil, fmt.Errorf("%w: embed_partition: hidden size %d does not split over %d ranks; use a rank count that divides it (or drop the partition: --embed-partition=false)", ErrOptions, net.Cfg.D, W)
		}
		if err := net.SetEmbedPartition(c); err != nil {
			return nil, fmt.Errorf("%w: embed_partition: %v", ErrOptions, err)
		}
	}
	return p, nil
}

// exchangeComm returns the communicator the expert exchanges use: c, or
// c with a hierarchical all-to-all (o.AllToAll).
func exchangeComm(o Options, c dist.Comm) (dist.Comm, error) {
	if o.AllToAll == "flat" || c.Size() == 1 {
		return c, nil
	}
	ctx := context.Background()
	var node dist.Node
	if o.RanksPerNode > 0 {
		if c.Size()%o.RanksPerNode != 0 {
			return nil, fmt.Errorf("%w: %d ranks do not split into nodes of %d", ErrOptions, c.Size(), o.RanksPerNode)
		}
		node = dist.Node{Index: c.Rank() / o.RanksPerNode, Count: c.Size() / o.RanksPerNode, LocalRank: c.Rank() % o.RanksPerNode, LocalSize: o.RanksPerNode}
	} else {
		var err error
		if node, err = dist.NodeOf(ctx, c); err != nil {
			return nil, err
		}
	}
	if o.AllToAll != "hierarchical" && (node.Count == 1 || node.LocalSize == 1) {
		return c, nil // auto: one level is all there is
	}
	h, err := dist.NewHierNodes(ctx, c, node.Index, node.LocalRank)
	if err != nil {
		return nil, fmt.Errorf("train: hierarchical all-to-all: %w", err)
	}
	return h, nil
}

// split sorts t's parameters into replicated and owned, and sets up the
// fused all-reduce of the replicated ones' gradients on a communicator of
// its own (it runs while backward's exchanges use the main one), its
// tensors in the order backward finishes them.
func (p *parallel) split(t *Trainer) error {
	dense := map[*model.Param]*optim.Param{}
	for i, q := range t.params {
		np := t.Net.Params[t.idx[i]]
		if k := t.Net.TaskParam(np); k >= 0 {
			p.tasks.params[k] = append(p.tasks.params[k], q)
			continue
		}
		if expert, _ := t.Net.ExpertParam(np); expert {
			p.owned = append(p.owned, q)
			p.ownedNet, p.ownedG = append(p.ownedNet, np), append(p.ownedG, q.G)
		} else {
			p.dense = append(p.dense, q)
			dense[np] = q
		}
	}
	gc, err := p.comm.Split(context.Background(), 0, p.comm.Rank())
	if err != nil {
		return fmt.Errorf("train: gradient communicator: %w", err)
	}
	p.gc = gc
	if err := p.tasks.split(p.comm); err != nil {
		return err
	}
	p.fidx = map[*model.Param]int{}
	var tensors [][]float32
	for _, group := range t.Net.GradGroups() {
		for _, np := range group {
			if q, ok := dense[np]; ok {
				p.fidx[np] = len(tensors)
				tensors = append(tensors, q.G)
			}
		}
	}
	bucket := t.Opts.BucketBytes
	if bucket == 0 {
		bucket = DefaultBucketBytes
	}
	p.fused = dist.NewFused(gc, tensors, bucket)
	return nil
}

// ready is the Net's GradsDone during a step's last backward: finished
// dense gradients join their bucket.
func (p *parallel) ready(ps []*model.Param) {
	for _, np := range ps {
		if i, ok := p.fidx[np]; ok {
			p.fused.Ready(i)
		}
	}
}

// rows returns this rank's rows of a global micro-batch (B*T values) and
// sets the Net's token base to their first token.
func (p *parallel) rows(t *Trainer, all []int32) []int32 {
	n := p.batch * t.Opts.Seq
	lo := p.lo * t.Opts.Seq
	t.Net.TokenBase = lo
	return all[lo : lo+n]
}

// norm returns the global gradient norm, once the dense gradients are
// summed: the dense parameters' (the same on every rank) and every rank's
// experts'.
func (p *parallel) norm(ctx context.Context) (float64, error) {
	if err := p.tasks.reduce(ctx); err != nil {
		return 0, err
	}
	if p.sparse != nil { // the owned and the stored experts, in Net order
		p.sq[0] = p.sparse.gradSqWith(p.ownedNet, p.ownedG) + p.tasks.gradSq()
	} else {
		p.sq[0] = optim.GradSq(p.owned) + p.tasks.gradSq()
	}
	if p.zero != nil {
		p.sq[0] += optim.GradSq(p.zero.params) // this rank's shards of the dense gradients
	}
	if err := dist.AllGatherOf(ctx, p.comm, p.sq, p.sqs); err != nil {
		return 0, fmt.Errorf("gradient norm: %w", err)
	}
	s := optim.GradSq(p.dense)
	for _, v := range p.sqs {
		s += v
	}
	return math.Sqrt(s), nil
}

// valPad is a rank's validation rows when a batch has fewer rows than
// ranks: one row whose targets are all ignored.
type valPad struct {
	ids, tgt []int32
}

// valRows returns this rank's share of a validation batch: rows split as
// evenly as the count allows, rank order. A rank left without a row gets a
// padding row whose targets are ignored (it still takes part in the
// exchanges; under capacity limits its tokens come last, so they take no
// real token's place, though they raise the capacity slightly).
func (p *parallel) valRows(vb ValBatch, T int) (ids, tgt []int32, rows int) {
	if p.tasks != nil { // the training plan's rows (validation batches have the same tasks)
		lo, hi := p.lo, p.lo+p.batch
		return vb.Inputs[lo*T : hi*T], vb.Targets[lo*T : hi*T], p.batch
	}
	W, r := p.comm.Size(), p.comm.Rank()
	lo, hi := r*vb.Rows/W, (r+1)*vb.Rows/W
	if hi > lo {
		return vb.Inputs[lo*T : hi*T], vb.Targets[lo*T : hi*T], hi - lo
	}
	if len(p.pad.ids) != T {
		p.pad.ids, p.pad.tgt = make([]int32, T), make([]int32, T)
		for i := range p.pad.tgt {
			p.pad.tgt[i] = -1
		}
	}
	return p.pad.ids, p.pad.tgt, 1
}
