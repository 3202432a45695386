package moe

import (
	"context"
	"math"
)

// Role tells an Exchange which of a layer's two dispatches a Send is.
type Role uint8

const (
	Forward  Role = iota // the routed inputs
	Backward             // the output gradients
	roles
)

// Exchange carries a MoE layer's routed rows between the ranks that hold
// the tokens and the ranks that hold the experts (expert parallelism); the
// layer computes only where the experts are. A nil Exchange means every
// expert is local: rows stay where they are, with no copy.
//
// Rows travel in the plan's order (grouped by global expert, Plan.Offsets).
// Send delivers them to the experts' owners; the receiving rank gets its
// local experts' rows grouped by local expert, with offsets (El+1). Return
// is Send's inverse: one row per received row goes back to its sender, in
// the sender's plan order. The same Plan is given to every call of a layer
// pass (forward activations, then backward gradients), so an
// implementation may cache the split it computed for it.
type Exchange interface {
	// Send delivers rows (R, D), in p's order, to the owners of their
	// experts and returns this rank's received rows (Rl, D) and the local
	// expert offsets (El+1). The returned slices are owned by the Exchange
	// and valid until the next Send with the same role: the forward
	// dispatch's received rows are read again in backward, after the
	// backward dispatch.
	Send(ctx context.Context, role Role, rows []float32, p *Plan, D int) (recv []float32, offs []int, err error)
	// Return sends recv (Rl, D) back, the inverse of the last Send with p,
	// into rows (R, D) in p's order.
	Return(ctx context.Context, rows, recv []float32, p *Plan, D int) error
}

// CapacityLimiter is implemented by an Exchange whose ranks each route a
// share of one batch (expert parallelism with data-parallel batches), so
// that capacity-based token dropping gives what one process routing the
// whole batch would: each expert takes at most ceil(cf*T*K/E) rows, T
// summed over the ranks, filled in rank order (the global batch is rank
// 0's tokens, then rank 1's, ...), as FastMoE's limit-by-capacity does.
type CapacityLimiter interface {
	// Limits is a collective over the ranks. want[e] is this rank's
	// assignments to expert e before dropping, T its tokens; it fills
	// limits[e] with how many of them expert e takes.
	Limits(ctx context.Context, want []int, T, K int, cf float64, limits []int) error
}

// Capacity is the per-expert capacity of T tokens routed top-K over E
// experts with capacity factor cf > 0: ceil(cf*T*K/E).
func Capacity(cf float64, T, K, E int) int {
	return int(math.Ceil(cf * float64(T*K) / float64(E)))
}
