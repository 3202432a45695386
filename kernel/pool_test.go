package kernel

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestPoolParkedAndSpinning runs calls back to back (workers spinning) and
// after idle gaps longer than SpinWait (workers parked), on one processor
// too, where a spinning caller must yield for its worker to run at all.
func TestPoolParkedAndSpinning(t *testing.T) {
	for _, procs := range []int{1, 2, 4} {
		prev := runtime.GOMAXPROCS(procs)
		p := NewPool(3)
		var n atomic.Int64
		for i := 0; i < 40; i++ {
			if i%8 == 7 {
				time.Sleep(3 * SpinWait) // every worker parks
			}
			p.Run(5, func(int) { n.Add(1) })
		}
		runtime.GOMAXPROCS(prev)
		if got := n.Load(); got != 200 {
			t.Fatalf("GOMAXPROCS %d: %d parts ran, want 200", procs, got)
		}
	}
}

// TestPoolCallerParks: workers whose parts outlast SpinWait make the caller
// park; the last worker wakes it, every time, including right after a call
// whose wake-up token went unused.
func TestPoolCallerParks(t *testing.T) {
	p := NewPool(3)
	var n atomic.Int64
	for i := 0; i < 20; i++ {
		slow := i%2 == 0
		p.Run(3, func(part int) {
			if slow && part > 0 {
				time.Sleep(SpinWait * time.Duration(1+part))
			}
			n.Add(1)
		})
		if got := n.Load(); got != int64(3*(i+1)) {
			t.Fatalf("call %d returned with %d parts done, want %d", i, got, 3*(i+1))
		}
	}
}

// TestPoolConcurrentCallers: callers racing for the workers each get every
// part run exactly once (the losers inline).
func TestPoolConcurrentCallers(t *testing.T) {
	p := NewPool(2)
	done := make(chan [64]int32)
	for g := 0; g < 4; g++ {
		go func() {
			var hits [64]int32
			for i := 0; i < 200; i++ {
				p.Run(len(hits), func(j int) { atomic.AddInt32(&hits[j], 1) })
			}
			done <- hits
		}()
	}
	for g := 0; g < 4; g++ {
		for j, h := range <-done {
			if h != 200 {
				t.Fatalf("part %d ran %d times, want 200", j, h)
			}
		}
	}
}

// BenchmarkPoolForkJoin times one parallel call of two empty parts after
// an idle gap: below SpinWait the worker is still spinning and the call
// costs well under a microsecond; past it the worker has parked and the
// call pays its wake-up.
func BenchmarkPoolForkJoin(b *testing.B) {
	for _, idle := range []time.Duration{0, 20 * time.Microsecond, 2 * SpinWait} {
		b.Run(fmt.Sprintf("idle=%v", idle), func(b *testing.B) {
			p := NewPool(2)
			var sink [2]int
			var work time.Duration
			for i := 0; i < b.N; i++ {
				for t0 := time.Now(); time.Since(t0) < idle; {
				}
				t0 := time.Now()
				p.Run(2, func(i int) { sink[i]++ })
				work += time.Since(t0)
			}
			b.ReportMetric(float64(work.Nanoseconds())/float64(b.N), "ns/call")
		})
	}
}

// TestParallelTake runs every item exactly once, items of very uneven
// cost included, with fewer items than threads and none.
func TestParallelTake(t *testing.T) {
	prev := SetThreads(3)
	defer SetThreads(prev)
	for _, n := range []int{0, 1, 2, 50} {
		hits := make([]int32, n)
		ParallelTake(n, func(i int) {
			if i == 0 {
				time.Sleep(time.Millisecond) // one slow item: the others go to the other threads
			}
			atomic.AddInt32(&hits[i], 1)
		})
		for i, h := range hits {
			if h != 1 {
				t.Fatalf("n %d: item %d ran %d times", n, i, h)
			}
		}
	}
}
