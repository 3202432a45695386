package train

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

// paperTasks is SE-MoE's example: four tasks with batches 512/256/128/128.
func paperTasks() []TaskSpec {
	return []TaskSpec{{Name: "a", Batch: 512}, {Name: "b", Batch: 256}, {Name: "c", Batch: 128}, {Name: "d", Batch: 128}}
}

// On the paper's example the elastic plan gives every rank the same work:
// over 4 ranks task a gets two, b one, c and d share one; over 8, a gets
// four, b two, c and d one each. The one-rank-per-task plan is 2x
// imbalanced.
func TestPlanTasksPaperExample(t *testing.T) {
	for _, tc := range []struct {
		W      int
		groups [][]int // per task, its ranks
	}{
		{4, [][]int{{0, 1}, {2}, {3}, {3}}},
		{8, [][]int{{0, 1, 2, 3}, {4, 5}, {6}, {7}}},
		{2, [][]int{{0}, {1}, {1}, {1}}},
		{1, [][]int{{0}, {0}, {0}, {0}}},
	} {
		t.Run(fmt.Sprintf("W%d", tc.W), func(t *testing.T) {
			p, err := PlanTasks(paperTasks(), tc.W)
			if err != nil {
				t.Fatal(err)
			}
			if im := p.Imbalance(); im != 1 {
				t.Errorf("imbalance %g, want 1:\n%s", im, p.String(paperTasks()))
			}
			for k, want := range tc.groups {
				if g := p.Group(k); !reflect.DeepEqual(g, want) {
					t.Errorf("task %d on ranks %v, want %v:\n%s", k, g, want, p.String(paperTasks()))
				}
			}
			// Every task's rows are covered once.
			rows := make([]int, 4)
			for _, segs := range p.Ranks {
				for _, s := range segs {
					rows[s.Task] += s.Hi - s.Lo
				}
			}
			if !reflect.DeepEqual(rows, []int{512, 256, 128, 128}) {
				t.Errorf("rows per task %v", rows)
			}
		})
	}
	naive, err := PlanOnePerTask(paperTasks())
	if err != nil {
		t.Fatal(err)
	}
	if im := naive.Imbalance(); im != 2 {
		t.Errorf("one rank per task: imbalance %g, want 2", im)
	}
}

// Costs weigh the work; odd sizes stay within one row of even; bad input
// is refused.
func TestPlanTasksCostsAndErrors(t *testing.T) {
	tasks := []TaskSpec{{Name: "x", Batch: 10}, {Name: "y", Batch: 10, Cost: 3}, {Name: "z", Batch: 7}}
	p, err := PlanTasks(tasks, 3)
	if err != nil {
		t.Fatal(err)
	}
	if p.Order[0] != 1 {
		t.Errorf("order %v: the costly task first", p.Order)
	}
	if im := p.Imbalance(); im > 1.1 {
		t.Errorf("imbalance %g:\n%s", im, p.String(tasks))
	}
	p, err = PlanTasks([]TaskSpec{{Name: "a", Batch: 3}, {Name: "b", Batch: 1}}, 4)
	if err != nil {
		t.Fatal(err)
	}
	for r, segs := range p.Ranks {
		if len(segs) == 0 {
			t.Errorf("rank %d has no rows", r)
		}
	}
	for _, bad := range [][]TaskSpec{
		nil,
		{{Name: "a", Batch: 0}},
		{{Name: "a", Batch: 2}, {Name: "a", Batch: 2}},
		{{Name: "", Batch: 2}},
		{{Name: "a,b", Batch: 2}},
		{{Name: "a", Batch: 2, Cost: -1}},
		{{Name: "a", Batch: 1}}, // 1 row over 2 ranks
	} {
		if _, err := PlanTasks(bad, 2); !errors.Is(err, ErrOptions) {
			t.Errorf("%+v: err %v", bad, err)
		}
	}
}
