package moe

import (
	"fmt"
	"math"

	"github.com/moesys/moesys/kernel"
)

// Layer is a trainable MoE FFN: a linear router (E, D) and E SwiGLU experts
// stored contiguously, f32, in the Hugging Face layout per expert:
// W1 (gate) and W3 (up) (E, F, D), W2 (down) (E, D, F).
type Layer struct {
	D, F, E, K int
	Normalize  bool    // renormalise the top-K weights (Mixtral)
	Capacity   float64 // capacity factor; <= 0: dropless
	AuxCoef    float64 // load-balancing loss coefficient (Switch / HF)
	ZCoef      float64 // router z-loss coefficient

	Router     []float32 // (E, D)
	W1, W3, W2 []float32
}

// Grads holds a Layer's parameter gradients (same shapes), accumulated.
type Grads struct {
	Router, W1, W3, W2 []float32
}

// NewGrads allocates zero gradients for l.
func (l *Layer) NewGrads() *Grads {
	return &Grads{Router: make([]float32, l.E*l.D), W1: make([]float32, l.E*l.F*l.D),
		W3: make([]float32, l.E*l.F*l.D), W2: make([]float32, l.E*l.D*l.F)}
}

// Activations is what Backward needs from Forward.
type Activations struct {
	T       int
	x       []float32 // (T, D), the caller's input (not copied: keep it unchanged)
	logitsT []float32 // (T, E)
	routing Routing
	plan    Plan
	xs      []float32 // (R, D) dispatched rows
	h1, h3  []float32 // (R, F) gate and up pre-activations
	a       []float32 // (R, F) silu(h1) * h3
	o       []float32 // (R, D) expert outputs
	lse     []float64 // (T) logsumexp of the router logits, for the z-loss
	Aux, Z  float64   // the layer's load-balancing and z losses (unscaled)
}

// Forward adds the MoE output for x (T, D) into y (T, D), records what
// Backward needs in act, and returns the weighted auxiliary loss
// AuxCoef*aux + ZCoef*z, where aux is the Switch/HF load-balancing loss
// E * sum_e f_e * P_e (f_e: share of the T*K assignments routed to e, per
// top-k slot, as HF computes it; P_e: mean router probability) and z is the
// mean squared logsumexp of the router logits.
func (l *Layer) Forward(y, x []float32, T int, act *Activations) float64 {
	D, F, E := l.D, l.F, l.E
	if len(x) < T*D || len(y) < T*D {
		panic(fmt.Sprintf("moe.Layer.Forward: T=%d D=%d len(x)=%d len(y)=%d", T, D, len(x), len(y)))
	}
	act.T, act.x = T, x
	act.logitsT = grow(act.logitsT, T*E)
	kernel.Gemm(false, true, T, E, D, 1, x, D, l.Router, D, 0, act.logitsT, E)
	act.routing = Router{K: l.K, Normalize: l.Normalize}.Route(act.logitsT, T, E)
	capacity := -1
	if l.Capacity > 0 {
		capacity = int(math.Ceil(l.Capacity * float64(T*l.K) / float64(E)))
	}
	act.plan = NewPlan(act.routing, E, capacity)
	R := act.plan.Rows()
	act.xs = grow(act.xs, R*D)
	act.h1, act.h3, act.a = grow(act.h1, R*F), grow(act.h3, R*F), grow(act.a, R*F)
	act.o = grow(act.o, R*D)
	Dispatch(act.xs, x, act.plan, l.K, D)
	offs := act.plan.Offsets
	kernel.GroupedGemm(true, offs, F, D, 1, act.xs, l.W1, F*D, 0, act.h1)
	kernel.GroupedGemm(true, offs, F, D, 1, act.xs, l.W3, F*D, 0, act.h3)
	kernel.SwiGLU(act.a[:R*F], act.h1[:R*F], act.h3[:R*F])
	kernel.GroupedGemm(true, offs, D, F, 1, act.a, l.W2, D*F, 0, act.o)
	Combine(y, act.o, act.plan, act.routing, D)

	// Auxiliary losses.
	act.Aux = 0
	probs := act.routing.ProbsTE
	for e := 0; e < E; e++ {
		var p float64
		for t := 0; t < T; t++ {
			p += float64(probs[t*E+e])
		}
		act.Aux += float64(l.assigned(act, e)) / float64(T) * p / float64(T)
	}
	act.Aux *= float64(E)
	act.lse = growF64(act.lse, T)
	act.Z = 0
	for t := 0; t < T; t++ {
		row := act.logitsT[t*E : (t+1)*E]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, float64(v))
		}
		var s float64
		for _, v := range row {
			s += math.Exp(float64(v) - mx)
		}
		act.lse[t] = mx + math.Log(s)
		act.Z += act.lse[t] * act.lse[t]
	}
	act.Z /= float64(T)
	return l.AuxCoef*act.Aux + l.ZCoef*act.Z
}

