package kernel

import "math"

// RoPEFreqsRef is the naive twin of RoPEFreqs: each entry from its own
// float64 formula, inv_freq written as exp(−(2i/rotDim)·ln theta).
func RoPEFreqsRef(cos, sin []float32, maxPos, rotDim int, theta float64) {
	half := rotDim / 2
	for p := 0; p < maxPos; p++ {
		for i := 0; i < half; i++ {
			angle := float64(p) * math.Exp(-float64(2*i)/float64(rotDim)*math.Log(theta))
			cos[p*half+i] = float32(math.Cos(angle))
			sin[p*half+i] = float32(math.Sin(angle))
		}
	}
}

// RoPERef is the naive twin of RoPE (float64 arithmetic on the same tables).
func RoPERef(x []float32, pos []int32, T, H, Dh, rotDim int, cos, sin []float32) {
	checkRoPE("RoPERef", x, pos, T, H, Dh, rotDim, cos, sin)
	ropeRef(x, pos, T, H, Dh, rotDim, cos, sin, 1)
}

// RoPEBackwardRef is the naive twin of RoPEBackward.
func RoPEBackwardRef(dx []float32, pos []int32, T, H, Dh, rotDim int, cos, sin []float32) {
	checkRoPE("RoPEBackwardRef", dx, pos, T, H, Dh, rotDim, cos, sin)
	ropeRef(dx, pos, T, H, Dh, rotDim, cos, sin, -1)
}

// ropeRef rotates by dir·θ; dir = −1 is the inverse (and the transpose).
func ropeRef[F refFloat](x []F, pos []int32, T, H, Dh, rotDim int, cos, sin []float32, dir float64) {
	half := rotDim / 2
	for t := 0; t < T; t++ {
		p := int(pos[t])
		for h := 0; h < H; h++ {
			base := (t*H + h) * Dh
			for i := 0; i < half; i++ {
				c, s := float64(cos[p*half+i]), dir*float64(sin[p*half+i])
				a, b := float64(x[base+i]), float64(x[base+half+i])
				x[base+i] = F(a*c - b*s)
				x[base+half+i] = F(b*c + a*s)
			}
		}
	}
}
