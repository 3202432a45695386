package offload

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// SimLink is a Store that delivers another store's bytes as if they came
// over a link of fixed bandwidth (a simulated PCIe or NVMe link): it
// reserves the link for the transfer, reads from the inner store meanwhile,
// then waits on a timer until the bytes would have arrived, using no CPU
// in the wait. The inner read is part of the transfer time, as a DMA
// engine's read of its source is, not added to it (a copy out of RAM
// takes a large share of an expert's transfer at PCIe speeds); only an
// inner read slower than the link delays the arrival. Transfers share the
// link one after another in the order they reach it, so any number of
// reads in flight together move at most GBps; each one also arrives
// Latency after its transfer ends. `moesys bench offload` wraps a store of
// the experts file's cached pages in one to model a slow tier (the
// Pre-gated MoE paper's PCIe link) on a machine that lacks it.
type SimLink struct {
	inner   Store
	gbps    float64
	latency time.Duration

	mu   sync.Mutex
	busy time.Time // when the link finishes its last reserved transfer
}

// NewSimLink wraps inner in a link of gbps gigabytes (1e9 bytes) per
// second and a fixed latency per transfer. It panics if gbps is not
// positive. The link owns inner: Close closes it.
func NewSimLink(inner Store, gbps float64, latency time.Duration) *SimLink {
	if !(gbps > 0) {
		panic(fmt.Sprintf("offload: NewSimLink: bandwidth %v GB/s, want > 0", gbps))
	}
	return &SimLink{inner: inner, gbps: gbps, latency: latency}
}

// TransferTime is how long n bytes occupy the link.
func (l *SimLink) TransferTime(n int) time.Duration {
	return time.Duration(float64(n) / l.gbps) // bytes / (GB/s) = ns
}

// ReadAt reserves the link for len(dst) bytes, reads them from the inner
// store and waits until they arrive. If ctx ends during a wait longer than
// a few milliseconds it returns ctx's error (dst holds the data
// regardless); the reserved link time stays spent, like a transfer already
// on the wire, and so does that of a failed inner read.
func (l *SimLink) ReadAt(ctx context.Context, dst []byte, off int64) error {
	l.mu.Lock()
	start := time.Now()
	if l.busy.After(start) {
		start = l.busy
	}
	l.busy = start.Add(l.TransferTime(len(dst)))
	arrive := l.busy.Add(l.latency)
	l.mu.Unlock()
	if err := l.inner.ReadAt(ctx, dst, off); err != nil {
		return err
	}
	// The runtime's timers wake up to about 1 ms late, which would cap a
	// link moving a small expert per wait far below its bandwidth and
	// make every transfer of a few milliseconds late by a good share: a
	// long wait sleeps on a timer (cancellable) until shortWait before the
	// arrival, and the rest sleeps in the kernel (about 0.1 ms late),
	// blocking this goroutine's thread without using CPU.
	if d := time.Until(arrive); d > shortWait {
		if err := sleepCtx(ctx, d-shortWait, "link", len(dst), off); err != nil {
			return err
		}
	}
	if d := time.Until(arrive); d > 0 {
		ts := unix.NsecToTimespec(int64(d))
		for unix.Nanosleep(&ts, &ts) == unix.EINTR {
		}
	}
	return nil
}

// shortWait is the end of a SimLink wait slept in the kernel rather than
// on a timer: more than the runtime timer's lateness, short enough that
// a cancelled read returns soon.
const shortWait = 2 * time.Millisecond

// Close closes the inner store.
func (l *SimLink) Close() error { return l.inner.Close() }

// sleepCtx waits d, or until ctx ends, for a read of size bytes at off of
// what.
func sleepCtx(ctx context.Context, d time.Duration, what string, size int, off int64) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return readErr(what, size, off, ctx.Err())
	}
}
