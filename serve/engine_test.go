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
