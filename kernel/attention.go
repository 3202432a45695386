package kernel

import (
	"fmt"
	"math"
)

// decodeRows: at or below this many query rows, attention reads the KV cache
// in place (one pass over keys per row) instead of packing it for the tiled
// GEMM path; packing only pays off when many rows share the keys.
const decodeRows = 4

// attnRowChunk is the number of query rows per work item on the tiled path:
// small enough to balance the causal triangle over threads, large enough to
// amortise the per-item setup.
const attnRowChunk = 96

// AttentionWorkspace returns the number of float32s Attention needs in ws.
func AttentionWorkspace(T, S, H, G, Dh int) int {
	if T <= decodeRows || !useAVX512() {
		return H * S
	}
	sp := (S + nr - 1) / nr * nr
	dp := (Dh + nr - 1) / nr * nr
	return G*(sp*Dh+dp*S) + alignPad // + room to start the panels on a cache line
}

// Attention computes causal softmax attention with grouped KV heads.
// q (T, H, Dh) holds T query rows; k and v (S, G, Dh) hold the keys and values
// at absolute positions 0..S-1 (a KV cache, or the same sequence's keys for
// prefill); out (T, H, Dh). Query t sits at position pos0+t, so pos0+T <= S,
// and sees keys j <= pos0+t, and only j > pos0+t-window when window > 0
// (a token sees itself and the window-1 tokens before it). Query head h reads
// KV head h/(H/G). Scores are q.k*scale. lse (H, T), if not nil, receives each
// row's log-sum-exp of scaled scores (for the backward pass). ws is scratch of
// AttentionWorkspace(T, S, H, G, Dh) floats (any alignment). Each call
// allocates one small closure for the pool; nothing else.
func Attention(out, lse, q, k, v []float32, T, S, H, G, Dh, pos0, window int, scale float32, ws []float32) {
	if T < 0 || S < 0 || H <= 0 || G <= 0 || Dh <= 0 || H%G != 0 || pos0 < 0 || pos0+T > S ||
		len(out) < T*H*Dh || len(q) < T*H*Dh || len(k) < S*G*Dh || len(v) < S*G*Dh ||
		(lse != nil && len(lse) < H*T) || len(ws) < AttentionWorkspace(T, S, H, G, Dh) {
		panic(fmt.Sprintf("kernel.Attention: bad shapes T=%d S=%d H=%d G=%d Dh=%d pos0=%d len(out)=%d len(q)=%d len(k)=%d len(v)=%d len(lse)=%d len(ws)=%d",
			T, S, H, G, Dh, pos0, len(out), len(q), len(k), len(v), len(lse), len(ws)))
	}
	if T == 0 {
		return
	}
	ld := H * Dh // row stride of q and out
	ldkv := G * Dh
	rep := H / G
	lseOf := func(h int) []float32 {
		if lse == nil {
			return nil
		}
		return lse[h*T : (h+1)*T]
	}
	if T <= decodeRows && useAVX512() {
		// Decode: per KV head, each query row reads the cache in place once
		// for all the query heads sharing it. Scores scratch: rep*S per head.
		threads := min(G, Threads())
		parallel(threads, func(p int) {
			for g := p; g < G; g += threads {
				s := ws[g*rep*S : (g+1)*rep*S]
				for t := 0; t < T; t++ {
					lo, hi := attnRange(pos0+t, window)
					var l []float32
					if lse != nil {
						l = lse[g*rep*T+t:]
					}
					nativeAttnDecode(out[t*ld+g*rep*Dh:], Dh, l, T, q[t*ld+g*rep*Dh:], Dh, rep,
						k[g*Dh:], v[g*Dh:], ldkv, lo, hi, Dh, scale, s)
				}
			}
		})
		return
	}
	if !useAVX512() {
		threads := min(H, Threads())
		parallel(threads, func(p int) {
			for h := p; h < H; h += threads {
				g := h / rep
				attentionGo(out[h*Dh:], ld, lseOf(h), q[h*Dh:], ld, k[g*Dh:], v[g*Dh:], ldkv,
					S, Dh, T, pos0, window, scale, ws[h*S:(h+1)*S])
			}
		})
		return
	}
	// Tiled path: pack each KV head once, then score/value tiles per row chunk.
	ws = alignF32(ws)
	sp := (S + nr - 1) / nr * nr
	dp := (Dh + nr - 1) / nr * nr
	per := sp*Dh + dp*S
	parallel(G, func(g int) {
		w := ws[g*per : (g+1)*per]
		nativeAttnPackKV(w[:sp*Dh], w[sp*Dh:], k[g*Dh:], v[g*Dh:], ldkv, S, Dh)
	})
	chunks := (T + attnRowChunk - 1) / attnRowChunk
	items := H * chunks
	threads := min(Threads(), items)
	parallel(threads, func(p int) {
		// Interleave items so each thread gets early (cheap) and late (costly)
		// chunks of the causal triangle.
		for it := p; it < items; it += threads {
			h, c := it%H, it/H
			g := h / rep
			w := ws[g*per : (g+1)*per]
			r0, r1 := c*attnRowChunk, min(T, (c+1)*attnRowChunk)
			nativeAttnRows(out[h*Dh:], ld, lseOf(h), q[h*Dh:], ld, w[:sp*Dh], w[sp*Dh:], S, Dh, r0, r1, pos0, window, scale)
		}
	})
}

// attnRange returns the keys [lo, hi] visible from position pos.
func attnRange(pos, window int) (lo, hi int) {
	if window > 0 {
		lo = max(0, pos-window+1)
	}
	return lo, pos
}

// attentionGo is the portable path for one head: one pass over the visible
// keys per query row, scores in s (S floats).
func attentionGo(out []float32, ldo int, lse []float32, q []float32, ldq int, k, v []float32, ldkv,
	S, Dh, T, pos0, window int, scale float32, s []float32) {
	for t := 0; t < T; t++ {
		lo, hi := attnRange(pos0+t, window)
		qt := q[t*ldq : t*ldq+Dh]
		mx := float32(math.Inf(-1))
		for j := lo; j <= hi; j++ {
			kj := k[j*ldkv : j*ldkv+Dh]
			var d float32
			for i, x := range qt {
				d += x * kj[i]
			}
			d *= scale
			s[j-lo] = d
			mx = max(mx, d)
		}
		var sum float32
		for j := 0; j <= hi-lo; j++ {
			e := float32(math.Exp(float64(s[j] - mx)))
			s[j] = e
			sum += e
		}
		ot := out[t*ldo : t*ldo+Dh]
		clear(ot)
		for j := lo; j <= hi; j++ {
			p := s[j-lo] / sum
			vj := v[j*ldkv : j*ldkv+Dh]
			for i := range ot {
				ot[i] += p * vj[i]
			}
		}
		if lse != nil {
			lse[t] = mx + float32(math.Log(float64(sum)))
		}
	}
}
