package model

import (
	"math"

	"github.com/moesys/moesys/kernel"
)

// attnActs is what the attention half of a block keeps for Backward.
// N = B*T rows; sequence b holds rows b*T..b*T+T-1.
type attnActs struct {
	rstd []float32 // (N) of the input norm
	h    []float32 // (N, D) normed input
	q    []float32 // (N, H*Dh) after RoPE
	k, v []float32 // (N, G*Dh), k after RoPE
	att  []float32 // (N, H*Dh) attention output
	lse  []float32 // (B, H, T)
}

func (a *attnActs) grow(c *Config, N int) {
	a.rstd, a.h = growF(a.rstd, N), growF(a.h, N*c.D)
	a.q, a.att = growF(a.q, N*c.H*c.Dh), growF(a.att, N*c.H*c.Dh)
	a.k, a.v = growF(a.k, N*c.G*c.Dh), growF(a.v, N*c.G*c.Dh)
	a.lse = growF(a.lse, N*c.H)
}

// linear computes y (N, O) = x (N, I) W^T + beta*y for W (O, I), with the
// bf16 copy of W and bf16 dot products when the Param has one.
func linear(y, x []float32, w *Param, N, O, I int, beta float32) {
	if w.B != nil {
		kernel.GemmBF16(kernel.BF16Dot, false, true, N, O, I, 1, x, I, w.B, I, beta, y, O)
		return
	}
	kernel.Gemm(false, true, N, O, I, 1, x, I, w.W, I, beta, y, O)
}

// linearBackward accumulates dW (O, I) += dy^T x (f32) and computes
// dx (N, I) = dy W + beta*dx (bf16 dot products when W has a bf16 copy).
func linearBackward(dx, dy, x []float32, w *Param, N, O, I int, beta float32) {
	kernel.Gemm(true, false, O, I, N, 1, dy, O, x, I, 1, w.G, I)
	switch {
	case dx == nil:
	case w.B != nil:
		kernel.GemmBF16(kernel.BF16Dot, false, false, N, I, O, 1, dy, O, w.B, I, beta, dx, I)
	default:
		kernel.Gemm(false, false, N, I, O, 1, dy, O, w.W, I, beta, dx, I)
	}
}

// attnForward computes xMid = x + o(attention(rope(q, k), v)) over the
// block's normed input, for B sequences of T tokens.
func (n *Net) attnForward(l int, a *attnActs, xMid, x []float32, B, T int, pos []int32) {
	c, ly := n.Cfg, &n.layers[l]
	N, D, H, G, Dh := B*T, c.D, c.H, c.G, c.Dh
	a.grow(c, N)
	kernel.RMSNorm(a.h, a.rstd, x[:N*D], ly.inNorm.W, N, D, float32(c.NormEps))
	linear(a.q, a.h, ly.q, N, H*Dh, D, 0)
	linear(a.k, a.h, ly.k, N, G*Dh, D, 0)
	linear(a.v, a.h, ly.v, N, G*Dh, D, 0)
	kernel.RoPE(a.q, pos, N, H, Dh, c.RotaryDim, n.cos, n.sin)
	kernel.RoPE(a.k, pos, N, G, Dh, c.RotaryDim, n.cos, n.sin)
	scale := float32(1 / math.Sqrt(float64(Dh)))
	ws := n.acts.attnWS(kernel.AttentionWorkspace(T, T, H, G, Dh))
	qs, ks := T*H*Dh, T*G*Dh
	for b := 0; b < B; b++ {
		kernel.Attention(a.att[b*qs:(b+1)*qs], a.lse[b*H*T:(b+1)*H*T], a.q[b*qs:(b+1)*qs],
			a.k[b*ks:(b+1)*ks], a.v[b*ks:(b+1)*ks], T, T, H, G, Dh, 0, c.Window[l], scale, ws)
	}
	copy(xMid[:N*D], x[:N*D])
	linear(xMid, a.att, ly.o, N, D, H*Dh, 1)
}

// attnBackward takes dxMid (N, D), the gradient at the block's residual
// after attention, and adds the attention path's gradient into it, leaving
// the gradient with respect to the block's input x in dxMid.
func (n *Net) attnBackward(l int, a *attnActs, dxMid, x []float32, B, T int, pos []int32) {
	c, ly, g := n.Cfg, &n.layers[l], &n.acts.grad
	N, D, H, G, Dh := B*T, c.D, c.H, c.G, c.Dh
	g.datt, g.dq = growF(g.datt, N*H*Dh), growF(g.dq, N*H*Dh)
	g.dk, g.dv = growF(g.dk, N*G*Dh), growF(g.dv, N*G*Dh)
	g.dh = growF(g.dh, N*D)
	linearBackward(g.datt, dxMid, a.att, ly.o, N, D, H*Dh, 0)
	scale := float32(1 / math.Sqrt(float64(Dh)))
	ws := n.acts.attnWS(kernel.AttentionBackwardWorkspace(T, T, H, G, Dh))
	qs, ks := T*H*Dh, T*G*Dh
	for b := 0; b < B; b++ {
		kernel.AttentionBackward(g.dq[b*qs:(b+1)*qs], g.dk[b*ks:(b+1)*ks], g.dv[b*ks:(b+1)*ks],
			g.datt[b*qs:(b+1)*qs], a.q[b*qs:(b+1)*qs], a.k[b*ks:(b+1)*ks], a.v[b*ks:(b+1)*ks],
			a.att[b*qs:(b+1)*qs], a.lse[b*H*T:(b+1)*H*T], T, T, H, G, Dh, 0, c.Window[l], scale, ws)
	}
	kernel.RoPEBackward(g.dq, pos, N, H, Dh, c.RotaryDim, n.cos, n.sin)
	kernel.RoPEBackward(g.dk, pos, N, G, Dh, c.RotaryDim, n.cos, n.sin)
	linearBackward(g.dh, g.dq, a.h, ly.q, N, H*Dh, D, 0)
	linearBackward(g.dh, g.dk, a.h, ly.k, N, G*Dh, D, 1)
	linearBackward(g.dh, g.dv, a.h, ly.v, N, G*Dh, D, 1)
	kernel.RMSNormBackward(g.dh, ly.inNorm.G, g.dh, x[:N*D], ly.inNorm.W, a.rstd, N, D)
	addTo(dxMid[:N*D], g.dh)
}

func addTo(dst, src []float32) {
	for i, v := range src {
		dst[i] += v
	}
}

func growF(s []float32, n int) []float32 { return grow(s, n) }

// grow returns s with length n, reallocated only when it must grow.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}
