package moe

import (
	"context"
	"fmt"
	"math"

	"github.com/moesys/moesys/kernel"
)

// Layer is the trainable expert part of a MoE FFN: E SwiGLU experts stored
// contiguously, f32, in the Hugging Face layout per expert. The router
// weights live with the caller, who computes the router logits (its own
// gate, or a pre-gate of an earlier block) and maps their gradient back:
// Forward takes logits (T, E); Backward returns their gradient.
type Layer struct {
	D, F, E, K int
	Normalize  bool    // renormalise the top-K weights (Mixtral)
	Capacity   float64 // capacity factor; <= 0: dropless

	// W13 (E, 2F, D): expert e's gate projection (W1, rows [0, F)) and up
	// projection (W3, rows [F, 2F)) stacked, so one product computes both.
	W13 []float32
	W2  []float32 // (E, D, F) down projections

	// Exchange, when set, moves routed rows to the ranks that own their
	// experts and back (expert parallelism); the weights above then hold
	// only this rank's El local experts. nil: all E experts are local.
	Exchange Exchange

	// W13b, W2b, when set, are the weights as bf16 (the same values,
	// kept in sync by the owner): the forward and input-gradient products
	// then use bf16 dot products (activations rounded to bf16, f32
	// accumulation); weight gradients stay f32.
	W13b, W2b []uint16
}

// gemm runs C = A*op(B_e) per expert with the f32 weights w or, when wb is
// set, their bf16 copy.
func gemm(transB bool, offs []int, N, K int, a []float32, w []float32, wb []uint16, stride int, beta float32, c []float32) {
	if wb != nil {
		kernel.GroupedGemmBF16(kernel.BF16Dot, transB, offs, N, K, 1, a, wb, stride, beta, c)
		return
	}
	kernel.GroupedGemm(transB, offs, N, K, 1, a, w, stride, beta, c)
}

// Grads holds a Layer's parameter gradients (same shapes), accumulated.
type Grads struct {
	W13, W2 []float32
}

// NewGrads allocates zero gradients for l's experts (with an Exchange,
// the local ones: as many as its weights hold).
func (l *Layer) NewGrads() *Grads {
	return &Grads{W13: make([]float32, len(l.W13)), W2: make([]float32, len(l.W2))}
}

// Activations is what Backward needs from Forward, plus the router
// statistics the caller's auxiliary losses are built from. Its buffers grow
// to the largest T seen and are reused.
type Activations struct {
	T       int
	x       []float32 // (T, D), the caller's input (not copied: keep it unchanged)
	routing Routing
	plan    Plan
	xs      []float32 // (R, D) dispatched rows, plan order
	xe      []float32 // (Rl, D) rows at the local experts (xs when all experts are local)
	offsE   []int     // (El+1) local expert offsets into xe
	h       []float32 // (Rl, 2F) gate and up pre-activations [g | u]
	a       []float32 // (Rl, F) silu(g) * u
	oe      []float32 // (Rl, D) local expert outputs
	o       []float32 // (R, D) expert outputs back in plan order (oe when local)
	oRet    []float32 // buffer of o with an Exchange
	limits  []int     // per-expert capacity (E), scratch
	want    []int     // per-expert assignments before dropping (E), scratch

	// Router statistics (for the load-balancing and z losses):
	Count   []float64 // (E) assignments routed to e (the router's choice, kept or dropped)
	ProbSum []float64 // (E) sum over tokens of the router probability of e
	LSE     []float64 // (T) logsumexp of each token's router logits

	// Backward scratch.
	dO, da, dh, dxs, dprobs []float32
	dxse, dxsRet            []float32
	dw, tmp                 []float32
}

// Routing returns the routing of the last Forward (valid until the next).
func (a *Activations) Routing() Routing { return a.routing }

// Plan returns the plan of the last Forward (valid until the next).
func (a *Activations) Plan() Plan { return a.plan }

