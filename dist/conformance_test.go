package dist

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// The conformance suite: what every backend's Comm must do. A case runs
// on every rank of a group of any size, each rank calling it with its own
// Comm, and returns that rank's error. TestConformanceLocal runs it over
// goroutine ranks of 1-4; TestConformanceMPI over the processes of an
// mpirun job (make test-mpi: 2 and 4 ranks).
var conformance = []struct {
	name string
	run  func(ctx context.Context, c Comm) error
}{
	{"AllReduce", confAllReduce},
	{"AllGather", confAllGather},
	{"ReduceScatter", confReduceScatter},
	{"Broadcast", confBroadcast},
	{"AllToAllV", confAllToAllV},
	{"Embedded", confEmbedded},
	{"Mismatch", confMismatch},
	{"Split", confSplit},
	{"Concurrent", confConcurrent},
	{"Node", confNode},
	{"Broken", confBroken},
	{"Closed", confClosed},
}

// confLens are the lengths the data cases try: empty, short, and ones that
// do and do not divide among the ranks, up to past MPI's eager sizes.
var confLens = []int{0, 1, 5, 64, 100003}

// intData is rank r's deterministic input of n integers in [-1000, 1000]
// as float32: their sums are exact in any order, so every backend's must
// equal the serial one.
func intData(r, n int) []float32 {
	rng := rand.New(rand.NewPCG(uint64(r)+100, uint64(n)))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.IntN(2001) - 1000)
	}
	return v
}

// rankSum is the serial rank-order sum of data(q, n) over size ranks.
func rankSum(data func(r, n int) []float32, size, n int) []float32 {
	sum := make([]float32, n)
	for q := range size {
		for i, v := range data(q, n) {
			if q == 0 {
				sum[i] = v
			} else {
				sum[i] += v
			}
		}
	}
	return sum
}

// firstDiff describes the first element where got and want differ.
func firstDiff(got, want []float32) string {
	if len(got) != len(want) {
		return fmt.Sprintf("length %d, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("element %d = %v, want %v", i, got[i], want[i])
		}
	}
	return "equal"
}

func confAllReduce(ctx context.Context, c Comm) error {
	for _, m := range confLens {
		buf := intData(c.Rank(), m)
		if err := c.AllReduce(ctx, buf); err != nil {
			return err
		}
		if want := rankSum(intData, c.Size(), m); !slices.Equal(buf, want) {
			return fmt.Errorf("AllReduce of %d: %s", m, firstDiff(buf, want))
		}
		// With two ranks a+b == b+a: any backend's sums of inexact values
		// are bit-identical to the rank-order ones.
		if c.Size() <= 2 {
			buf = rankData(c.Rank(), m)
			if err := c.AllReduce(ctx, buf); err != nil {
				return err
			}
			if want := rankSum(rankData, c.Size(), m); !slices.Equal(buf, want) {
				return fmt.Errorf("AllReduce of %d random values over %d ranks: %s", m, c.Size(), firstDiff(buf, want))
			}
		}
	}
	return nil
}

func confAllGather(ctx context.Context, c Comm) error {
	n := c.Size()
	for _, m := range confLens {
		send := intData(c.Rank(), m)
		recv := make([]float32, n*m+1) // longer than it must be
		if err := AllGatherOf(ctx, c, send, recv); err != nil {
			return err
		}
		for q := range n {
			if got, want := recv[q*m:(q+1)*m], intData(q, m); !slices.Equal(got, want) {
				return fmt.Errorf("AllGather of %d: rank %d's block: %s", m, q, firstDiff(got, want))
			}
		}
	}
	return nil
}

func confReduceScatter(ctx context.Context, c Comm) error {
	n, me := c.Size(), c.Rank()
	for _, m := range confLens {
		recv := make([]float32, m)
		if err := c.ReduceScatter(ctx, intData(me, n*m), recv); err != nil {
			return err
		}
		if want := rankSum(intData, n, n*m)[me*m : (me+1)*m]; !slices.Equal(recv, want) {
			return fmt.Errorf("ReduceScatter of %d x %d: %s", n, m, firstDiff(recv, want))
		}
	}
	return nil
}

func confBroadcast(ctx context.Context, c Comm) error {
	for root := range c.Size() {
		for _, m := range confLens {
			buf := intData(c.Rank(), m)
			if err := BroadcastOf(ctx, c, buf, root); err != nil {
				return err
			}
			if want := intData(root, m); !slices.Equal(buf, want) {
				return fmt.Errorf("Broadcast of %d from %d: %s", m, root, firstDiff(buf, want))
			}
		}
	}
	return nil
}

