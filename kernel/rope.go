package kernel

import (
	"fmt"
	"math"
)

// RoPEFreqs fills the rotary tables for positions 0..maxPos−1:
//
//	cos[p, i] = cos(p · theta^(−2i/rotDim)),  sin[p, i] = sin(…),  i < rotDim/2
//
// Shapes: cos, sin (maxPos, rotDim/2). Angles and their cos/sin are computed
// in float64 and rounded once. Hugging Face computes inv_freq and p·inv_freq in
// float32, so at large positions (p ≳ 10⁴) its angles are off by up to ~p·2⁻²⁴
// rad and the two tables differ in the 4th digit there; ours are the exact values.
func RoPEFreqs(cos, sin []float32, maxPos, rotDim int, theta float64) {
	half := rotDim / 2
	if maxPos < 0 || rotDim < 2 || rotDim%2 != 0 || len(cos) < maxPos*half || len(sin) < maxPos*half || !(theta > 0) {
		panic(fmt.Sprintf("kernel.RoPEFreqs: maxPos=%d rotDim=%d theta=%g need rotDim even ≥ 2, theta > 0, len(cos), len(sin) ≥ maxPos·rotDim/2; have cos %d, sin %d",
			maxPos, rotDim, theta, len(cos), len(sin)))
	}
	for i := 0; i < half; i++ {
		invFreq := math.Pow(theta, -float64(2*i)/float64(rotDim))
		for p := 0; p < maxPos; p++ {
			s, c := math.Sincos(float64(p) * invFreq)
			cos[p*half+i] = float32(c)
			sin[p*half+i] = float32(s)
		}
	}
}

// RoPE applies rotary position embeddings in place, Hugging Face "rotate_half"
// (non-interleaved) convention: in each head, the first rotDim dims are split
// into halves x1 = x[0:h], x2 = x[h:rotDim] (h = rotDim/2) and
//
//	x1[i], x2[i] = x1[i]·c − x2[i]·s,  x2[i]·c + x1[i]·s     c, s = cos, sin[pos[t], i]
//
// dims rotDim..Dh−1 pass through unchanged (partial rotary). Shapes: x (T, H,
// Dh) row-major; pos (T), each in [0, maxPos); cos, sin (maxPos, rotDim/2)
// from RoPEFreqs. For keys pass the KV-head count as H.
func RoPE(x []float32, pos []int32, T, H, Dh, rotDim int, cos, sin []float32) {
	rope("RoPE", x, pos, T, H, Dh, rotDim, cos, sin, 1)
}

// RoPEBackward maps the gradient with respect to RoPE's output to the
// gradient with respect to its input, in place: the rotation is orthogonal,
// so this is the inverse rotation (angle −θ). Same shapes as RoPE.
func RoPEBackward(dx []float32, pos []int32, T, H, Dh, rotDim int, cos, sin []float32) {
	rope("RoPEBackward", dx, pos, T, H, Dh, rotDim, cos, sin, -1)
}

// rope rotates by +θ (dir 1) or −θ (dir −1).
func rope(op string, x []float32, pos []int32, T, H, Dh, rotDim int, cos, sin []float32, dir float32) {
	half := rotDim / 2
	checkRoPE(op, x, pos, T, H, Dh, rotDim, cos, sin)
	maxPos := min(len(cos), len(sin)) / half
	for t := 0; t < T; t++ {
		p := int(pos[t])
		if p < 0 || p >= maxPos {
			panic(fmt.Sprintf("kernel.%s: pos[%d]=%d outside the tables' [0, %d)", op, t, p, maxPos))
		}
		c := cos[p*half : p*half+half]
		s := sin[p*half : p*half+half]
		for h := 0; h < H; h++ {
			base := (t*H + h) * Dh
			x1 := x[base : base+half]
			x2 := x[base+half : base+rotDim]
			x2, c, s := x2[:len(x1)], c[:len(x1)], s[:len(x1)]
			for i, a := range x1 {
				b := x2[i]
				si := dir * s[i]
				x1[i] = a*c[i] - b*si
				x2[i] = b*c[i] + a*si
			}
		}
	}
}

func checkRoPE(op string, x []float32, pos []int32, T, H, Dh, rotDim int, cos, sin []float32) {
	half := rotDim / 2
	if T < 0 || H < 0 || rotDim < 2 || rotDim%2 != 0 || rotDim > Dh || len(x) < T*H*Dh || len(pos) < T ||
		len(cos) < half || len(sin) < half {
		panic(fmt.Sprintf("kernel.%s: T=%d H=%d Dh=%d rotDim=%d need rotDim even in [2, Dh], len(x) ≥ T·H·Dh, len(pos) ≥ T, cos and sin (maxPos, rotDim/2); have x %d, pos %d, cos %d, sin %d",
			op, T, H, Dh, rotDim, len(x), len(pos), len(cos), len(sin)))
	}
}
