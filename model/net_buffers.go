package model

import "fmt"

// ExpertBuffers are one MoE layer's fused expert buffers: W13 (H, 2F, D)
// and W2 (H, D, F) for the H experts the Net holds, their gradients, and
// their bf16 copies (nil without SetBF16Products).
type ExpertBuffers struct {
	W13, G13, W2, G2 []float32
	B13, B2          []uint16
}

// ExpertBuffersOf returns MoE layer l's expert buffers (nil while kept
// outside and not bound).
func (n *Net) ExpertBuffersOf(l int) ExpertBuffers {
	ly := &n.layers[l]
	if ly.experts == nil {
		panic(fmt.Sprintf("model: layer %d is not a MoE layer", l))
	}
	return ExpertBuffers{W13: ly.w13.W, G13: ly.w13.G, W2: ly.w2.W, G2: ly.w2.G, B13: ly.w13.B, B2: ly.w2.B}
}

// ExpertBufferLens returns the lengths of a MoE layer's expert buffers:
// the fused weights (and gradients) of the experts the Net holds, and
// whether it keeps bf16 copies (SetBF16Products).
func (n *Net) ExpertBufferLens() (w13, w2 int, bf16 bool) {
	c := n.Cfg
	return n.heldN * 2 * c.ExpertFFN * c.D, n.heldN * c.D * c.ExpertFFN, n.bf16
}

// BindExpertBuffers points MoE layer l and its per-expert Params at b (the
// same lengths as the layer's, B13 and B2 set exactly when the Net keeps
// bf16 copies) without copying: an owner that keeps expert weights
// elsewhere between uses (train's hierarchical storage) gives several
// layers shared buffers and refills them before each layer computes.
func (n *Net) BindExpertBuffers(l int, b ExpertBuffers) error {
	ly := &n.layers[l]
	if ly.experts == nil {
		return fmt.Errorf("%w: layer %d is not a MoE layer", ErrConfig, l)
	}
	w13, w2, bf16 := n.ExpertBufferLens()
	if len(b.W13) != w13 || len(b.G13) != w13 || len(b.W2) != w2 || len(b.G2) != w2 ||
		bf16 != (b.B13 != nil) || bf16 != (b.B2 != nil) || b.B13 != nil && (len(b.B13) != w13 || len(b.B2) != w2) {
		return fmt.Errorf("%w: layer %d: expert buffers of the wrong sizes", ErrConfig, l)
	}
	n.bind(l, b)
	return nil
}

// UnbindExpertBuffers leaves MoE layer l without expert buffers (an
// owner's, freed): its expert Params' W, G and B become nil, and the layer
// cannot compute until bound again.
func (n *Net) UnbindExpertBuffers(l int) {
	if n.layers[l].experts != nil {
		n.bind(l, ExpertBuffers{})
	}
}

// bind points layer l's fused Params, its moe.Layer and its per-expert
// Params at b (nil slices: none).
func (n *Net) bind(l int, b ExpertBuffers) {
	ly := &n.layers[l]
	ly.w13.W, ly.w13.G, ly.w13.B = b.W13, b.G13, b.B13
	ly.w2.W, ly.w2.G, ly.w2.B = b.W2, b.G2, b.B2
	n.bindExperts(ly)
	for e := n.heldFirst; e < n.heldFirst+n.heldN; e++ {
		for _, v := range n.expertViews(l, e) {
			p := n.byName[v.name]
			FD := n.Cfg.ExpertFFN * n.Cfg.D
			p.W, p.G, p.B = nil, nil, nil
			if v.f.W != nil {
				p.W, p.G = v.f.W[v.off:v.off+FD], v.f.G[v.off:v.off+FD]
			}
			if v.f.B != nil {
				p.B = v.f.B[v.off : v.off+FD]
			}
		}
	}
}

// RoutedExpert reports whether p is a routed expert's tensor (held by this
// Net), and which expert.
func (n *Net) RoutedExpert(p *Param) (e int, ok bool) {
	e, ok = n.expertOf[p]
	return e, ok
}

// LocalExperts returns the routed experts this Net's MoE layers compute:
// every expert, or the rank's share under expert parallelism.
func (n *Net) LocalExperts() (first, count int) {
	if n.comm != nil {
		return n.epFirst, n.epN
	}
	return n.heldFirst, n.heldN
}
