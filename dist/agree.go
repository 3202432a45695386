package dist

import "fmt"

// A backend whose ranks cannot read each other's arguments (MPI) checks
// that they agree by sending every rank a header before the data: the
// collective, its lengths and root, whether the sender's own arguments are
// valid, and, for AllToAllV, how many bytes it sends that rank. Since a
// rank sends every rank the same header but for that count, every rank
// reaches the same verdict on everything but the pairwise counts, and the
// group stays in step after a mismatch.

// opcode names a collective in a header.
type opcode int64

const (
	opAllReduce opcode = iota + 1
	opAllGather
	opReduceScatter
	opAllToAllV
	opBroadcast
	opBarrier
	opSplit
	opSplitShared
)

func (o opcode) String() string {
	switch o {
	case opAllReduce:
		return "AllReduce"
	case opAllGather:
		return "AllGather"
	case opReduceScatter:
		return "ReduceScatter"
	case opAllToAllV:
		return "AllToAllV"
	case opBroadcast:
		return "Broadcast"
	case opBarrier:
		return "Barrier"
	case opSplit:
		return "Split"
	case opSplitShared:
		return "NodeOf"
	}
	return fmt.Sprintf("opcode(%d)", int64(o))
}

// header is what a rank tells every rank about the collective it entered.
type header struct {
	op    opcode
	bad   bool  // the sender's arguments are invalid on their own
	n     int64 // elements (AllReduce, ReduceScatter) or bytes (AllGather, Broadcast) it passes
	root  int64 // Broadcast's root
	count int64 // AllToAllV: bytes the sender sends the receiver
}

// headerWords is a header's length on the wire, in int64s.
const headerWords = 5

// put writes h into w (headerWords).
func (h header) put(w []int64) {
	bad := int64(0)
	if h.bad {
		bad = 1
	}
	w[0], w[1], w[2], w[3], w[4] = int64(h.op), bad, h.n, h.root, h.count
}

// getHeader reads a header from w (headerWords).
func getHeader(w []int64) header {
	return header{op: opcode(w[0]), bad: w[1] != 0, n: w[2], root: w[3], count: w[4]}
}

// agree checks the headers got (got[q] from rank q, got[me] this rank's
// own) for the collective every rank must have entered alike: the same
// collective, valid arguments everywhere, and the same lengths and root
// where they must match. It returns an error wrapping ErrMismatch if not.
func agree(me int, got []header) error {
	h := got[me]
	for q, g := range got {
		if g.op != h.op {
			return fmt.Errorf("%w: rank %d called %v while rank %d called %v", ErrMismatch, me, h.op, q, g.op)
		}
	}
	for q, g := range got {
		if g.bad {
			return fmt.Errorf("%w: %v: rank %d's arguments are invalid", ErrMismatch, h.op, q)
		}
	}
	switch h.op {
	case opAllReduce, opAllGather, opReduceScatter, opBroadcast:
		for q, g := range got {
			if g.n != h.n {
				return fmt.Errorf("%w: %v: rank %d has %d elements, rank %d has %d", ErrMismatch, h.op, me, h.n, q, g.n)
			}
		}
	}
	if h.op == opBroadcast {
		for _, g := range got {
			if g.root != h.root || h.root < 0 || h.root >= int64(len(got)) {
				return fmt.Errorf("%w: Broadcast from root %d (ranks 0-%d)", ErrMismatch, h.root, len(got)-1)
			}
		}
	}
	return nil
}

// agreeCounts checks AllToAllV's pairwise counts on the receiving rank me:
// recvCounts[q] must be what rank q sends it (got[q].count). It returns the
// counts the senders use, and an error wrapping ErrMismatch if they differ
// from recvCounts.
func agreeCounts(me int, got []header, recvCounts []int) ([]int, error) {
	sent := make([]int, len(got))
	var err error
	for q, g := range got {
		sent[q] = int(g.count)
		if sent[q] != recvCounts[q] && err == nil {
			err = fmt.Errorf("%w: AllToAllV: rank %d sends %d bytes to rank %d, which expects %d", ErrMismatch, q, sent[q], me, recvCounts[q])
		}
	}
	return sent, err
}
