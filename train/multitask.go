package train

import (
	"context"
	"fmt"
	"slices"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/optim"
)

// Multi-task training (SE-MoE's UFO style): several tasks, each with its
// own data and batch size, train one model: a shared backbone (attention,
// token-routed experts, embeddings, head) and per task a task expert in
// every MoE layer (model/net_task.go). A step's global batch is every
// task's batch laid end to end in the plan's task order (elastic.go) and
// its loss the mean cross-entropy over all of their tokens, so a task's
// weight is its share of the tokens. In a parallel run each rank computes
// the rows the plan gives it; the backbone's gradients are summed over all
// ranks (the fused all-reduce), each task expert's over its task's ranks
// (a communicator of its own), and its first rank writes it to
// checkpoints. A restart may use any number of ranks: the plan is
// recomputed and every rank reads its tensors by name (upscale or
// downscale at a restart).

// batchSource fills a step's global micro-batch: *Batcher or taskBatcher.
type batchSource interface {
	Batch(step int, inputs, targets []int32)
}

// taskBatcher is a multi-task run's batch source: each task's batch from
// its own Batcher, in the plan's task order.
type taskBatcher struct {
	tasks []*Batcher // in order
	rows  []int      // each one's batch
	T     int
}

func (b *taskBatcher) Batch(step int, inputs, targets []int32) {
	off := 0
	for i, tb := range b.tasks {
		n := b.rows[i] * b.T
		tb.Batch(step, inputs[off:off+n], targets[off:off+n])
		off += n
	}
}

// taskSeed is task k's batch seed: the run's seed, decorrelated per task.
func taskSeed(seed uint64, k int) uint64 { return seed + uint64(k+1)*0x9e3779b97f4a7c15 }

// validateTasks checks the multi-task options (Options.Validate).
func (o *Options) validateTasks() error {
	if len(o.Tasks) == 0 {
		if o.Model.Tasks > 0 {
			return fmt.Errorf("%w: the model has %d task experts but the run has no tasks (--task)", ErrOptions, o.Model.Tasks)
		}
		return nil
	}
	if err := checkTasks(o.Tasks); err != nil {
		return err
	}
	sum := 0
	for _, t := range o.Tasks {
		sum += t.Batch
	}
	switch {
	case o.Batch != sum:
		return fmt.Errorf("%w: batch %d must be the tasks' batches' sum %d", ErrOptions, o.Batch, sum)
	case o.Model.Tasks != len(o.Tasks):
		return fmt.Errorf("%w: the model has %d task experts per MoE layer for %d tasks", ErrOptions, o.Model.Tasks, len(o.Tasks))
	case o.TaskPlacement != "" && o.TaskPlacement != "elastic" && o.TaskPlacement != "one-per-task":
		return fmt.Errorf("%w: task placement %q: want elastic or one-per-task", ErrOptions, o.TaskPlacement)
	}
	return nil
}

// MultiTask turns o into a multi-task run over tasks: Batch becomes their
// sum and the model gets a task expert per task in every MoE layer, of
// taskFFN hidden units (0: the expert FFN size). It copies the model
// config.
func (o *Options) MultiTask(tasks []TaskSpec, taskFFN int) {
	c := *o.Model
	if taskFFN == 0 {
		taskFFN = c.ExpertFFN
	}
	c.Tasks, c.TaskFFN = len(tasks), taskFFN
	o.Model = &c
	o.Tasks = slices.Clone(tasks)
	o.Batch = 0
	for _, t := range tasks {
		o.Batch += t.Batch
	}
}

// taskPlan is o's plan over W ranks.
func taskPlan(o Options, W int) (*TaskPlan, error) {
	if o.TaskPlacement == "one-per-task" {
		if W != len(o.Tasks) {
			return nil, fmt.Errorf("%w: one rank per task needs %d ranks, have %d", ErrOptions, len(o.Tasks), W)
		}
		return PlanOnePerTask(o.Tasks)
	}
	return PlanTasks(o.Tasks, W)
}

