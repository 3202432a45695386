package offload

import (
	"testing"
	"time"
)

func TestStats(t *testing.T) {
	var s Stats
	if s.Snapshot().HitRate() != 0 {
		t.Fatal("hit rate before any lookup")
	}
	s.Hits.Add(3)
	s.Misses.Add(1)
	s.AddStall(2 * time.Millisecond)
	before := s.Snapshot()
	s.Reads.Add(2)
	s.BytesRead.Add(8192)
	s.AddStall(time.Millisecond)
	c := s.Snapshot()
	if c.HitRate() != 0.75 || c.Stall != 3*time.Millisecond {
		t.Fatalf("%+v: hit rate %v", c, c.HitRate())
	}
	if d := c.Sub(before); d != (Counts{Reads: 2, BytesRead: 8192, Stall: time.Millisecond}) {
		t.Fatalf("interval %+v", d)
	}
}