// Forward adds the MoE output for x (T, D) routed by logits (T, E) into
// y (T, D) and records in act what Backward needs and the router
// statistics. Per-expert capacity is ceil(Capacity*T*K/E) when Capacity > 0;
// assignments beyond it are dropped (the token keeps its residual). Rows
// reach the experts through l.Exchange when set; its errors are returned.
func (l *Layer) Forward(ctx context.Context, y, x, logits []float32, T int, act *Activations) error {
	D, F, E := l.D, l.F, l.E
	if len(x) < T*D || len(y) < T*D || len(logits) < T*E {
		panic(fmt.Sprintf("moe.Layer.Forward: T=%d D=%d E=%d len(x)=%d len(y)=%d len(logits)=%d", T, D, E, len(x), len(y), len(logits)))
	}
	act.T, act.x = T, x
	act.routing = Router{K: l.K, Normalize: l.Normalize}.Route(logits, T, E)
	var limits []int // nil: dropless
	if l.Capacity > 0 {
		act.limits = resize(act.limits, E)
		limits = act.limits
		if lim, ok := l.Exchange.(CapacityLimiter); ok {
			want := resize(act.want, E)
			act.want = want
			clear(want)
			for _, e := range act.routing.IDsTK[:T*l.K] {
				want[e]++
			}
			if err := lim.Limits(ctx, want, T, l.K, l.Capacity, limits); err != nil {
				return fmt.Errorf("moe: capacity: %w", err)
			}
		} else {
			c := Capacity(l.Capacity, T, l.K, E)
			for e := range limits {
				limits[e] = c
			}
		}
	}
	act.plan = NewPlanLimits(act.routing, E, limits)
	R := act.plan.Rows()
	act.xs = grow(act.xs, R*D)
	Dispatch(act.xs, x, act.plan, l.K, D)
	act.xe, act.offsE = act.xs, act.plan.Offsets
	if l.Exchange != nil {
		var err error
		if act.xe, act.offsE, err = l.Exchange.Send(ctx, Forward, act.xs, &act.plan, D); err != nil {
			return fmt.Errorf("moe: dispatch: %w", err)
		}
	}
	offs := act.offsE
	Rl := offs[len(offs)-1]
	act.h, act.a = grow(act.h, Rl*2*F), grow(act.a, Rl*F)
	act.oe = grow(act.oe, Rl*D)
	gemm(true, offs, 2*F, D, act.xe, l.W13, l.W13b, 2*F*D, 0, act.h)
	kernel.SwiGLUFused(act.a[:Rl*F], act.h[:Rl*2*F], Rl, F)
	gemm(true, offs, D, F, act.a, l.W2, l.W2b, D*F, 0, act.oe)
	act.o = act.oe
	if l.Exchange != nil {
		act.oRet = grow(act.oRet, R*D)
		act.o = act.oRet
		if err := l.Exchange.Return(ctx, act.o, act.oe, &act.plan, D); err != nil {
			return fmt.Errorf("moe: combine: %w", err)
		}
	}
	Combine(y, act.o, act.plan, act.routing, D)
	act.stats(logits[:T*E], E)
	return nil
}

// stats fills Count, ProbSum and LSE from the routing and the logits.
func (act *Activations) stats(logits []float32, E int) {
	T := act.T
	act.Count, act.ProbSum = growF64(act.Count, E), growF64(act.ProbSum, E)
	clear(act.Count)
	clear(act.ProbSum)
	for _, id := range act.routing.IDsTK {
		act.Count[id]++
	}
	probs := act.routing.ProbsTE
	for t := 0; t < T; t++ {
		for e := 0; e < E; e++ {
			act.ProbSum[e] += float64(probs[t*E+e])
		}
	}
	act.LSE = growF64(act.LSE, T)
	for t := 0; t < T; t++ {
		row := logits[t*E : (t+1)*E]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, float64(v))
		}
		var s float64
		for _, v := range row {
			s += math.Exp(float64(v) - mx)
		}
		act.LSE[t] = mx + math.Log(s)
	}
}

