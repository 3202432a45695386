package dist

import (
	"context"
	"fmt"
	"time"
)

// Fused sums many tensors over a Comm with few collectives (fusion
// communication): tensors are packed, in the order they become ready, into
// buckets of up to a set size, and each bucket goes out as one AllReduce
// as soon as its last tensor is ready, on a goroutine of its own, so the
// reduction overlaps whatever produces the later tensors (backward). A
// tensor larger than a bucket is its own bucket, reduced in place in
// bucket-sized pieces. A Fused serves one round at a time: Start, Ready for
// every tensor, Wait.
//
// The Comm must be one no other goroutine uses during a round (Split the
// communicator the rest of the step uses), and every rank must have the
// same tensor lengths and bucket size: buckets then go out in the same
// order everywhere.
type Fused struct {
	c       Comm
	tensors [][]float32
	buckets []fusedBucket
	of      []int     // tensor -> bucket
	buf     []float32 // packing buffer, one bucket
	left    []int     // per bucket: tensors not yet ready this round
	next    int       // next bucket to launch
	ch      chan int
	done    chan error
	busy    time.Duration // time in the collectives, all rounds
}

// fusedBucket is tensors [lo, hi) of the list, packed (or one big tensor).
type fusedBucket struct {
	lo, hi int
	packed bool
}

// NewFused plans the buckets of tensors (listed in the order they will
// become ready) with buckets of bucketBytes (at least one float32).
func NewFused(c Comm, tensors [][]float32, bucketBytes int) *Fused {
	n := max(bucketBytes/4, 1)
	f := &Fused{c: c, tensors: tensors, of: make([]int, len(tensors)), buf: make([]float32, n)}
	used := 0
	for i, t := range tensors {
		switch {
		case len(t) > n:
			f.buckets = append(f.buckets, fusedBucket{lo: i, hi: i + 1})
			used = n // the next small tensor starts a new bucket
		case len(f.buckets) == 0 || used+len(t) > n || !f.buckets[len(f.buckets)-1].packed:
			f.buckets = append(f.buckets, fusedBucket{lo: i, hi: i + 1, packed: true})
			used = len(t)
		default:
			f.buckets[len(f.buckets)-1].hi = i + 1
			used += len(t)
		}
		f.of[i] = len(f.buckets) - 1
	}
	f.left = make([]int, len(f.buckets))
	return f
}

// Buckets returns the number of collectives a round makes (pieces of
// tensors larger than a bucket counted once).
func (f *Fused) Buckets() int { return len(f.buckets) }

// Start begins a round.
func (f *Fused) Start(ctx context.Context) {
	for b, k := range f.buckets {
		f.left[b] = k.hi - k.lo
	}
	f.next = 0
	f.ch, f.done = make(chan int, len(f.buckets)), make(chan error, 1)
	go f.worker(ctx, f.ch, f.done)
}

// Ready says tensor i holds its final local value: its bucket goes out
// once all of it (and every bucket before it) is ready. Called by one
// goroutine, once per tensor per round.
func (f *Fused) Ready(i int) {
	f.left[f.of[i]]--
	for f.next < len(f.buckets) && f.left[f.next] == 0 {
		f.ch <- f.next
		f.next++
	}
}

// Busy returns the time the rounds so far spent summing buckets (packing
// included), most of it overlapping the caller's work. Read it between
// rounds.
func (f *Fused) Busy() time.Duration { return f.busy }

// Wait ends the round: it returns once every bucket is summed (each tensor
// then holds the sum over the ranks), or the first error. Every tensor must
// have been Ready.
func (f *Fused) Wait() error {
	close(f.ch)
	err := <-f.done
	if err == nil && f.next < len(f.buckets) {
		err = fmt.Errorf("dist: fused all-reduce: %d of %d buckets never ready", len(f.buckets)-f.next, len(f.buckets))
	}
	return err
}

// worker reduces the buckets in launch order. After an error it drains the
// channel without communicating.
func (f *Fused) worker(ctx context.Context, ch <-chan int, done chan<- error) {
	var first error
	for b := range ch {
		if first != nil {
			continue
		}
		t := time.Now()
		if err := f.reduce(ctx, f.buckets[b]); err != nil {
			first = fmt.Errorf("dist: fused all-reduce: %w", err)
		}
		f.busy += time.Since(t)
	}
	done <- first
}

// reduce sums one bucket over the ranks.
func (f *Fused) reduce(ctx context.Context, k fusedBucket) error {
	if !k.packed {
		t, n := f.tensors[k.lo], len(f.buf)
		for lo := 0; lo < len(t); lo += n {
			if err := f.c.AllReduce(ctx, t[lo:min(lo+n, len(t))]); err != nil {
				return err
			}
		}
		return nil
	}
	at := 0
	for _, t := range f.tensors[k.lo:k.hi] {
		at += copy(f.buf[at:], t)
	}
	if err := f.c.AllReduce(ctx, f.buf[:at]); err != nil {
		return err
	}
	at = 0
	for _, t := range f.tensors[k.lo:k.hi] {
		at += copy(t, f.buf[at:])
	}
	return nil
}

// AllReduceFused sums tensors over c in buckets of bucketBytes (one round
// of a Fused, every tensor ready at once).
func AllReduceFused(ctx context.Context, c Comm, tensors [][]float32, bucketBytes int) error {
	f := NewFused(c, tensors, bucketBytes)
	f.Start(ctx)
	for i := range tensors {
		f.Ready(i)
	}
	return f.Wait()
}
