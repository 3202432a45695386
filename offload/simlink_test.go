package offload

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestSimLink(t *testing.T) {
	const n = 1 << 20 // 1 MiB: 1.05 ms at 1 GB/s
	data := pattern(n)
	l := NewSimLink(NewMemStore(data), 1, 0)
	if got := l.TransferTime(n); got != 1048576*time.Nanosecond {
		t.Fatalf("TransferTime(1 MiB) at 1 GB/s = %v", got)
	}
	// Four reads in flight together share the link: 4 transfer times.
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			dst := make([]byte, n)
			errs[i] = l.ReadAt(context.Background(), dst, 0)
			if errs[i] == nil && !bytes.Equal(dst, data) {
				errs[i] = errors.New("wrong bytes")
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if d, want := time.Since(start), 4*l.TransferTime(n); d < want {
		t.Fatalf("4 concurrent reads took %v, want >= %v", d, want)
	}
}

func TestSimLinkLatency(t *testing.T) {
	l := NewSimLink(NewMemStore(make([]byte, Align)), 1000, 15*time.Millisecond)
	start := time.Now()
	if err := l.ReadAt(context.Background(), make([]byte, Align), 0); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 15*time.Millisecond {
		t.Fatalf("read took %v, want >= latency 15ms", d)
	}
	// Cancelled while on the wire.
	l = NewSimLink(NewMemStore(make([]byte, Align)), 1e-6, 0) // 4 KiB takes ~4 s
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := l.ReadAt(ctx, make([]byte, Align), 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled read: %v", err)
	}
	// Errors of the inner store pass through.
	if err := l.ReadAt(context.Background(), make([]byte, 2*Align), 0); !errors.Is(err, ErrShortRead) {
		t.Fatalf("short inner read: %v", err)
	}
}

// The inner store's read is part of the transfer time, not added to it:
// a 20 ms read through an inner store taking 15 ms arrives after 20 ms.
func TestSimLinkOverlapsInnerRead(t *testing.T) {
	const n = 1 << 20
	inner := SlowStore{Store: NewMemStore(pattern(n)), Delay: 15 * time.Millisecond}
	l := NewSimLink(inner, float64(n)/20e6, 0) // n bytes in 20 ms
	start := time.Now()
	if err := l.ReadAt(context.Background(), make([]byte, n), 0); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 20*time.Millisecond || d >= 33*time.Millisecond {
		t.Fatalf("read took %v, want 20 ms (the link's time, the inner read inside it), not 35", d)
	}
}
