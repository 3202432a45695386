package train

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// The elastic planner (SE-MoE's elastic training for unbalanced multi-task
// jobs). Each task has a batch (sequences per step) and a per-sequence
// cost; its workload is their product. The tasks' batches are laid end to
// end in the plan's task order (heaviest workload first, ties in the
// order given) to form the step's global batch, and the ranks cut that
// row sequence into W contiguous pieces of equal work: a heavy task spans
// several ranks, which split its batch data-parallel, and light tasks
// share a rank. A rank computes only its piece; every rank holds the
// shared backbone, whose gradients are summed over all ranks, and the task
// experts of its tasks, whose gradients are summed over the task's ranks
// (its group). Contiguous pieces keep the global batch one process's
// batch, rank 0's rows first, so a run under any plan equals a single
// process on the same batch (up to float32 sums).

// TaskSpec is one task of a multi-task run: `--task name=DATA,batch=N`.
type TaskSpec struct {
	Name  string  `json:"name"`
	Data  string  `json:"data"`           // corpus path, as --data ("" or "default": the default corpus)
	Batch int     `json:"batch"`          // sequences per micro-batch
	Cost  float64 `json:"cost,omitempty"` // relative cost of one sequence (0: 1)
}

// Work returns the task's workload per micro-batch: batch x cost.
func (s TaskSpec) Work() float64 {
	c := s.Cost
	if c == 0 {
		c = 1
	}
	return float64(s.Batch) * c
}

// Segment is rows [Lo, Hi) of task Task's batch.
type Segment struct {
	Task   int `json:"task"` // index into the run's tasks
	Lo, Hi int
}

// TaskPlan is an allocation of ranks to tasks: rank r computes the
// segments Ranks[r], which are rows [Start[r], Start[r+1]) of the global
// batch (tasks in Order).
type TaskPlan struct {
	Order []int       // tasks in global-batch order
	Ranks [][]Segment // per rank, in global-batch order
	Start []int       // W+1 row offsets into the global batch
	Load  []float64   // per rank: its rows' work
}

// PlanTasks is the elastic allocation of tasks to W ranks (see above).
// Every rank gets at least one row, so the tasks' batches must add up to
// at least W.
func PlanTasks(tasks []TaskSpec, W int) (*TaskPlan, error) {
	if err := checkTasks(tasks); err != nil {
		return nil, err
	}
	order := make([]int, len(tasks))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return tasks[order[a]].Work() > tasks[order[b]].Work() })
	rows := 0
	for _, t := range tasks {
		rows += t.Batch
	}
	if W < 1 || rows < W {
		return nil, fmt.Errorf("%w: %d sequences per step over %d ranks: every rank needs at least one", ErrOptions, rows, W)
	}
	// prefix[i]: the work of the global batch's first i rows.
	prefix := make([]float64, 0, rows+1)
	prefix = append(prefix, 0)
	for _, k := range order {
		w := tasks[k].Work() / float64(tasks[k].Batch)
		for range tasks[k].Batch {
			prefix = append(prefix, prefix[len(prefix)-1]+w)
		}
	}
	total := prefix[rows]
	// Cut r goes where the work before it is nearest r/W of the total,
	// leaving each rank at least one row.
	start := make([]int, W+1)
	start[W] = rows
	for r := 1; r < W; r++ {
		want := total * float64(r) / float64(W)
		i := sort.SearchFloat64s(prefix, want) // first row boundary with work >= want
		if i > 0 && want-prefix[i-1] <= prefix[min(i, rows)]-want {
			i--
		}
		start[r] = min(max(i, start[r-1]+1), rows-(W-r))
	}
	return planFromStarts(tasks, order, start, prefix), nil
}

// PlanOnePerTask is the naive allocation the elastic one is measured
// against: one rank per task (W = len(tasks)), in the order given.
func PlanOnePerTask(tasks []TaskSpec) (*TaskPlan, error) {
	if err := checkTasks(tasks); err != nil {
		return nil, err
	}
	order := make([]int, len(tasks))
	start := make([]int, len(tasks)+1)
	prefix := []float64{0}
	for i, t := range tasks {
		order[i] = i
		start[i+1] = start[i] + t.Batch
		w := t.Work() / float64(t.Batch)
		for range t.Batch {
			prefix = append(prefix, prefix[len(prefix)-1]+w)
		}
	}
	return planFromStarts(tasks, order, start, prefix), nil
}

func checkTasks(tasks []TaskSpec) error {
	if len(tasks) == 0 {
		return fmt.Errorf("%w: no tasks", ErrOptions)
	}
	seen := map[string]bool{}
	for i, t := range tasks {
		switch {
		case t.Name == "" || strings.ContainsAny(t.Name, ",= "):
			return fmt.Errorf("%w: task %d: name %q must be non-empty, without ',', '=' or spaces", ErrOptions, i, t.Name)
		case seen[t.Name]:
			return fmt.Errorf("%w: task %q given twice", ErrOptions, t.Name)
		case t.Batch <= 0:
			return fmt.Errorf("%w: task %q: batch %d must be > 0", ErrOptions, t.Name, t.Batch)
		case !(t.Cost >= 0) || math.IsInf(t.Cost, 0):
			return fmt.Errorf("%w: task %q: cost %g must be finite and >= 0 (0: 1)", ErrOptions, t.Name, t.Cost)
		}
		seen[t.Name] = true
	}
	return nil
}

// planFromStarts fills a plan from its rank boundaries over the global
// batch (tasks in order; prefix[i] the work of its first i rows).
func planFromStarts(tasks []TaskSpec, order, start []int, prefix []float64) *TaskPlan {
	W := len(start) - 1
	p := &TaskPlan{Order: order, Ranks: make([][]Segment, W), Start: start, Load: make([]float64, W)}
	// first[i]: the global row where task order[i] starts.
	first := make([]int, len(order)+1)
	for i, k := range order {
		first[i+1] = first[i] + tasks[k].Batch
	}
	for r := range W {
		lo, hi := start[r], start[r+1]
		p.Load[r] = prefix[hi] - prefix[lo]
		for i, k := range order {
			a, b := max(lo, first[i]), min(hi, first[i+1])
			if a < b {
				p.Ranks[r] = append(p.Ranks[r], Segment{Task: k, Lo: a - first[i], Hi: b - first[i]})
			}
		}
	}
	return p
}

// Group returns the ranks that compute task k, in order.
func (p *TaskPlan) Group(k int) []int {
	var g []int
	for r, segs := range p.Ranks {
		for _, s := range segs {
			if s.Task == k {
				g = append(g, r)
				break
			}
		}
	}
	return g
}

// Imbalance returns the most loaded rank's work over the mean (1: even).
func (p *TaskPlan) Imbalance() float64 {
	var sum, most float64
	for _, l := range p.Load {
		sum += l
		most = max(most, l)
	}
	return most * float64(len(p.Load)) / sum
}

// String describes the plan: per rank its tasks' rows and its work.
func (p *TaskPlan) String(tasks []TaskSpec) string {
	var b strings.Builder
	for r, segs := range p.Ranks {
		fmt.Fprintf(&b, "rank %d:", r)
		for _, s := range segs {
			fmt.Fprintf(&b, " %s[%d:%d]", tasks[s.Task].Name, s.Lo, s.Hi)
		}
		fmt.Fprintf(&b, " (work %g)\n", p.Load[r])
	}
	return b.String()
}
