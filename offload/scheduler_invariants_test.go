//go:build invariants

package offload

import (
	"context"
	"testing"

	"github.com/moesys/moesys/moe"
)

// Under -tags invariants, releasing an expert twice or closing the
// scheduler with an expert acquired panics.
func TestSchedulerInvariants(t *testing.T) {
	lay := writeSchedLayout(t)
	s := openSched(t, lay, NewMemStore(mustRead(t, lay.Path)), SchedulerConfig{Policy: OnDemand, TopK: 1})
	w := make([]moe.ExpertWeights, 1)
	if _, err := s.Acquire(context.Background(), 0, []int{3}, w); err != nil {
		t.Fatal(err)
	}
	mustPanic(t, "references not released (a leak)", func() { s.Close() })
	s.Release(w)
	mustPanic(t, "layer 0 expert 3, which is not acquired: released twice?", func() { s.Release(w) })
}
