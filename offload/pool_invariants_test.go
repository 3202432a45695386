//go:build invariants

package offload

import (
	"strings"
	"testing"
)

// mustPanic runs f and checks that it panics with a message containing
// want.
func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if msg, _ := r.(string); !strings.Contains(msg, want) {
			t.Fatalf("panic %v, want one saying %q", r, want)
		}
	}()
	f()
}

func TestPoolInvariants(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		misuse     func(p *SlotPool, s *Slot)
		cleanup    func(s *Slot) // leaves the pool closable
	}{
		{"double release", "released twice", func(p *SlotPool, s *Slot) {
			s.Filled(nil)
			s.Release()
			s.Release()
		}, func(*Slot) {}},
		{"close with a reference", "references not released (a leak)", func(p *SlotPool, s *Slot) {
			s.Filled(nil)
			p.Close()
		}, func(s *Slot) { s.Release() }},
		{"close while filling", "slot 0 (layer 0 expert 7): 1 references", func(p *SlotPool, s *Slot) {
			p.Close()
		}, func(s *Slot) { s.Filled(nil); s.Release() }},
		{"filled twice", "filled twice", func(p *SlotPool, s *Slot) {
			s.Filled(nil)
			s.Filled(nil)
		}, func(s *Slot) { s.Release() }},
		{"release before filled", "before Filled", func(p *SlotPool, s *Slot) {
			s.Release()
		}, func(s *Slot) { s.Filled(nil) }},
		{"retain without a reference", "has no references", func(p *SlotPool, s *Slot) {
			s.Filled(nil)
			s.Release()
			s.Retain()
		}, func(*Slot) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestPool(t, PoolConfig{Slots: 1, SlotBytes: Align})
			s, _, err := p.TryAcquire(Key{0, 7})
			if err != nil {
				t.Fatal(err)
			}
			mustPanic(t, tc.want, func() { tc.misuse(p, s) })
			tc.cleanup(s)
		})
	}
}
