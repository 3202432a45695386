package model

import (
	"context"
	"fmt"
	"time"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/moe"
)

// SetExpertParallel shards every MoE layer's experts over c's ranks (expert
// parallelism): rank r computes experts [r*E/W, (r+1)*E/W) for the tokens
// of every rank, which reach them through a moe.EP, and the auxiliary
// losses use the statistics of every rank's tokens (summed over c), so
// they are those of the global batch. Forward then returns the global
// batch's loss on every rank, and Backward (with the same scale on every
// rank) leaves each rank's share of the global batch's gradient: the dense
// parameters' shares sum, over the ranks, to the gradient; each expert's
// is whole on its owner. A Net from NewNet holds every Param (the same
// values on every rank after the same Init), but the MoE layers read and
// write only the local experts' weights and gradients: the others'
// gradients stay zero on this rank; one from NewNetShard holds only the
// local experts. What the
// trainer adds on top (data-parallel reduction of the dense gradients,
// the global gradient norm, each expert updated by its owner) is in
// ExpertParam. Call once, before the first Forward (SetBF16Products may
// come before or after).
func (n *Net) SetExpertParallel(c dist.Comm) error {
	if n.comm != nil {
		return fmt.Errorf("model: expert parallelism is already set")
	}
	E, W := n.Cfg.E, c.Size()
	if E%W != 0 {
		return fmt.Errorf("%w: %d experts over %d ranks: the experts must divide evenly", ErrConfig, E, W)
	}
	if n.Sharded() && (n.heldFirst != c.Rank()*(E/W) || n.heldN != E/W) {
		return fmt.Errorf("%w: this Net holds experts [%d, %d), rank %d of %d owns [%d, %d)", ErrConfig,
			n.heldFirst, n.heldFirst+n.heldN, c.Rank(), W, c.Rank()*(E/W), (c.Rank()+1)*(E/W))
	}
	n.comm = c
	n.epFirst, n.epN = c.Rank()*(E/W), E/W
	for l := range n.layers {
		ly := &n.layers[l]
		if ly.experts == nil {
			continue
		}
		ep, err := moe.NewEP(c, E)
		if err != nil {
			return err
		}
		ly.experts.Exchange = ep
		n.bindExperts(ly)
	}
	return nil
}

// bindExperts points a MoE layer's moe.Layer weights and gradients at the
// local experts' part of the fused Params: every expert, or the rank's
// share under expert parallelism.
func (n *Net) bindExperts(ly *netLayer) {
	c := n.Cfg
	first, cnt := n.heldFirst, n.heldN
	if n.comm != nil {
		first, cnt = n.epFirst, n.epN
	}
	first -= n.heldFirst // within the held experts
	a13, b13 := first*2*c.ExpertFFN*c.D, (first+cnt)*2*c.ExpertFFN*c.D
	a2, b2 := first*c.D*c.ExpertFFN, (first+cnt)*c.D*c.ExpertFFN
	x := ly.experts
	if ly.w13.W == nil { // kept outside, not bound yet (BindExpertBuffers)
		x.W13, x.W2, x.W13b, x.W2b, ly.expertsG = nil, nil, nil, nil, moe.Grads{}
		return
	}
	x.W13, x.W2 = ly.w13.W[a13:b13], ly.w2.W[a2:b2]
	x.W13b, x.W2b = nil, nil
	if ly.w13.B != nil {
		x.W13b, x.W2b = ly.w13.B[a13:b13], ly.w2.B[a2:b2]
	}
	ly.expertsG = moe.Grads{W13: ly.w13.G[a13:b13], W2: ly.w2.G[a2:b2]}
}

// CommBusy returns the time the passes so far spent communicating under
// expert parallelism (the expert exchanges and the loss sums), which the
// passes wait for; zero without it.
func (n *Net) CommBusy() time.Duration {
	d := n.lossBusy
	for l := range n.layers {
		if x := n.layers[l].experts; x != nil {
			if b, ok := x.Exchange.(interface{ Busy() time.Duration }); ok {
				d += b.Busy()
			}
		}
	}
	return d
}

// ExpertParam reports whether p is a routed expert's weight and, if so,
// whether this rank owns it (always, without expert parallelism). Dense
// parameters (everything else: attention, norms, embeddings, routers,
// pre-gates, shared experts) are replicated on every rank.
//
// A multi-task model's task experts count as experts too: local where this
// rank trains their task (SetTasksHeld), replicated within that task's
// ranks.
func (n *Net) ExpertParam(p *Param) (expert, local bool) {
	if p == n.embed && n.embedPart != nil {
		return true, true // this rank's columns (SetEmbedPartition)
	}
	if k := n.TaskParam(p); k >= 0 {
		return true, n.taskHeld[k]
	}
	e, ok := n.expertOf[p]
	if !ok {
		return false, false
	}
	return true, n.comm == nil || (e >= n.epFirst && e < n.epFirst+n.epN)
}

// reduceLoss sums, over the ranks, the cross-entropy sum and target count
// of loss and the auxiliary-loss statistics, so that under expert
// parallelism every rank's Forward returns the global batch's loss and its
// Backward the global batch's gradients (each rank's share of them). The
// sums are float32 (rounding ~1e-7 relative against the single-process
// float64 sums).
func (n *Net) reduceLoss(ctx context.Context, loss *Loss) error {
	defer func(t time.Time) { n.lossBusy += time.Since(t) }(time.Now())
	s := n.stats
	buf := n.lossBuf[:0]
	for _, v := range s.Count {
		buf = append(buf, float32(v))
	}
	for _, v := range s.ProbSum {
		buf = append(buf, float32(v))
	}
	buf = append(buf, float32(s.N), float32(s.LSE2), float32(loss.CE), float32(loss.Tokens))
	n.lossBuf = buf
	if err := n.comm.AllReduce(ctx, buf); err != nil {
		return fmt.Errorf("model: losses over the ranks: %w", err)
	}
	E := s.E
	for e := range E {
		s.Count[e], s.ProbSum[e] = float64(buf[e]), float64(buf[E+e])
	}
	s.N, s.LSE2 = int(buf[2*E]), float64(buf[2*E+1])
	loss.CE, loss.Tokens = float64(buf[2*E+2]), int(buf[2*E+3])
	return nil
}
