package dist

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// NewLocal returns the n ranks of an in-process communicator: each is
// meant for its own goroutine, and they exchange through shared memory.
// A collective posts this rank's buffers, waits for every rank to post,
// does this rank's part reading the others' buffers, and waits again so
// no buffer changes while another rank reads it.
func NewLocal(n int) ([]Comm, error) {
	if n < 1 {
		return nil, fmt.Errorf("dist: NewLocal(%d): want at least one rank", n)
	}
	g := newGroup(n)
	cs := make([]Comm, n)
	for r := range n {
		cs[r] = &local{g: g, rank: r}
	}
	return cs, nil
}

// newGroup returns the shared state of n ranks.
func newGroup(n int) *group {
	g := &group{n: n, slots: make([]post, n)}
	g.cond.L = &g.mu
	return g
}

// group is the ranks' shared state.
type group struct {
	n       int
	mu      sync.Mutex
	cond    sync.Cond // signalled when a barrier completes or the group breaks
	arrived int       // ranks waiting in the current barrier
	gen     uint64    // barriers completed
	broken  bool
	slots   []post    // each rank's arguments to the current collective
	scratch []float32 // AllReduce's sums, shared
}

// post is one rank's arguments to a collective.
type post struct {
	op     string
	f32    []float32
	b      []byte
	counts []int
	root   int
	key    int    // Split's key (its color is root)
	sub    *group // Split: the group its color's first rank made
}

// local is one rank of a group.
type local struct {
	g      *group
	rank   int
	closed bool
}

func (c *local) Rank() int { return c.rank }
func (c *local) Size() int { return c.g.n }

func (c *local) Close() error {
	c.closed = true
	return nil
}

// wait is a barrier of the group. A rank whose ctx ends while it waits
// breaks the group.
func (g *group) wait(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.broken {
		return ErrBroken
	}
	gen := g.gen
	if g.arrived++; g.arrived == g.n {
		g.arrived = 0
		g.gen++
		g.cond.Broadcast()
		return nil
	}
	stop := context.AfterFunc(ctx, func() {
		g.mu.Lock()
		if g.gen == gen {
			g.broken = true
			g.cond.Broadcast()
		}
		g.mu.Unlock()
	})
	for g.gen == gen && !g.broken {
		g.cond.Wait()
	}
	stop()
	if g.gen == gen { // broken before this barrier completed
		if err := ctx.Err(); err != nil {
			return errors.Join(ErrBroken, err)
		}
		return ErrBroken
	}
	return nil
}

// begin posts p as this rank's arguments and waits for every rank's; it
// checks that they all entered the same collective.
func (c *local) begin(ctx context.Context, p post) error {
	if c.closed {
		return ErrClosed
	}
	g := c.g
	g.mu.Lock()
	g.slots[c.rank] = p
	if p.op == "allreduce" && len(g.scratch) < len(p.f32) {
		g.scratch = make([]float32, len(p.f32))
	}
	g.mu.Unlock()
	if err := g.wait(ctx); err != nil {
		return err
	}
	for q := range g.n {
		if g.slots[q].op != p.op {
			// Every rank sees the same posts: all fail alike, after the
			// closing barrier, so the group stays in step.
			return c.end(ctx, fmt.Errorf("%w: rank %d called %s while rank %d called %s", ErrMismatch, c.rank, p.op, q, g.slots[q].op))
		}
	}
	return nil
}

// end is the closing barrier of a collective: no rank's buffers are read
// after it. It returns err, or the barrier's error.
func (c *local) end(ctx context.Context, err error) error {
	if werr := c.g.wait(ctx); werr != nil {
		return errors.Join(err, werr)
	}
	return err
}

// invalid is a collective op whose arguments on this rank are invalid
// (err): the others wait for this rank's post, so it posts, and every rank
// fails since the ops differ.
func (c *local) invalid(ctx context.Context, op string, err error) error {
	if berr := c.begin(ctx, post{op: op + "-invalid"}); berr != nil {
		return errors.Join(err, berr)
	}
	return c.end(ctx, err)
}

// sameLen checks that every rank posted as many elements as this one.
func (c *local) sameLen(what string, n func(p post) int) error {
	for q := range c.g.n {
		if a, b := n(c.g.slots[c.rank]), n(c.g.slots[q]); a != b {
			return fmt.Errorf("%w: %s: rank %d has %d elements, rank %d has %d", ErrMismatch, what, c.rank, a, q, b)
		}
	}
	return nil
}

