//go:build !invariants

package offload

import (
	"context"
	"errors"
	"testing"

	"github.com/moesys/moesys/moe"
)

// Without -tags invariants, Close with an expert acquired fails with
// ErrBusy and keeps the memory, and a second Release is ignored.
func TestSchedulerMisuseWithoutInvariants(t *testing.T) {
	lay := writeSchedLayout(t)
	s := openSched(t, lay, NewMemStore(mustRead(t, lay.Path)), SchedulerConfig{Policy: OnDemand, TopK: 1})
	w := make([]moe.ExpertWeights, 1)
	if _, err := s.Acquire(context.Background(), 0, []int{3}, w); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ErrBusy) {
		t.Fatalf("Close with an expert acquired: %v, want ErrBusy", err)
	}
	checkWeights(t, w[0], 0, 3) // still valid
	s.Release(w)
	s.Release(w) // ignored
}