// Backward takes dy (T, D), the gradient of the loss with respect to the
// layer's output, adds the gradient with respect to x into dx (T, D),
// accumulates the parameter gradients into g and overwrites dlogits (T, E)
// with the gradient with respect to the router logits. The caller's
// auxiliary losses enter through auxDProb (E; nil for none), added to the
// gradient of every token's probability of e, and zScale: the z-loss
// contributes zScale*LSE[t]*p[t,e] to dlogits[t,e] (zScale = 2*coef/N for
// coef * mean-over-N-tokens of LSE^2). Gradients reach the router through
// the combine weights (with the renormalisation) and these losses, not
// through the top-k choice.
func (l *Layer) Backward(ctx context.Context, dx, dlogits, dy []float32, act *Activations, g *Grads, auxDProb []float32, zScale float64) error {
	T, D, F, E, K := act.T, l.D, l.F, l.E, l.K
	p, r := &act.plan, &act.routing
	R := p.Rows()
	offs := act.offsE
	Rl := offs[len(offs)-1]
	// Expert path: dO = w * dy per kept slot; dw = dy . o.
	act.dO = grow(act.dO, R*D)
	act.dw = grow(act.dw, T*K)
	dO, dw := act.dO, act.dw
	for t := 0; t < T; t++ {
		dyt := dy[t*D : (t+1)*D]
		for k := 0; k < K; k++ {
			row := p.SlotRow[t*K+k]
			if row < 0 {
				dw[t*K+k] = 0
				continue
			}
			w := r.WeightsTK[t*K+k]
			o := act.o[int(row)*D : (int(row)+1)*D]
			d := dO[int(row)*D : (int(row)+1)*D]
			var s float32
			for i := range d {
				d[i] = w * dyt[i]
				s += dyt[i] * o[i]
			}
			dw[t*K+k] = s
		}
	}
	// The output gradients travel to the experts as the inputs did.
	dOe := dO
	if l.Exchange != nil {
		var err error
		if dOe, _, err = l.Exchange.Send(ctx, Backward, dO, p, D); err != nil {
			return fmt.Errorf("moe: backward dispatch: %w", err)
		}
	}
	kernel.GroupedGemmWeightGrad(offs, D, F, 1, dOe, act.a, 1, g.W2, D*F)
	act.da = grow(act.da, Rl*F)
	gemm(false, offs, F, D, dOe, l.W2, l.W2b, D*F, 0, act.da)
	act.dh = grow(act.dh, Rl*2*F)
	kernel.SwiGLUFusedBackward(act.dh[:Rl*2*F], act.da[:Rl*F], act.h[:Rl*2*F], Rl, F)
	kernel.GroupedGemmWeightGrad(offs, 2*F, D, 1, act.dh, act.xe, 1, g.W13, 2*F*D)
	act.dxse = grow(act.dxse, Rl*D)
	gemm(false, offs, D, 2*F, act.dh, l.W13, l.W13b, 2*F*D, 0, act.dxse)
	act.dxs = act.dxse
	if l.Exchange != nil {
		act.dxsRet = grow(act.dxsRet, R*D)
		act.dxs = act.dxsRet
		if err := l.Exchange.Return(ctx, act.dxs, act.dxse, p, D); err != nil {
			return fmt.Errorf("moe: backward combine: %w", err)
		}
	}
	for row := 0; row < R; row++ {
		t := int(p.RowSlot[row]) / K
		d, s := dx[t*D:(t+1)*D], act.dxs[row*D:(row+1)*D]
		for i := range d {
			d[i] += s[i]
		}
	}

	// Router path: combine weights (through the renormalisation) and the
	// auxiliary losses give dprobs; softmax backward gives dlogits.
	act.dprobs = grow(act.dprobs, T*E)
	dprobs := act.dprobs
	clear(dprobs)
	act.tmp = grow(act.tmp, K)
	for t := 0; t < T; t++ {
		dv := dw[t*K : (t+1)*K]
		if l.Normalize {
			// w = v / S: dv_k = (dw_k - sum_j dw_j w_j) / S, S = sum of the
			// selected probabilities.
			var S, dot float64
			for k := 0; k < K; k++ {
				S += float64(r.ProbsTE[t*E+int(r.IDsTK[t*K+k])])
				dot += float64(dw[t*K+k]) * float64(r.WeightsTK[t*K+k])
			}
			for k := 0; k < K; k++ {
				act.tmp[k] = float32((float64(dw[t*K+k]) - dot) / S)
			}
			dv = act.tmp
		}
		for k := 0; k < K; k++ {
			dprobs[t*E+int(r.IDsTK[t*K+k])] += dv[k]
		}
		if auxDProb != nil {
			row := dprobs[t*E : (t+1)*E]
			for e := range row {
				row[e] += auxDProb[e]
			}
		}
	}
	kernel.SoftmaxBackward(dlogits[:T*E], dprobs, r.ProbsTE, T, E)
	if zScale != 0 {
		for t := 0; t < T; t++ {
			c := float32(zScale * act.LSE[t])
			for e := 0; e < E; e++ {
				dlogits[t*E+e] += c * r.ProbsTE[t*E+e]
			}
		}
	}
	return nil
}

func grow(s []float32, n int) []float32 {
	if cap(s) < n {
		return make([]float32, n)
	}
	return s[:n]
}

func growF64(s []float64, n int) []float64 {
	if cap(s) < n {
		return make([]float64, n)
	}
	return s[:n]
}
