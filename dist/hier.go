package dist

import (
	"context"
	"errors"
	"fmt"
)

// Hier is a communicator whose AllToAllV is hierarchical (two-level), for
// ranks on several nodes joined by a link much slower than the links
// inside a node: first an exchange inside each node moves every row to the
// local rank that matches its destination's local rank, then an exchange
// between nodes among the ranks of the same local rank delivers it. Every
// row crosses between nodes once, as in a flat exchange, but each rank
// talks to N nodes' peers instead of W ranks, so the slow link carries
// N-1 larger messages per rank instead of W-P small ones (P ranks per
// node), and a rank's messages to one node travel together. Its result is
// exactly the flat AllToAllV's (rows in world-rank order); the other
// collectives are the world communicator's.
type Hier struct {
	Comm                // the world
	Node, Cross Comm    // this node's ranks; the ranks of this local rank on every node
	rankAt      [][]int // rankAt[node][local] = world rank
	buf1, buf2  []byte
	segs        []int64 // from local s, for node n': segs[s*N+n'] bytes
	mine        []int64
	// Per-call counts and offsets, kept to spare the dispatch allocations.
	so, ro, segAt, c1, r1, c2, r2, each []int
}

// NewHier groups c's ranks into nodes of perNode consecutive ranks (rank r
// on node r/perNode, local rank r%perNode: mpirun's default placement,
// or --ranks-per-node) and builds the node and cross communicators. A
// collective over c.
func NewHier(ctx context.Context, c Comm, perNode int) (*Hier, error) {
	W := c.Size()
	if perNode < 1 || W%perNode != 0 {
		return nil, fmt.Errorf("dist: %d ranks do not split into nodes of %d", W, perNode)
	}
	return NewHierNodes(ctx, c, c.Rank()/perNode, c.Rank()%perNode)
}

// NewHierNodes is NewHier with this rank's node and local rank given (for
// example from MPI's shared-memory split): every node must hold the same
// number of ranks, local ranks 0..P-1. A collective over c.
func NewHierNodes(ctx context.Context, c Comm, node, local int) (*Hier, error) {
	W := c.Size()
	me := []int64{int64(node), int64(local)}
	all := make([]int64, 2*W)
	if err := AllGatherOf(ctx, c, me, all); err != nil {
		return nil, fmt.Errorf("dist: hierarchical communicator: %w", err)
	}
	N, P := 0, 0
	for r := range W {
		N, P = max(N, int(all[2*r])+1), max(P, int(all[2*r+1])+1)
	}
	if N*P != W {
		return nil, fmt.Errorf("%w: hierarchical communicator: %d ranks are not %d nodes of %d", ErrMismatch, W, N, P)
	}
	h := &Hier{Comm: c, rankAt: make([][]int, N)}
	for n := range N {
		h.rankAt[n] = make([]int, P)
		for l := range P {
			h.rankAt[n][l] = -1
		}
	}
	for r := range W {
		n, l := int(all[2*r]), int(all[2*r+1])
		if n < 0 || l < 0 || h.rankAt[n][l] >= 0 {
			return nil, fmt.Errorf("%w: hierarchical communicator: two ranks at node %d local rank %d", ErrMismatch, n, l)
		}
		h.rankAt[n][l] = r
	}
	var err error
	if h.Node, err = c.Split(ctx, node, local); err != nil {
		return nil, fmt.Errorf("dist: node communicator: %w", err)
	}
	if h.Cross, err = c.Split(ctx, local, node); err != nil {
		return nil, fmt.Errorf("dist: cross-node communicator: %w", err)
	}
	return h, nil
}

// Nodes returns the number of nodes and of ranks per node.
func (h *Hier) Nodes() (nodes, perNode int) { return len(h.rankAt), len(h.rankAt[0]) }

// RankAt returns the world rank of local rank local on node node.
func (h *Hier) RankAt(node, local int) int { return h.rankAt[node][local] }

