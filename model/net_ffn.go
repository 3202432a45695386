package model

import (
	"context"
	"fmt"
	"math"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/moe"
)

// ffnActs is what the FFN half of a block keeps for Backward.
type ffnActs struct {
	rstd []float32 // (N) of the post-attention norm
	h    []float32 // (N, D) normed input
	mlp  mlpActs   // dense FFN, or the shared expert
	gx   []float32 // (N, D) router input h*noise (jitter), else nil (use h)
	moe  moe.Activations
	sg   []float32 // (N) sigmoid of the shared expert gate
	sOut []float32 // (N, D) shared expert output before gating
}

// mlpActs holds a SwiGLU FFN's activations.
type mlpActs struct {
	g, u, a []float32 // (N, F) gate, up, silu(g)*u
}

// forward computes y (N, D) = beta*y + down(silu(h W1^T) * (h W3^T)).
func (m *swiglu) forward(y, h []float32, N, D int, a *mlpActs, beta float32) {
	F := m.F
	a.g, a.u, a.a = growF(a.g, N*F), growF(a.u, N*F), growF(a.a, N*F)
	linear(a.g, h, m.w1, N, F, D, 0)
	linear(a.u, h, m.w3, N, F, D, 0)
	kernel.SwiGLU(a.a, a.g, a.u)
	linear(y, a.a, m.w2, N, D, F, beta)
}

// backward accumulates the parameter gradients for upstream dy (N, D) and
// computes dh (N, D) = beta*dh + the input gradient.
func (m *swiglu) backward(dh, dy, h []float32, N, D int, a *mlpActs, g *gradScratch, beta float32) {
	F := m.F
	g.da, g.dg, g.du = growF(g.da, N*F), growF(g.dg, N*F), growF(g.du, N*F)
	linearBackward(g.da, dy, a.a, m.w2, N, D, F, 0)
	kernel.SwiGLUBackward(g.dg, g.du, g.da, a.g, a.u)
	linearBackward(dh, g.dg, h, m.w1, N, F, D, beta)
	linearBackward(dh, g.du, h, m.w3, N, F, D, 1)
}

// ffnForward computes xOut = xMid + FFN(norm(xMid)) for layer l. For a MoE
// layer it writes the routing logits of the layers it routes (its own gate
// into route[l], its pre-gate into route[target]) and routes by route[l].
func (n *Net) ffnForward(ctx context.Context, l int, a *ffnActs, xOut, xMid []float32, N int, step uint64) error {
	c, ly := n.Cfg, &n.layers[l]
	D := c.D
	a.rstd, a.h = growF(a.rstd, N), growF(a.h, N*D)
	kernel.RMSNorm(a.h, a.rstd, xMid[:N*D], ly.postNorm.W, N, D, float32(c.NormEps))
	copy(xOut[:N*D], xMid[:N*D])
	if ly.dense != nil {
		ly.dense.forward(xOut, a.h, N, D, &a.mlp, 1)
		return nil
	}
	E := c.E
	gx := a.h
	a.gx = nil
	if n.Train && c.Jitter > 0 {
		noise := growF(n.acts.noise[l], N*D)
		n.acts.noise[l] = noise
		fillJitter(noise, c.Jitter, n.JitterSeed, step, l, n.TokenBase, D)
		a.gx = growF(a.gx, N*D)
		for i := range a.gx {
			a.gx[i] = a.h[i] * noise[i]
		}
		gx = a.gx
	}
	if ly.gate != nil {
		n.acts.route[l] = growF(n.acts.route[l], N*E)
		linear(n.acts.route[l], gx, ly.gate, N, E, D, 0)
	}
	if ly.pregate != nil {
		t := c.PregateTarget(l)
		n.acts.route[t] = growF(n.acts.route[t], N*E)
		linear(n.acts.route[t], gx, ly.pregate, N, E, D, 0)
	}
	if n.Watch != nil {
		if err := n.watchExperts(ctx, l, N); err != nil {
			return fmt.Errorf("layer %d: %w", l, err)
		}
	}
	if err := ly.experts.Forward(ctx, xOut, a.h, n.acts.route[l], N, &a.moe); err != nil {
		return fmt.Errorf("layer %d: %w", l, err)
	}
	if n.Watch != nil {
		if err := n.Watch.Done(ctx, l, false); err != nil {
			return fmt.Errorf("layer %d: %w", l, err)
		}
	}
	if ly.shared != nil {
		a.sg, a.sOut = growF(a.sg, N), growF(a.sOut, N*D)
		linear(a.sg, a.h, ly.sharedGate, N, 1, D, 0)
		for i, v := range a.sg {
			a.sg[i] = float32(1 / (1 + math.Exp(-float64(v))))
		}
		ly.shared.forward(a.sOut, a.h, N, D, &a.mlp, 0)
		for t := 0; t < N; t++ {
			s, o, y := a.sg[t], a.sOut[t*D:(t+1)*D], xOut[t*D:(t+1)*D]
			for i := range y {
				y[i] += s * o[i]
			}
		}
	}
	return nil
}

