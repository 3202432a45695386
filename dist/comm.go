package dist

import (
	"context"
	"errors"
	"fmt"
	"unsafe"
)

// Comm is one rank's end of a communicator. Every method is a collective:
// all Size ranks call it, in the same order, with matching arguments, and
// it returns when this rank's part is done. A Comm is used by one goroutine
// at a time; different Comms of one rank (a parent and the Comms Split
// made from it) may run collectives at the same time from different
// goroutines.
type Comm interface {
	// Rank is this rank's index, 0 <= Rank < Size.
	Rank() int
	// Size is the number of ranks.
	Size() int
	// AllReduce replaces buf on every rank with the elementwise sum of
	// every rank's buf (the same length everywhere). The local backend
	// adds in rank order; MPI in an order of its own (see InitMPI).
	AllReduce(ctx context.Context, buf []float32) error
	// AllGather fills recv (Size x len(send) bytes) with every rank's send,
	// in rank order. send and recv must not overlap.
	AllGather(ctx context.Context, send, recv []byte) error
	// ReduceScatter sums send (Size x n elements, the same length
	// everywhere) over the ranks and leaves in recv (n) this rank's part:
	// recv[i] = sum over ranks q of q's send[Rank*n+i]. send and recv must
	// not overlap.
	ReduceScatter(ctx context.Context, send, recv []float32) error
	// AllToAllV sends sendCounts[r] bytes to rank r, taken from send in
	// rank order, and receives recvCounts[r] bytes from rank r into recv,
	// in rank order. Counts must agree pairwise: this rank's recvCounts[r]
	// is rank r's sendCounts[Rank]; a rank whose recvCounts disagree gets
	// ErrMismatch (the others do not). send and recv must not overlap.
	AllToAllV(ctx context.Context, send []byte, sendCounts []int, recv []byte, recvCounts []int) error
	// Broadcast copies root's buf into every rank's buf (the same length
	// everywhere).
	Broadcast(ctx context.Context, buf []byte, root int) error
	// Barrier returns once every rank has entered it.
	Barrier(ctx context.Context) error
	// Split divides the ranks by color, as MPI_Comm_split does: the ranks
	// that pass the same color form a new Comm, ranked by (key, Rank). A
	// rank with a negative color joins none and gets a nil Comm and nil
	// error. The new Comm is independent of this one: its collectives may
	// run while this Comm's run on another goroutine. Split with one color
	// and key Rank duplicates the Comm. Close the new Comm when done.
	Split(ctx context.Context, color, key int) (Comm, error)
	// Close releases this rank's resources; the group's other ranks must
	// close theirs too. Collectives after Close fail with ErrClosed.
	Close() error
}

var (
	// ErrBroken is returned by the collectives of a group one of whose
	// ranks left a collective early (its context ended): the group's
	// ranks no longer agree on where they are, so none can go on. The
	// local backend returns it on every rank at once; under MPI the ranks
	// still waiting cannot learn of it and wait until their own contexts
	// end (see InitMPI).
	ErrBroken = errors.New("dist: communicator broken: a rank left a collective")
	// ErrClosed is returned by collectives on a closed Comm.
	ErrClosed = errors.New("dist: communicator closed")
	// ErrMismatch is returned when the ranks' arguments to a collective
	// disagree (lengths, counts, root).
	ErrMismatch = errors.New("dist: ranks disagree on a collective's arguments")
)

// asBytes views s as bytes (no copy).
func asBytes[T any](s []T) []byte {
	if len(s) == 0 {
		return nil
	}
	var z T
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(z)))
}

// scaled returns counts in elements of size bytes as byte counts.
func scaled(counts []int, size int) []int {
	b := make([]int, len(counts))
	for i, c := range counts {
		b[i] = c * size
	}
	return b
}

// AllToAllVOf is AllToAllV over typed elements: counts are in elements.
func AllToAllVOf[T any](ctx context.Context, c Comm, send []T, sendCounts []int, recv []T, recvCounts []int) error {
	var z T
	size := int(unsafe.Sizeof(z))
	return c.AllToAllV(ctx, asBytes(send), scaled(sendCounts, size), asBytes(recv), scaled(recvCounts, size))
}

// AllGatherOf is AllGather over typed elements.
func AllGatherOf[T any](ctx context.Context, c Comm, send, recv []T) error {
	return c.AllGather(ctx, asBytes(send), asBytes(recv))
}

// BroadcastOf is Broadcast over typed elements.
func BroadcastOf[T any](ctx context.Context, c Comm, buf []T, root int) error {
	return c.Broadcast(ctx, asBytes(buf), root)
}

// checkCounts checks a rank's AllToAllV arguments against its buffers.
func checkCounts(size int, send []byte, sendCounts []int, recv []byte, recvCounts []int) error {
	if len(sendCounts) != size || len(recvCounts) != size {
		return fmt.Errorf("%w: AllToAllV with %d send and %d receive counts for %d ranks", ErrMismatch, len(sendCounts), len(recvCounts), size)
	}
	ns, nr := 0, 0
	for r := range size {
		if sendCounts[r] < 0 || recvCounts[r] < 0 {
			return fmt.Errorf("%w: AllToAllV: negative count for rank %d", ErrMismatch, r)
		}
		ns += sendCounts[r]
		nr += recvCounts[r]
	}
	if ns > len(send) || nr > len(recv) {
		return fmt.Errorf("%w: AllToAllV sends %d bytes from %d, receives %d into %d", ErrMismatch, ns, len(send), nr, len(recv))
	}
	return nil
}
