package model

import "context"

// DenseSource supplies a Net's dense weights one GradGroups group at a
// time, for ZeRO-3 sharding of the dense parameters over data-parallel
// ranks (train/zero.go): between uses a group's Params may hold no weights
// at all. Use is called just before group g computes: in Forward (back
// false) in the order L+1 (embedding), L, ..., 1 (layers 0..L-1), 0 (final
// norm and head); in Backward (back true) in the order 0, 1, ..., L+1.
// When it returns nil, the group's Params' W hold their whole weights (B
// their bf16 copies where SetBF16Products set them), and in Backward their
// G hold zeros: Backward accumulates the group's gradients there and then
// reports the group to GradsDone; the source reads them before the
// group's next Use. The previous group's Params are not touched after
// the call. An error ends the pass with it.
type DenseSource interface {
	Use(ctx context.Context, g int, back bool) error
}

// useDense asks n.Dense, when set, for group g's weights.
func (n *Net) useDense(ctx context.Context, g int, back bool) error {
	if n.Dense == nil {
		return nil
	}
	return n.Dense.Use(ctx, g, back)
}
