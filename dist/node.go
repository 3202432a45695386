package dist

import (
	"context"
	"fmt"
)

// Node is where a rank sits among the machines of its group: the ranks
// that share memory (one machine) form a node. Two-level collectives use
// it: Split(ctx, Index, Rank) gives the ranks of this node, and
// Split(ctx, LocalRank, Index) the ranks with this local rank, one per
// node.
type Node struct {
	Index     int // this rank's node, 0 <= Index < Count, nodes numbered in order of their lowest rank
	Count     int // nodes in the group
	LocalRank int // this rank's place among its node's ranks, in rank order
	LocalSize int // ranks on this rank's node
}

// sharedSplitter is a Comm that can tell which of its ranks share memory:
// splitShared returns the Comm of this rank's node, ranked in Rank order
// (MPI_Comm_split_type with MPI_COMM_TYPE_SHARED).
type sharedSplitter interface {
	splitShared(ctx context.Context) (Comm, error)
}

// NodeOf returns c's rank's node. It is a collective under MPI; the local
// backend's ranks, and those of any Comm that cannot tell, are all one
// node, and NodeOf does not communicate for them.
func NodeOf(ctx context.Context, c Comm) (Node, error) {
	s, ok := c.(sharedSplitter)
	if !ok {
		return Node{Index: 0, Count: 1, LocalRank: c.Rank(), LocalSize: c.Size()}, nil
	}
	shm, err := s.splitShared(ctx)
	if err != nil {
		return Node{}, fmt.Errorf("dist: NodeOf: %w", err)
	}
	defer shm.Close()
	// Each node's lowest rank names it; gather every rank's.
	lead := []int64{int64(c.Rank())}
	if err := BroadcastOf(ctx, shm, lead, 0); err != nil {
		return Node{}, fmt.Errorf("dist: NodeOf: %w", err)
	}
	leads := make([]int64, c.Size())
	if err := AllGatherOf(ctx, c, lead, leads); err != nil {
		return Node{}, fmt.Errorf("dist: NodeOf: %w", err)
	}
	n := Node{LocalRank: shm.Rank(), LocalSize: shm.Size()}
	for r, l := range leads {
		if int64(r) == l { // rank r leads its node
			n.Count++
			if l < lead[0] {
				n.Index++
			}
		}
	}
	return n, nil
}