// confAllToAllV sends uneven counts, zero counts included: rank s sends
// rank d (s + 2d + m) % 4 elements (times scale), each naming its sender,
// receiver and index.
func confAllToAllV(ctx context.Context, c Comm) error {
	n, me := c.Size(), c.Rank()
	for _, scale := range []int{1, 10000} {
		for _, m := range []int{0, 1, 3} {
			count := func(s, d int) int { return (s + 2*d + m) % 4 * scale }
			val := func(s, d, i int) int64 { return int64(s*1000000000 + d*1000000 + i) }
			sc, rc := make([]int, n), make([]int, n)
			var send, want []int64
			for d := range n {
				sc[d], rc[d] = count(me, d), count(d, me)
				for i := range sc[d] {
					send = append(send, val(me, d, i))
				}
				for i := range rc[d] {
					want = append(want, val(d, me, i))
				}
			}
			recv := make([]int64, len(want)+3) // longer than it must be
			if err := AllToAllVOf(ctx, c, send, sc, recv, rc); err != nil {
				return err
			}
			if !slices.Equal(recv[:len(want)], want) {
				return fmt.Errorf("AllToAllV (m %d, scale %d): rank %d received other data", m, scale, me)
			}
		}
	}
	return nil
}

// confEmbedded: buffers that are arrays inside structs which also hold Go
// pointers work like any slice (a backend that hands buffers to C must not
// trip over cgo's check of the whole object).
func confEmbedded(ctx context.Context, c Comm) error {
	n, me := c.Size(), c.Rank()
	type holder struct {
		name *string
		f    [64]float32
		next *holder
		b    [64]byte
		more []int
	}
	if n > 16 {
		return nil // the arrays hold 4 elements per rank
	}
	h := &holder{name: new(string), next: &holder{}, more: []int{1}}
	g := &holder{name: new(string), next: h, more: []int{2}}
	h.f[0], h.f[1] = float32(me), 1
	if err := c.AllReduce(ctx, h.f[:2]); err != nil || h.f[0] != float32(n*(n-1)/2) || h.f[1] != float32(n) {
		return fmt.Errorf("AllReduce of an embedded array: %v, %v", h.f[:2], err)
	}
	for q := range 4 * n {
		h.f[q] = float32(me + q)
	}
	if err := c.ReduceScatter(ctx, h.f[:4*n], g.f[:4]); err != nil {
		return err
	}
	for i := range 4 {
		if want := float32(n*(4*me+i) + n*(n-1)/2); g.f[i] != want {
			return fmt.Errorf("ReduceScatter of embedded arrays: element %d = %v, want %v", i, g.f[i], want)
		}
	}
	h.b[0] = byte(me)
	if err := c.AllGather(ctx, h.b[:1], g.b[:n]); err != nil {
		return err
	}
	for q := range n {
		if g.b[q] != byte(q) {
			return fmt.Errorf("AllGather into an embedded array: %v", g.b[:n])
		}
	}
	counts := slices.Repeat([]int{1}, n)
	for d := range n {
		h.b[d] = byte(16*me + d)
	}
	if err := c.AllToAllV(ctx, h.b[:n], counts, g.b[:n], counts); err != nil {
		return err
	}
	for s := range n {
		if g.b[s] != byte(16*s+me) {
			return fmt.Errorf("AllToAllV between embedded arrays: %v", g.b[:n])
		}
	}
	h.b[0] = byte(me + 1)
	if err := c.Broadcast(ctx, h.b[:1], n-1); err != nil || h.b[0] != byte(n) {
		return fmt.Errorf("Broadcast of an embedded array: %d, %v", h.b[0], err)
	}
	return nil
}