// assigned counts the routing's (token, slot) assignments to expert e,
// kept or dropped (the router's choice, as HF counts it).
func (l *Layer) assigned(act *Activations, e int) int {
	n := 0
	for _, id := range act.routing.IDsTK {
		if int(id) == e {
			n++
		}
	}
	return n
}

// Backward takes dy (T, D), the gradient of the loss with respect to the
// layer's output, adds the gradient with respect to x into dx (T, D) and
// accumulates the parameter gradients into g. The auxiliary losses returned
// by Forward enter with weight 1 (their coefficients are applied here).
// Gradients reach the router through the combine weights (with the
// renormalisation) and the auxiliary losses, not through the top-k choice.
func (l *Layer) Backward(dx, dy []float32, act *Activations, g *Grads) {
	T, D, F, E, K := act.T, l.D, l.F, l.E, l.K
	p, r := &act.plan, &act.routing
	R := p.Rows()
	offs := p.Offsets
	// Expert path: dO = w * dy per kept slot; dw = dy . o.
	dO := make([]float32, R*D)
	dw := make([]float32, T*K)
	for t := 0; t < T; t++ {
		for k := 0; k < K; k++ {
			row := p.SlotRow[t*K+k]
			if row < 0 {
				continue
			}
			w := r.WeightsTK[t*K+k]
			o := act.o[int(row)*D : (int(row)+1)*D]
			d := dO[int(row)*D : (int(row)+1)*D]
			dyt := dy[t*D : (t+1)*D]
			var s float64
			for i := range d {
				d[i] = w * dyt[i]
				s += float64(dyt[i]) * float64(o[i])
			}
			dw[t*K+k] = float32(s)
		}
	}
	kernel.GroupedGemmWeightGrad(offs, D, F, 1, dO, act.a, 1, g.W2, D*F)
	da := make([]float32, R*F)
	kernel.GroupedGemm(false, offs, F, D, 1, dO, l.W2, D*F, 0, da)
	dh1, dh3 := make([]float32, R*F), make([]float32, R*F)
	kernel.SwiGLUBackward(dh1, dh3, da, act.h1[:R*F], act.h3[:R*F])
	kernel.GroupedGemmWeightGrad(offs, F, D, 1, dh1, act.xs, 1, g.W1, F*D)
	kernel.GroupedGemmWeightGrad(offs, F, D, 1, dh3, act.xs, 1, g.W3, F*D)
	dxs := make([]float32, R*D)
	kernel.GroupedGemm(false, offs, D, F, 1, dh1, l.W1, F*D, 0, dxs)
	kernel.GroupedGemm(false, offs, D, F, 1, dh3, l.W3, F*D, 1, dxs)
	for row := 0; row < R; row++ {
		t := int(p.RowSlot[row]) / K
		d, s := dx[t*D:(t+1)*D], dxs[row*D:(row+1)*D]
		for i := range d {
			d[i] += s[i]
		}
	}

	// Router path: combine weights (through the renormalisation) and the
	// auxiliary losses give dprobs; softmax backward gives dlogits.
	dprobs := make([]float32, T*E)
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
			tmp := make([]float32, K)
			for k := 0; k < K; k++ {
				tmp[k] = float32((float64(dw[t*K+k]) - dot) / S)
			}
			dv = tmp
		}
		for k := 0; k < K; k++ {
			dprobs[t*E+int(r.IDsTK[t*K+k])] += dv[k]
		}
	}
	if l.AuxCoef != 0 {
		for e := 0; e < E; e++ {
			c := float32(l.AuxCoef * float64(E) * float64(l.assigned(act, e)) / float64(T) / float64(T))
			for t := 0; t < T; t++ {
				dprobs[t*E+e] += c
			}
		}
	}
	dlogits := make([]float32, T*E)
	kernel.SoftmaxBackward(dlogits, dprobs, r.ProbsTE, T, E)
	if l.ZCoef != 0 {
		for t := 0; t < T; t++ {
			c := float32(l.ZCoef * 2 * act.lse[t] / float64(T))
			for e := 0; e < E; e++ {
				dlogits[t*E+e] += c * r.ProbsTE[t*E+e]
			}
		}
	}
	kernel.Gemm(true, false, E, D, T, 1, dlogits, E, act.x, D, 1, g.Router, D)
	kernel.Gemm(false, false, T, D, E, 1, dlogits, E, l.Router, D, 1, dx, D)
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