func (c *local) AllReduce(ctx context.Context, buf []float32) error {
	if err := c.begin(ctx, post{op: "allreduce", f32: buf}); err != nil {
		return err
	}
	g := c.g
	if err := c.sameLen("AllReduce", func(p post) int { return len(p.f32) }); err != nil {
		return c.end(ctx, err)
	}
	// Each rank sums its chunk over the ranks, in rank order, into the
	// shared scratch; then every rank copies the whole sum.
	n := len(buf)
	lo, hi := c.rank*n/g.n, (c.rank+1)*n/g.n
	sum := g.scratch[lo:hi]
	copy(sum, g.slots[0].f32[lo:hi])
	for q := 1; q < g.n; q++ {
		for i, v := range g.slots[q].f32[lo:hi] {
			sum[i] += v
		}
	}
	if err := g.wait(ctx); err != nil {
		return err
	}
	copy(buf, g.scratch[:n])
	return c.end(ctx, nil)
}

func (c *local) AllGather(ctx context.Context, send, recv []byte) error {
	g := c.g
	if len(recv) < g.n*len(send) {
		return c.invalid(ctx, "allgather", fmt.Errorf("%w: AllGather of %d bytes from %d ranks into %d", ErrMismatch, len(send), g.n, len(recv)))
	}
	if err := c.begin(ctx, post{op: "allgather", b: send}); err != nil {
		return err
	}
	err := c.sameLen("AllGather", func(p post) int { return len(p.b) })
	if err == nil {
		n := len(send)
		for q := range g.n {
			copy(recv[q*n:(q+1)*n], g.slots[q].b)
		}
	}
	return c.end(ctx, err)
}

func (c *local) ReduceScatter(ctx context.Context, send, recv []float32) error {
	g := c.g
	n := len(send) / g.n
	if len(send)%g.n != 0 || len(recv) < n {
		return c.invalid(ctx, "reducescatter", fmt.Errorf("%w: ReduceScatter of %d elements over %d ranks into %d", ErrMismatch, len(send), g.n, len(recv)))
	}
	if err := c.begin(ctx, post{op: "reducescatter", f32: send}); err != nil {
		return err
	}
	err := c.sameLen("ReduceScatter", func(p post) int { return len(p.f32) })
	if err == nil {
		lo := c.rank * n
		copy(recv[:n], g.slots[0].f32[lo:lo+n])
		for q := 1; q < g.n; q++ {
			for i, v := range g.slots[q].f32[lo : lo+n] {
				recv[i] += v
			}
		}
	}
	return c.end(ctx, err)
}

func (c *local) AllToAllV(ctx context.Context, send []byte, sendCounts []int, recv []byte, recvCounts []int) error {
	if err := checkCounts(c.g.n, send, sendCounts, recv, recvCounts); err != nil {
		return c.invalid(ctx, "alltoallv", err)
	}
	if err := c.begin(ctx, post{op: "alltoallv", b: send, counts: sendCounts}); err != nil {
		return err
	}
	g := c.g
	var err error
	off := 0
	for q := range g.n {
		from := g.slots[q]
		if from.counts[c.rank] != recvCounts[q] {
			err = fmt.Errorf("%w: AllToAllV: rank %d sends %d bytes to rank %d, which expects %d", ErrMismatch, q, from.counts[c.rank], c.rank, recvCounts[q])
			break
		}
		at := 0
		for r := range c.rank {
			at += from.counts[r]
		}
		off += copy(recv[off:off+recvCounts[q]], from.b[at:at+recvCounts[q]])
	}
	return c.end(ctx, err)
}

func (c *local) Broadcast(ctx context.Context, buf []byte, root int) error {
	if err := c.begin(ctx, post{op: "broadcast", b: buf, root: root}); err != nil {
		return err
	}
	g := c.g
	var err error
	if root < 0 || root >= g.n || slices.ContainsFunc(g.slots, func(p post) bool { return p.root != root }) {
		err = fmt.Errorf("%w: Broadcast from root %d (ranks 0-%d)", ErrMismatch, root, g.n-1)
	} else if err = c.sameLen("Broadcast", func(p post) int { return len(p.b) }); err == nil && c.rank != root {
		copy(buf, g.slots[root].b)
	}
	return c.end(ctx, err)
}

func (c *local) Barrier(ctx context.Context) error {
	if c.closed {
		return ErrClosed
	}
	return c.g.wait(ctx)
}

func (c *local) Split(ctx context.Context, color, key int) (Comm, error) {
	if err := c.begin(ctx, post{op: "split", root: color, key: key}); err != nil {
		return nil, err
	}
	g := c.g
	// This color's ranks in their new order, (key, old rank); the first
	// makes the new group and posts it for the others.
	var members []int
	if color >= 0 {
		for q := range g.n {
			if g.slots[q].root == color {
				members = append(members, q)
			}
		}
		slices.SortStableFunc(members, func(a, b int) int { return cmp.Compare(g.slots[a].key, g.slots[b].key) })
		if members[0] == c.rank {
			g.mu.Lock()
			g.slots[c.rank].sub = newGroup(len(members))
			g.mu.Unlock()
		}
	}
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	var sub Comm
	if color >= 0 {
		sub = &local{g: g.slots[members[0]].sub, rank: slices.Index(members, c.rank)}
	}
	if err := c.end(ctx, nil); err != nil {
		return nil, err
	}
	return sub, nil
}
