package dist

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// onRanks runs f on every rank of a new local group, each on its own
// goroutine, and returns their errors by rank.
func onRanks(t *testing.T, n int, f func(c Comm) error) []error {
	t.Helper()
	cs, err := NewLocal(n)
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r, c := range cs {
		wg.Go(func() {
			errs[r] = f(c)
			c.Close()
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("ranks still running after 30 s: deadlock")
	}
	return errs
}

func noErrors(t *testing.T, errs []error) {
	t.Helper()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

// rankData is rank r's deterministic random input of n values.
func rankData(r, n int) []float32 {
	rng := rand.New(rand.NewPCG(uint64(r), uint64(n)))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// The conformance suite over goroutine ranks, groups of 1-4.
func TestConformanceLocal(t *testing.T) {
	ctx := context.Background()
	for _, tc := range conformance {
		for _, n := range []int{1, 2, 3, 4} {
			t.Run(fmt.Sprintf("%s/ranks%d", tc.name, n), func(t *testing.T) {
				noErrors(t, onRanks(t, n, func(c Comm) error { return tc.run(ctx, c) }))
			})
		}
	}
}

// Sums add in rank order: every rank gets the serial rank-order sum's
// bits, for any group size and lengths that do and do not divide.
func TestLocalRankOrder(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{1, 2, 3, 4} {
		for _, m := range []int{0, 1, 5, 64} {
			sum := rankSum(rankData, n, m)
			full := rankSum(rankData, n, n*m)
			noErrors(t, onRanks(t, n, func(c Comm) error {
				buf := rankData(c.Rank(), m)
				if err := c.AllReduce(ctx, buf); err != nil {
					return err
				}
				if !slices.Equal(buf, sum) {
					return fmt.Errorf("AllReduce over %d ranks: %s (bit-identical, rank-order sums)", n, firstDiff(buf, sum))
				}
				recv := make([]float32, m)
				if err := c.ReduceScatter(ctx, rankData(c.Rank(), n*m), recv); err != nil {
					return err
				}
				if want := full[c.Rank()*m : (c.Rank()+1)*m]; !slices.Equal(recv, want) {
					return fmt.Errorf("ReduceScatter over %d ranks: %s", n, firstDiff(recv, want))
				}
				return nil
			}))
		}
	}
}

// A rank whose context ends while the others wait breaks the group: no
// rank is left waiting, not even one that never comes, and every later
// call fails, on every rank.
func TestLocalBroken(t *testing.T) {
	errs := onRanks(t, 3, func(c Comm) error {
		ctx := context.Background()
		if c.Rank() == 1 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 20*time.Millisecond)
			defer cancel()
			<-ctx.Done() // arrives late, with its deadline passed
		}
		if c.Rank() != 2 { // rank 2 never comes: the others must not hang
			err := c.Barrier(ctx)
			if !errors.Is(err, ErrBroken) {
				return fmt.Errorf("barrier: %v, want ErrBroken", err)
			}
		} else {
			time.Sleep(50 * time.Millisecond)
		}
		if err := c.AllReduce(context.Background(), make([]float32, 2)); !errors.Is(err, ErrBroken) {
			return fmt.Errorf("after the break: %v, want ErrBroken", err)
		}
		return nil
	})
	noErrors(t, errs)
	cs, _ := NewLocal(1)
	cs[0].Close()
	if err := cs[0].Barrier(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if _, err := NewLocal(0); err == nil {
		t.Fatal("NewLocal(0): no error")
	}
}

// benchLocal times op on rank 0 of a 2-rank local group while rank 1 runs
// it alongside; size is the bytes per rank.
func benchLocal(b *testing.B, size int, op func(c Comm, size int) func() error) {
	cs, err := NewLocal(2)
	if err != nil {
		b.Fatal(err)
	}
	f0, f1 := op(cs[0], size), op(cs[1], size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	n := b.N
	done := make(chan error, 1)
	go func() {
		for range n {
			if err := f1(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	b.ResetTimer()
	for range n {
		if err := f0(); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

func BenchmarkLocalAllReduce(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			benchLocal(b, size, func(c Comm, size int) func() error {
				buf := make([]float32, size/4)
				return func() error { return c.AllReduce(context.Background(), buf) }
			})
		})
	}
}

func BenchmarkLocalAllToAllV(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			benchLocal(b, size, func(c Comm, size int) func() error {
				send, recv := make([]byte, size), make([]byte, size)
				counts := []int{size / 2, size / 2}
				return func() error { return c.AllToAllV(context.Background(), send, counts, recv, counts) }
			})
		})
	}
}
