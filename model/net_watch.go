package model

import (
	"context"

	"github.com/moesys/moesys/moe"
)

// ExpertWatch is told, during Forward, which routed experts each MoE
// layer is about to use, so an owner keeping expert state outside the Net
// (train's hierarchical storage) can make those experts' weights current
// before they compute and fetch the next layer's state while this one
// computes. Need blocks; Hint never does.
type ExpertWatch interface {
	// Need is called once layer l is routed, before its experts compute:
	// idsTK (T, K) are the chosen experts (dropped assignments included),
	// valid during the call. An error fails Forward.
	Need(ctx context.Context, l int, idsTK []int32) error
	// Hint gives MoE layer l's exact routing ahead of time: a pre-gate of
	// an earlier block chose it (pre-gated models), before that block's
	// own Need.
	Hint(l int, idsTK []int32)
	// NeedGrad is called in Backward before MoE layer l's experts compute
	// their gradients: the experts its Forward used need their weights
	// (and the gradients accumulated so far) in the Net again.
	NeedGrad(ctx context.Context, l int) error
	// Done is called once MoE layer l's experts have finished Forward
	// (backward false) or Backward (true: their weight gradients are
	// complete): the owner may take the weights (and gradients) away
	// until the next Need or NeedGrad of l.
	Done(ctx context.Context, l int, backward bool) error
}

// watchExperts routes layer l's logits (and, with a pre-gate, its
// target's) the way moe.Layer will, and tells n.Watch.
func (n *Net) watchExperts(ctx context.Context, l, N int) error {
	c, ly := n.Cfg, &n.layers[l]
	r := moe.Router{K: c.K, Normalize: c.NormTopK}
	if ly.pregate != nil {
		t := c.PregateTarget(l)
		n.Watch.Hint(t, r.Route(n.acts.route[t][:N*c.E], N, c.E).IDsTK)
	}
	return n.Watch.Need(ctx, l, r.Route(n.acts.route[l][:N*c.E], N, c.E).IDsTK)
}
