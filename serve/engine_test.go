package serve

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/moesys/moesys/sample"
	"github.com/moesys/moesys/tokenizer"
)

// A sequence whose context ends is dropped by the engine between passes;
// when the engine notices before the request's Wait does, Wait still
// reports the context's error (a timeout answers 504, not a server error
// with "request cancelled").
func TestWaitAfterEngineDropsEndedContext(t *testing.T) {
	e, err := NewEngine(endless(t), &tokenizer.Byte{}, EngineConfig{MaxSeqs: 1, Context: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	p := sample.Defaults()
	p.MaxTokens = 100000
	seq, err := e.Submit(ctx, []int32{'x'}, p)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the engine to drop the sequence", func() bool {
		seq.mu.Lock()
		defer seq.mu.Unlock()
		return seq.upd.Done
	})
	for {
		u, err := seq.Wait(ctx)
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Wait: %v, want the deadline", err)
			}
			return
		}
		if u.Done {
			t.Fatalf("Wait returned the end %+v (error %v), not the context's error", u, u.Err)
		}
	}
}

// The rate is the last rateWindow complete seconds' count over the window,
// also once the current second has counted events (its bucket must not be
// the one holding the window's oldest second).
func TestRateMeterWindow(t *testing.T) {
	var r rateMeter
	now := time.Unix(1_000_000, 0)
	for s := int64(-int64(rateWindow / time.Second)); s <= 0; s++ {
		r.add(now.Add(time.Duration(s)*time.Second), 5)
	}
	if got := r.perSecond(now); got != 5 {
		t.Fatalf("steady 5 a second: %g a second", got)
	}
}
