//go:build !invariants

package offload

import (
	"errors"
	"strings"
	"testing"
)

// Without -tags invariants misuse does not panic: Close refuses to free
// referenced memory, and extra releases are ignored.
func TestPoolMisuseWithoutInvariants(t *testing.T) {
	p := newTestPool(t, PoolConfig{Slots: 2, SlotBytes: Align})
	s, _, _ := p.TryAcquire(Key{0, 7})
	err := p.Close()
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "slot 0 (layer 0 expert 7): 1 references") {
		t.Fatalf("Close with a slot filling: %v, want ErrBusy naming the slot", err)
	}
	s.Release() // before Filled: Filled finishes the slot
	s.Filled(nil)
	s.Filled(nil) // ignored
	s.Release()   // ignored
	if got := poolState(p); got != "0:e7" {
		t.Fatalf("state %q", got)
	}
	s2, cached, err := p.TryAcquire(Key{0, 8})
	if err != nil || cached || s2 == s {
		t.Fatalf("TryAcquire after misuse: slot %d, cached %v, %v", s2.Index(), cached, err)
	}
	s2.Filled(nil)
	s2.Release()
}
