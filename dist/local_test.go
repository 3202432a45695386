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

// Every collective against a serial reference, for group sizes 1-4 and
// lengths that do and do not divide among the ranks.
func TestLocalCollectives(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{1, 2, 3, 4} {
		for _, m := range []int{0, 1, 5, 64} {
			t.Run(fmt.Sprintf("ranks%d/len%d", n, m), func(t *testing.T) {
				// The references: sums in rank order.
				sum := make([]float32, m)
				for r := range n {
					for i, v := range rankData(r, m) {
						if r == 0 {
							sum[i] = v
						} else {
							sum[i] += v
						}
					}
				}
				got := make([][]float32, n)
				noErrors(t, onRanks(t, n, func(c Comm) error {
					buf := rankData(c.Rank(), m)
					if err := c.AllReduce(ctx, buf); err != nil {
						return err
					}
					got[c.Rank()] = buf
					return nil
				}))
				for r := range n {
					if !slices.Equal(got[r], sum) {
						t.Fatalf("AllReduce: rank %d got %v, want %v (bit-identical, rank-order sums)", r, got[r], sum)
					}
				}

				noErrors(t, onRanks(t, n, func(c Comm) error {
					send := rankData(c.Rank(), m)
					recv := make([]float32, n*m)
					if err := AllGatherOf(ctx, c, send, recv); err != nil {
						return err
					}
					for q := range n {
						if !slices.Equal(recv[q*m:(q+1)*m], rankData(q, m)) {
							return fmt.Errorf("AllGather: block %d differs", q)
						}
					}
					return nil
				}))

				noErrors(t, onRanks(t, n, func(c Comm) error {
					send := rankData(c.Rank(), n*m)
					recv := make([]float32, m)
					if err := c.ReduceScatter(ctx, send, recv); err != nil {
						return err
					}
					for i := range m {
						var s float32
						for q := range n {
							if v := rankData(q, n*m)[c.Rank()*m+i]; q == 0 {
								s = v
							} else {
								s += v
							}
						}
						if recv[i] != s {
							return fmt.Errorf("ReduceScatter: element %d = %v, want %v", i, recv[i], s)
						}
					}
					return nil
				}))

				for root := range n {
					noErrors(t, onRanks(t, n, func(c Comm) error {
						buf := rankData(c.Rank(), m)
						if err := BroadcastOf(ctx, c, buf, root); err != nil {
							return err
						}
						if !slices.Equal(buf, rankData(root, m)) {
							return fmt.Errorf("Broadcast from %d: rank %d differs", root, c.Rank())
						}
						return nil
					}))
				}
			})
		}
	}
}

// AllToAllV with uneven counts, zero counts included: rank s sends rank d
// (s + 2d + m) % 4 elements, each naming its sender, receiver and index.
func TestLocalAllToAllV(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{1, 2, 3, 4} {
		for _, m := range []int{0, 1, 3} {
			count := func(s, d int) int { return (s + 2*d + m) % 4 }
			val := func(s, d, i int) int64 { return int64(s*1000000 + d*1000 + i) }
			noErrors(t, onRanks(t, n, func(c Comm) error {
				me := c.Rank()
				sc, rc := make([]int, n), make([]int, n)
				var send []int64
				for d := range n {
					sc[d] = count(me, d)
					rc[d] = count(d, me)
					for i := range sc[d] {
						send = append(send, val(me, d, i))
					}
				}
				recv := make([]int64, 0, 16)
				for s := range n {
					for i := range rc[s] {
						recv = append(recv, val(s, me, i))
					}
				}
				want := slices.Clone(recv)
				clear(recv)
				if err := AllToAllVOf(ctx, c, send, sc, recv, rc); err != nil {
					return err
				}
				if !slices.Equal(recv, want) {
					return fmt.Errorf("ranks %d len %d: rank %d got %v, want %v", n, m, me, recv, want)
				}
				return nil
			}))
		}
	}
}

// Ranks that disagree get ErrMismatch, all of them, and the group goes on.
func TestLocalMismatch(t *testing.T) {
	ctx := context.Background()
	errs := onRanks(t, 3, func(c Comm) error {
		buf := make([]float32, 4+c.Rank()) // lengths differ
		err := c.AllReduce(ctx, buf)
		if !errors.Is(err, ErrMismatch) {
			return fmt.Errorf("AllReduce of different lengths: %v", err)
		}
		// Different collectives at once.
		if c.Rank() == 0 {
			err = c.Broadcast(ctx, make([]byte, 4), 0)
		} else {
			err = c.AllReduce(ctx, make([]float32, 4))
		}
		if !errors.Is(err, ErrMismatch) {
			return fmt.Errorf("different collectives: %v", err)
		}
		// Counts that do not agree: rank 1 expects 2 bytes from rank 0,
		// which sends 1.
		sc, rc := []int{1, 1, 1}, []int{1, 1, 1}
		if c.Rank() == 1 {
			rc[0] = 2
		}
		err = c.AllToAllV(ctx, make([]byte, 3), sc, make([]byte, 4), rc)
		if (c.Rank() == 1) != errors.Is(err, ErrMismatch) {
			return fmt.Errorf("AllToAllV with disagreeing counts on rank %d: %v", c.Rank(), err)
		}
		// Bad arguments on one rank only: every rank fails.
		sc = []int{1, 1, 1}
		if c.Rank() == 2 {
			sc = []int{1, 1}
		}
		if err := c.AllToAllV(ctx, make([]byte, 3), sc, make([]byte, 3), []int{1, 1, 1}); !errors.Is(err, ErrMismatch) {
			return fmt.Errorf("AllToAllV with 2 counts on rank 2: %v", err)
		}
		// Still in step.
		ok := []float32{float32(c.Rank())}
		if err := c.AllReduce(ctx, ok); err != nil || ok[0] != 3 {
			return fmt.Errorf("AllReduce after the mismatches: %v %v", ok, err)
		}
		return c.Barrier(ctx)
	})
	noErrors(t, errs)
}

// A rank whose context ends while the others wait breaks the group: no
// rank is left waiting, and every later call fails.
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
