package moe

import "context"

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