// AllToAllV is Comm.AllToAllV over the world, done in two levels.
func (h *Hier) AllToAllV(ctx context.Context, send []byte, sendCounts []int, recv []byte, recvCounts []int) error {
	W := h.Size()
	if err := checkCounts(W, send, sendCounts, recv, recvCounts); err != nil {
		return err
	}
	N, P := h.Nodes()
	off := func(o, counts []int) []int {
		o = resize(o, W+1)
		o[0] = 0
		for r := range W {
			o[r+1] = o[r] + counts[r]
		}
		return o
	}
	h.so, h.ro = off(h.so, sendCounts), off(h.ro, recvCounts)
	so, ro := h.so, h.ro

	// Inside the node: to local peer l, my rows for (n', l), n' ascending,
	// and their sizes.
	h.mine, h.segs = resize(h.mine, N*P), resize(h.segs, N*P)
	h.c1 = resize(h.c1, P)
	c1 := h.c1
	clear(c1)
	total := 0
	for l := range P {
		for n := range N {
			b := sendCounts[h.rankAt[n][l]]
			h.mine[l*N+n] = int64(b)
			c1[l] += b
		}
		total += c1[l]
	}
	h.buf1 = resize(h.buf1, total)
	at := 0
	for l := range P {
		for n := range N {
			r := h.rankAt[n][l]
			at += copy(h.buf1[at:], send[so[r]:so[r+1]])
		}
	}
	h.each = resize(h.each, P)
	each := h.each
	for l := range each {
		each[l] = N
	}
	if err := AllToAllVOf(ctx, h.Node, h.mine, each, h.segs, each); err != nil {
		return fmt.Errorf("dist: hierarchical all-to-all: sizes: %w", err)
	}
	h.r1 = resize(h.r1, P)
	r1 := h.r1
	clear(r1)
	in1 := 0
	for s := range P {
		for n := range N {
			r1[s] += int(h.segs[s*N+n])
		}
		in1 += r1[s]
	}
	h.buf2 = resize(h.buf2, in1)
	if err := h.Node.AllToAllV(ctx, h.buf1[:total], c1, h.buf2, r1); err != nil {
		return fmt.Errorf("dist: hierarchical all-to-all inside the node: %w", err)
	}

	// Between nodes: to node n', every local source's rows for (n', me),
	// sources ascending.
	h.segAt = resize(h.segAt, P*N)
	segAt := h.segAt // offset in buf2 of segs[s*N+n]
	at = 0
	for s := range P {
		for n := range N {
			segAt[s*N+n] = at
			at += int(h.segs[s*N+n])
		}
	}
	h.buf1 = resize(h.buf1, in1)
	h.c2 = resize(h.c2, N)
	c2 := h.c2
	clear(c2)
	at = 0
	for n := range N {
		for s := range P {
			k := s*N + n
			at += copy(h.buf1[at:], h.buf2[segAt[k]:segAt[k]+int(h.segs[k])])
			c2[n] += int(h.segs[k])
		}
	}
	h.r2 = resize(h.r2, N)
	r2 := h.r2
	clear(r2)
	in2 := 0
	for n := range N {
		for s := range P {
			r2[n] += recvCounts[h.rankAt[n][s]]
		}
		in2 += r2[n]
	}
	h.buf2 = resize(h.buf2, in2)
	if err := h.Cross.AllToAllV(ctx, h.buf1[:in1], c2, h.buf2, r2); err != nil {
		return fmt.Errorf("dist: hierarchical all-to-all between nodes: %w", err)
	}
	// Rows arrive by source node, then source local rank: put each
	// source's rows at its world rank's place.
	at = 0
	for n := range N {
		for s := range P {
			r := h.rankAt[n][s]
			at += copy(recv[ro[r]:ro[r+1]], h.buf2[at:at+recvCounts[r]])
		}
	}
	return nil
}

// Close closes the node and cross communicators (not the world).
func (h *Hier) Close() error {
	return errors.Join(h.Node.Close(), h.Cross.Close())
}

// resize returns s with length n, reallocated only when it must grow.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