// ffnBackward takes dx (N, D), the gradient at the block's output, and adds
// the FFN path's gradient, leaving the gradient at xMid in dx. MoE layers
// write the routing-logit gradient into droute[l] and consume the
// gradients of the logits they computed (droute[l] for an own gate,
// droute[target] for a pre-gate: target > l has already run backward).
func (n *Net) ffnBackward(ctx context.Context, l int, a *ffnActs, dx, xMid []float32, N int) error {
	c, ly, g := n.Cfg, &n.layers[l], &n.acts.grad
	D := c.D
	g.dh = growF(g.dh, N*D)
	if ly.dense != nil {
		ly.dense.backward(g.dh, dx, a.h, N, D, &a.mlp, g, 0)
	} else {
		E := c.E
		clear(g.dh)
		n.acts.droute[l] = growF(n.acts.droute[l], N*E)
		if n.Watch != nil {
			if err := n.Watch.NeedGrad(ctx, l); err != nil {
				return fmt.Errorf("layer %d: %w", l, err)
			}
		}
		if err := ly.experts.Backward(ctx, g.dh, n.acts.droute[l], dx, &a.moe, &ly.expertsG, n.auxDProb, n.zScale); err != nil {
			return fmt.Errorf("layer %d: %w", l, err)
		}
		if n.Watch != nil {
			if err := n.Watch.Done(ctx, l, true); err != nil {
				return fmt.Errorf("layer %d: %w", l, err)
			}
		}
		if ly.shared != nil {
			g.dsOut, g.dsg = growF(g.dsOut, N*D), growF(g.dsg, N)
			for t := 0; t < N; t++ {
				s, o, dy, d := a.sg[t], a.sOut[t*D:(t+1)*D], dx[t*D:(t+1)*D], g.dsOut[t*D:(t+1)*D]
				var ds float32
				for i := range d {
					d[i] = s * dy[i]
					ds += dy[i] * o[i]
				}
				g.dsg[t] = ds * s * (1 - s)
			}
			linearBackward(g.dh, g.dsg, a.h, ly.sharedGate, N, 1, D, 1)
			ly.shared.backward(g.dh, g.dsOut, a.h, N, D, &a.mlp, g, 1)
		}
		// Router inputs: the own gate's and the pre-gate's logits.
		gx := a.h
		if a.gx != nil {
			gx = a.gx
		}
		g.dgx = growF(g.dgx, N*D)
		clear(g.dgx)
		if ly.gate != nil {
			linearBackward(g.dgx, n.acts.droute[l], gx, ly.gate, N, E, D, 1)
		}
		if ly.pregate != nil {
			t := c.PregateTarget(l)
			linearBackward(g.dgx, n.acts.droute[t], gx, ly.pregate, N, E, D, 1)
		}
		if a.gx != nil {
			noise := n.acts.noise[l]
			for i, v := range g.dgx {
				g.dh[i] += v * noise[i]
			}
		} else {
			addTo(g.dh, g.dgx)
		}
	}
	kernel.RMSNormBackward(g.dh, ly.postNorm.G, g.dh, xMid[:N*D], ly.postNorm.W, a.rstd, N, D)
	addTo(dx[:N*D], g.dh)
	return nil
}