// confMismatch: ranks that disagree get ErrMismatch, all of them (but for
// AllToAllV's receive counts, which fail on the receiver alone), and the
// group goes on.
func confMismatch(ctx context.Context, c Comm) error {
	n, me := c.Size(), c.Rank()
	if n < 2 {
		return nil
	}
	last := n - 1
	all := func(what string, err error) error {
		if !errors.Is(err, ErrMismatch) {
			return fmt.Errorf("%s: %v, want ErrMismatch", what, err)
		}
		return nil
	}
	if err := all("AllReduce of different lengths", c.AllReduce(ctx, make([]float32, 4+me))); err != nil {
		return err
	}
	var err error
	if me == 0 {
		err = c.Broadcast(ctx, make([]byte, 4), 0)
	} else {
		err = c.AllReduce(ctx, make([]float32, 4))
	}
	if err := all("different collectives", err); err != nil {
		return err
	}
	if err := all("Broadcast from different roots", c.Broadcast(ctx, make([]byte, 4), min(me, 1))); err != nil {
		return err
	}
	if err := all("Broadcast from a root past the ranks", c.Broadcast(ctx, make([]byte, 4), n)); err != nil {
		return err
	}
	m := 2 * n
	if me == last {
		m++ // does not divide
	}
	if err := all("ReduceScatter of an odd length on one rank", c.ReduceScatter(ctx, make([]float32, m), make([]float32, 2))); err != nil {
		return err
	}
	if err := all("AllGather into a short buffer on one rank", c.AllGather(ctx, make([]byte, 3), make([]byte, 3*n-min(1, me)))); err != nil {
		return err
	}
	// Counts that do not agree: rank 1 expects 2 bytes from rank 0, which
	// sends 1: rank 1 alone fails.
	sc, rc := make([]int, n), make([]int, n)
	for q := range n {
		sc[q], rc[q] = 1, 1
	}
	if me == 1 {
		rc[0] = 2
	}
	err = c.AllToAllV(ctx, make([]byte, n), sc, make([]byte, n+1), rc)
	if (me == 1) != errors.Is(err, ErrMismatch) || (me != 1 && err != nil) {
		return fmt.Errorf("AllToAllV with disagreeing counts on rank %d: %v", me, err)
	}
	// Bad arguments on one rank only: every rank fails.
	sc = slices.Repeat([]int{1}, n)
	if me == last {
		sc = sc[:n-1]
	}
	if err := all("AllToAllV with a count short", c.AllToAllV(ctx, make([]byte, n), sc, make([]byte, n), slices.Repeat([]int{1}, n))); err != nil {
		return err
	}
	// Still in step.
	ok := []float32{float32(me)}
	if err := c.AllReduce(ctx, ok); err != nil || ok[0] != float32(n*(n-1)/2) {
		return fmt.Errorf("AllReduce after the mismatches: %v %v", ok, err)
	}
	return c.Barrier(ctx)
}

// confSplit: colors and keys order the new Comms; a negative color joins
// none; a split Comm splits again.
func confSplit(ctx context.Context, c Comm) error {
	n, me := c.Size(), c.Rank()
	// Even and odd ranks, each in reverse rank order (key -rank).
	sub, err := c.Split(ctx, me%2, -me)
	if err != nil {
		return err
	}
	var members []int // old ranks of this color in new-rank order
	for q := n - 1; q >= 0; q-- {
		if q%2 == me%2 {
			members = append(members, q)
		}
	}
	if sub.Size() != len(members) || sub.Rank() != slices.Index(members, me) {
		return fmt.Errorf("Split(%d, %d): rank %d of %d, want %d of %d", me%2, -me, sub.Rank(), sub.Size(), slices.Index(members, me), len(members))
	}
	got := make([]int64, sub.Size())
	if err := AllGatherOf(ctx, sub, []int64{int64(me)}, got); err != nil {
		return err
	}
	for i, q := range members {
		if got[i] != int64(q) {
			return fmt.Errorf("Split: new rank %d is old rank %d, want %d", i, got[i], q)
		}
	}
	// Splitting the split: a duplicate.
	dup, err := sub.Split(ctx, 7, sub.Rank())
	if err != nil {
		return err
	}
	sum := []float32{float32(me)}
	if err := dup.AllReduce(ctx, sum); err != nil {
		return err
	}
	want := 0
	for _, q := range members {
		want += q
	}
	if sum[0] != float32(want) {
		return fmt.Errorf("AllReduce over a split of a split: %v, want %d", sum[0], want)
	}
	if err := errors.Join(dup.Close(), sub.Close()); err != nil {
		return err
	}
	// Rank 0 joins none.
	color := 0
	if me == 0 {
		color = -1
	}
	rest, err := c.Split(ctx, color, me)
	switch {
	case err != nil:
		return err
	case me == 0 && rest != nil:
		return fmt.Errorf("Split with a negative color returned a Comm of %d ranks", rest.Size())
	case me != 0 && (rest.Size() != n-1 || rest.Rank() != me-1):
		return fmt.Errorf("Split without rank 0: rank %d of %d, want %d of %d", rest.Rank(), rest.Size(), me-1, n-1)
	case me != 0:
		if err := rest.Barrier(ctx); err != nil {
			return err
		}
		return rest.Close()
	}
	return nil
}

