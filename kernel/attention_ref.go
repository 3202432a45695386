package kernel

import (
	"fmt"
	"math"
)

// AttentionRef is the naive twin of Attention: causal softmax attention with
// grouped KV heads, scores and softmax in float64.
//
// Shapes: q, out (T, H, Dh); k, v (S, G, Dh), the keys and values at absolute
// positions 0..S−1; H a multiple of G, query head h reads KV head h/(H/G).
// Query t sits at absolute position p = pos0+t (so pos0+T ≤ S) and attends to
// the keys j with
//
//	j ≤ p                    (causal)
//	p − j < window           (only when window > 0)
//
// i.e. a token sees itself and the window−1 tokens before it. This is the
// Hugging Face convention for Mistral/Mixtral/Qwen2 sliding windows
// (transformers' sliding-window mask keeps kv_idx > q_idx − sliding_window).
// Which layers use a window (Qwen2's max_window_layers) is the caller's
// business. Scores are scale·q·k.
func AttentionRef(out, q, k, v []float32, T, S, H, G, Dh, pos0, window int, scale float32) {
	checkAttentionRef("AttentionRef", out, q, k, v, T, S, H, G, Dh, pos0)
	attentionRef(out, q, k, v, T, S, H, G, Dh, pos0, window, float64(scale))
}

// AttentionBackwardRef computes the gradients of AttentionRef's inputs given
// dout, naively in float64 (it recomputes the forward probabilities). dq (T,
// H, Dh), dk and dv (S, G, Dh) are overwritten; keys no query sees get zero
// gradient. Same shapes and masking as AttentionRef.
func AttentionBackwardRef(dq, dk, dv, dout, q, k, v []float32, T, S, H, G, Dh, pos0, window int, scale float32) {
	checkAttentionRef("AttentionBackwardRef", dout, q, k, v, T, S, H, G, Dh, pos0)
	if len(dq) < T*H*Dh || len(dk) < S*G*Dh || len(dv) < S*G*Dh {
		panic(fmt.Sprintf("kernel.AttentionBackwardRef: T=%d S=%d H=%d G=%d Dh=%d need len(dq) ≥ T·H·Dh, len(dk), len(dv) ≥ S·G·Dh; have dq %d, dk %d, dv %d",
			T, S, H, G, Dh, len(dq), len(dk), len(dv)))
	}
	attentionBackwardRef(dq, dk, dv, dout, q, k, v, T, S, H, G, Dh, pos0, window, float64(scale))
}

// attnVisible returns the range [lo, hi] of keys visible from position p.
func attnVisible(p, window int) (lo, hi int) {
	if window > 0 {
		lo = max(0, p-window+1)
	}
	return lo, p
}

// attnProbs fills prob[j] for j in [lo, hi] with the softmax of the scaled
// scores of query row qr against KV head g; entries outside are left alone.
func attnProbs[F refFloat](prob []float64, qr, k []F, G, g, Dh, lo, hi int, scale float64) {
	m := math.Inf(-1)
	for j := lo; j <= hi; j++ {
		s := 0.0
		for d := 0; d < Dh; d++ {
			s += float64(qr[d]) * float64(k[(j*G+g)*Dh+d])
		}
		prob[j] = s * scale
		m = math.Max(m, prob[j])
	}
	sum := 0.0
	for j := lo; j <= hi; j++ {
		prob[j] = math.Exp(prob[j] - m)
		sum += prob[j]
	}
	for j := lo; j <= hi; j++ {
		prob[j] /= sum
	}
}

func attentionRef[F refFloat](out, q, k, v []F, T, S, H, G, Dh, pos0, window int, scale float64) {
	rep := H / G
	prob := make([]float64, S)
	for t := 0; t < T; t++ {
		lo, hi := attnVisible(pos0+t, window)
		for h := 0; h < H; h++ {
			g := h / rep
			qr := q[(t*H+h)*Dh : (t*H+h+1)*Dh]
			attnProbs(prob, qr, k, G, g, Dh, lo, hi, scale)
			for d := 0; d < Dh; d++ {
				o := 0.0
				for j := lo; j <= hi; j++ {
					o += prob[j] * float64(v[(j*G+g)*Dh+d])
				}
				out[(t*H+h)*Dh+d] = F(o)
			}
		}
	}
}

// attentionBackwardRef: with P = softmax(scale·q·kᵀ) over the visible keys,
//
//	dv_j += P_j · dout
//	dP_j  = dout · v_j
//	dS_j  = P_j · (dP_j − Σ_i P_i·dP_i)
//	dq   += scale · Σ_j dS_j · k_j,   dk_j += scale · dS_j · q
func attentionBackwardRef[F refFloat](dq, dk, dv, dout, q, k, v []F, T, S, H, G, Dh, pos0, window int, scale float64) {
	rep := H / G
	prob, dP := make([]float64, S), make([]float64, S)
	dk64, dv64 := make([]float64, S*G*Dh), make([]float64, S*G*Dh)
	for t := 0; t < T; t++ {
		lo, hi := attnVisible(pos0+t, window)
		for h := 0; h < H; h++ {
			g := h / rep
			row := (t*H + h) * Dh
			attnProbs(prob, q[row:row+Dh], k, G, g, Dh, lo, hi, scale)
			sum := 0.0 // Σ P·dP
			for j := lo; j <= hi; j++ {
				dP[j] = 0
				for d := 0; d < Dh; d++ {
					dP[j] += float64(dout[row+d]) * float64(v[(j*G+g)*Dh+d])
				}
				sum += prob[j] * dP[j]
			}
			for d := 0; d < Dh; d++ {
				dqd := 0.0
				for j := lo; j <= hi; j++ {
					dS := prob[j] * (dP[j] - sum)
					kv := (j*G+g)*Dh + d
					dqd += scale * dS * float64(k[kv])
					dk64[kv] += scale * dS * float64(q[row+d])
					dv64[kv] += prob[j] * float64(dout[row+d])
				}
				dq[row+d] = F(dqd)
			}
		}
	}
	for i := range dk64 {
		dk[i] = F(dk64[i])
		dv[i] = F(dv64[i])
	}
}

func checkAttentionRef(op string, out, q, k, v []float32, T, S, H, G, Dh, pos0 int) {
	if T < 0 || S < 0 || H < 1 || G < 1 || Dh < 1 || H%G != 0 || pos0 < 0 || pos0+T > S ||
		len(out) < T*H*Dh || len(q) < T*H*Dh || len(k) < S*G*Dh || len(v) < S*G*Dh {
		panic(fmt.Sprintf("kernel.%s: T=%d S=%d H=%d G=%d Dh=%d pos0=%d need H%%G == 0, pos0+T ≤ S, len(out), len(q) ≥ T·H·Dh, len(k), len(v) ≥ S·G·Dh; have out %d, q %d, k %d, v %d",
			op, T, S, H, G, Dh, pos0, len(out), len(q), len(k), len(v)))
	}
}