// NewMultiTaskTrainer builds rank c.Rank() of a multi-task run (c nil: one
// process) over one corpus per task (o.Tasks' order). o comes from
// Options.MultiTask.
func NewMultiTaskTrainer(o Options, corpora []*Corpus, c dist.Comm) (*Trainer, error) {
	if err := checkCorpora(o, corpora); err != nil {
		return nil, err
	}
	t, err := NewParallelTrainer(o, corpora[0], c)
	if err != nil {
		return nil, err
	}
	if err := t.setTaskData(corpora); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// ResumeMultiTask is ResumeParallel for a multi-task run: c may have any
// number of ranks (the plan is made anew and each rank reads the backbone
// and its tasks' experts by name).
func ResumeMultiTask(dir string, o Options, corpora []*Corpus, c dist.Comm) (*Trainer, error) {
	saved, _, err := ReadCheckpointOptions(dir)
	if err != nil {
		return nil, err
	}
	if !slices.Equal(saved.Tasks, o.Tasks) {
		return nil, fmt.Errorf("%w: %s: tasks %v differ from the checkpoint's %v", ErrCheckpoint, dir, o.Tasks, saved.Tasks)
	}
	if err := checkCorpora(o, corpora); err != nil {
		return nil, err
	}
	t, err := ResumeParallel(dir, o, corpora[0], c)
	if err != nil {
		return nil, err
	}
	if err := t.setTaskData(corpora); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

func checkCorpora(o Options, corpora []*Corpus) error {
	if len(o.Tasks) == 0 || len(corpora) != len(o.Tasks) {
		return fmt.Errorf("%w: %d corpora for %d tasks", ErrOptions, len(corpora), len(o.Tasks))
	}
	for k, cp := range corpora {
		if err := cp.Check(o.Seq); err != nil {
			return fmt.Errorf("task %q: %w", o.Tasks[k].Name, err)
		}
	}
	return nil
}

// setTaskData replaces the Trainer's batches by the tasks' (training and
// validation, in the plan's order) and tells the Net each row's task.
func (t *Trainer) setTaskData(corpora []*Corpus) error {
	o := t.Opts
	var order []int
	lo, rows := 0, o.Batch
	if t.par != nil {
		order, lo, rows = t.par.tasks.plan.Order, t.par.lo, t.par.batch
	} else {
		p, err := PlanTasks(o.Tasks, 1)
		if err != nil {
			return err
		}
		order = p.Order
	}
	tb := &taskBatcher{T: o.Seq}
	var taskOf []int32 // of the global batch's rows
	evalBatches := max(o.EvalBatches, 1)
	var vals [][]ValBatch
	nval := evalBatches
	for _, k := range order {
		spec := o.Tasks[k]
		b, err := NewBatcher(corpora[k].Train, spec.Batch, o.Seq, taskSeed(o.Seed, k))
		if err != nil {
			return fmt.Errorf("task %q: %w", spec.Name, err)
		}
		tb.tasks, tb.rows = append(tb.tasks, b), append(tb.rows, spec.Batch)
		for range spec.Batch {
			taskOf = append(taskOf, int32(k))
		}
		vb, err := ValBatches(corpora[k].Val, spec.Batch, o.Seq, evalBatches)
		if err != nil {
			return fmt.Errorf("task %q: %w", spec.Name, err)
		}
		full := 0 // batches with every row: each rank's rows are the plan's
		for full < len(vb) && vb[full].Rows == spec.Batch {
			full++
		}
		if full == 0 {
			return fmt.Errorf("%w: task %q: validation data too short for one batch of %d x %d tokens", ErrData, spec.Name, spec.Batch, o.Seq)
		}
		nval = min(nval, full)
		vals = append(vals, vb)
	}
	t.train = tb
	t.val = make([]ValBatch, nval)
	for i := range t.val {
		v := ValBatch{Rows: o.Batch}
		for j := range vals {
			v.Inputs = append(v.Inputs, vals[j][i].Inputs...)
			v.Targets = append(v.Targets, vals[j][i].Targets...)
		}
		t.val[i] = v
	}
	t.Net.SetTaskOf(taskOf[lo : lo+rows])
	return nil
}

// taskGroups is a parallel multi-task run's part: the plan, and per task
// its ranks' communicator and this rank's Params of its expert.
type taskGroups struct {
	plan   *TaskPlan
	groups [][]int               // per task, its ranks
	held   []bool                // per task: this rank computes it
	comms  []dist.Comm           // per held task with several ranks: theirs
	params [][]*optim.Param      // per task: this rank's Params of its expert (held tasks)
	first  map[*model.Param]bool // task Params whose group this rank leads
	me     int                   // this rank
}

// planTasks makes o's plan for p's ranks, gives this rank its rows and
// tells the Net which tasks it holds.
func (p *parallel) planTasks(o Options, net *model.Net) error {
	plan, err := taskPlan(o, p.comm.Size())
	if err != nil {
		return err
	}
	r := p.comm.Rank()
	g := &taskGroups{plan: plan, held: make([]bool, len(o.Tasks)), params: make([][]*optim.Param, len(o.Tasks)),
		comms: make([]dist.Comm, len(o.Tasks)), first: map[*model.Param]bool{}, me: r}
	for k := range o.Tasks {
		g.groups = append(g.groups, plan.Group(k))
		g.held[k] = slices.Contains(g.groups[k], r)
	}
	net.SetTasksHeld(g.held)
	for _, np := range net.Params {
		if k := net.TaskParam(np); k >= 0 && g.groups[k][0] == r {
			g.first[np] = true
		}
	}
	p.lo, p.batch = plan.Start[r], plan.Start[r+1]-plan.Start[r]
	p.tasks = g
	return nil
}

// split makes each task's communicator (every rank takes part in every
// split, in task order; a task on one rank needs none).
func (g *taskGroups) split(c dist.Comm) error {
	if g == nil {
		return nil
	}
	for k, grp := range g.groups {
		color := 0
		if g.held[k] {
			color = 1
		}
		sc, err := c.Split(context.Background(), color, c.Rank())
		if err != nil {
			return fmt.Errorf("train: task %d communicator: %w", k, err)
		}
		if g.held[k] && len(grp) > 1 {
			g.comms[k] = sc
		}
	}
	return nil
}

// reduce sums each held task's expert gradients over the task's ranks, in
// task order (the same order on every rank, so groups sharing ranks
// cannot wait on each other in a cycle).
func (g *taskGroups) reduce(ctx context.Context) error {
	if g == nil {
		return nil
	}
	for k, c := range g.comms {
		if c == nil {
			continue
		}
		for _, q := range g.params[k] {
			if err := c.AllReduce(ctx, q.G); err != nil {
				return fmt.Errorf("task %d gradients: %w", k, err)
			}
		}
	}
	return nil
}

// gradSq is the squared norm of the task experts' gradients this rank
// counts in the global norm: those of the tasks whose group it leads.
func (g *taskGroups) gradSq() float64 {
	if g == nil {
		return 0
	}
	var s float64
	for k, ps := range g.params {
		if len(ps) > 0 && g.groups[k][0] == g.me {
			s += optim.GradSq(ps)
		}
	}
	return s
}

// writes reports whether this rank writes np to a sharded checkpoint:
// its experts, rank 0 the replicated parameters, a task group's first
// rank the task's expert.
func (p *parallel) writes(net *model.Net, np *model.Param) bool {
	if net.TaskParam(np) >= 0 {
		return p.tasks.first[np]
	}
	expert, _ := net.ExpertParam(np)
	return expert || p.comm.Rank() == 0
}