// confConcurrent: two Comms of each rank (the group and its duplicate) run
// collectives at once from two goroutines, which the ranks enter in
// opposite orders: even ranks start the AllReduces first, odd ranks the
// AllToAllVs. A backend that ran one collective at a time per process
// would deadlock here.
func confConcurrent(ctx context.Context, c Comm) error {
	n, me := c.Size(), c.Rank()
	dup, err := c.Split(ctx, 0, me)
	if err != nil {
		return err
	}
	defer dup.Close()
	const rounds = 12
	late := func(first bool) {
		if first != (me%2 == 0) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	var errA, errB error
	var wg sync.WaitGroup
	wg.Go(func() {
		late(true)
		for i := range rounds {
			m := 1 << (2 * (i % 9)) // 1 to 64 Ki elements
			buf := intData(me+i, m)
			if errA = c.AllReduce(ctx, buf); errA != nil {
				return
			}
			if want := rankSum(func(r, m int) []float32 { return intData(r+i, m) }, n, m); !slices.Equal(buf, want) {
				errA = fmt.Errorf("concurrent AllReduce %d: %s", i, firstDiff(buf, want))
				return
			}
		}
	})
	wg.Go(func() {
		late(false)
		for i := range rounds {
			each := 1 << (2 * (i % 9)) // bytes to every rank
			send := make([]byte, n*each)
			for d := range n {
				for j := range each {
					send[d*each+j] = byte(me*31 + d*7 + j + i)
				}
			}
			counts := slices.Repeat([]int{each}, n)
			recv := make([]byte, n*each)
			if errB = dup.AllToAllV(ctx, send, counts, recv, counts); errB != nil {
				return
			}
			for s := range n {
				for j := range each {
					if recv[s*each+j] != byte(s*31+me*7+j+i) {
						errB = fmt.Errorf("concurrent AllToAllV %d: byte %d from rank %d differs", i, j, s)
						return
					}
				}
			}
		}
	})
	wg.Wait()
	return errors.Join(errA, errB)
}

// confNode: every rank is on exactly one node, numbered in order of their
// lowest rank, with local ranks in rank order.
func confNode(ctx context.Context, c Comm) error {
	nd, err := NodeOf(ctx, c)
	if err != nil {
		return err
	}
	all := make([]int64, 4*c.Size())
	if err := AllGatherOf(ctx, c, []int64{int64(nd.Index), int64(nd.Count), int64(nd.LocalRank), int64(nd.LocalSize)}, all); err != nil {
		return err
	}
	next := map[int64]int64{} // node -> next local rank
	nodes := int64(0)
	for q := range c.Size() {
		idx, count, lr, ls := all[4*q], all[4*q+1], all[4*q+2], all[4*q+3]
		if _, seen := next[idx]; !seen {
			if idx != nodes {
				return fmt.Errorf("NodeOf: rank %d is on node %d, want node %d (nodes by lowest rank)", q, idx, nodes)
			}
			nodes++
		}
		if count != all[1] || lr != next[idx] || lr >= ls {
			return fmt.Errorf("NodeOf: rank %d: %v", q, all[4*q:4*q+4])
		}
		next[idx]++
	}
	if nodes != all[1] {
		return fmt.Errorf("NodeOf: %d nodes seen, Count %d", nodes, all[1])
	}
	return nil
}

// confBroken: ranks whose context ends in a collective get ErrBroken, and
// the Comm fails at once afterwards instead of hanging. The last rank comes
// after the others gave up: the local backend tells it the group broke;
// under MPI it cannot know, and its collective completes against the
// others' abandoned ones. The parent Comm is unharmed.
func confBroken(ctx context.Context, c Comm) error {
	if c.Size() < 2 {
		return nil
	}
	sub, err := c.Split(ctx, 0, c.Rank())
	if err != nil {
		return err
	}
	if c.Rank() != c.Size()-1 {
		tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err := sub.Barrier(tctx)
		cancel()
		if !errors.Is(err, ErrBroken) {
			return fmt.Errorf("barrier without the last rank: %v, want ErrBroken", err)
		}
		if err := sub.AllReduce(ctx, make([]float32, 2)); !errors.Is(err, ErrBroken) {
			return fmt.Errorf("after the break: %v, want ErrBroken", err)
		}
	} else {
		time.Sleep(200 * time.Millisecond)
		if err := sub.Barrier(ctx); err != nil && !errors.Is(err, ErrBroken) {
			return fmt.Errorf("late barrier: %v, want nil or ErrBroken", err)
		}
	}
	sub.Close()
	return c.Barrier(ctx)
}

// confClosed: collectives after Close fail with ErrClosed; Close twice is
// harmless.
func confClosed(ctx context.Context, c Comm) error {
	sub, err := c.Split(ctx, 0, c.Rank())
	if err != nil {
		return err
	}
	if err := sub.Close(); err != nil {
		return err
	}
	if err := sub.Barrier(ctx); !errors.Is(err, ErrClosed) {
		return fmt.Errorf("Barrier after Close: %v, want ErrClosed", err)
	}
	if err := sub.AllReduce(ctx, make([]float32, 1)); !errors.Is(err, ErrClosed) {
		return fmt.Errorf("AllReduce after Close: %v, want ErrClosed", err)
	}
	return sub.Close()
}
