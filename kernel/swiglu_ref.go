package kernel

// SwiGLURef is the naive twin of SwiGLU (float64).
func SwiGLURef(out, gate, up []float32) { swigluRef(out, gate, up) }

// SwiGLUBackwardRef is the naive twin of SwiGLUBackward (float64).
func SwiGLUBackwardRef(dgate, dup, dout, gate, up []float32) {
	swigluBackwardRef(dgate, dup, dout, gate, up)
}

// SwiGLUFusedRef is the naive twin of SwiGLUFused (float64).
func SwiGLUFusedRef(out, gu []float32, T, F int) {
	for t := 0; t < T; t++ {
		for f := 0; f < F; f++ {
			g, u := float64(gu[t*2*F+f]), float64(gu[t*2*F+F+f])
			out[t*F+f] = float32(g * sigmoid64(g) * u)
		}
	}
}

// SwiGLUFusedBackwardRef is the naive twin of SwiGLUFusedBackward (float64).
func SwiGLUFusedBackwardRef(dgu, dout, gu []float32, T, F int) {
	for t := 0; t < T; t++ {
		for f := 0; f < F; f++ {
			g, u, d := float64(gu[t*2*F+f]), float64(gu[t*2*F+F+f]), float64(dout[t*F+f])
			s := sigmoid64(g)
			dgu[t*2*F+f] = float32(d * u * (s + g*s*(1-s)))
			dgu[t*2*F+F+f] = float32(d * g * s)
		}
	}
}

func swigluRef[F refFloat](out, gate, up []F) {
	for i, g := range gate {
		out[i] = F(float64(g) * sigmoid64(float64(g)) * float64(up[i]))
	}
}

func swigluBackwardRef[F refFloat](dgate, dup, dout, gate, up []F) {
	for i, gv := range gate {
		g, u, d := float64(gv), float64(up[i]), float64(dout[i])
		s := sigmoid64(g)
		dgate[i] = F(d * u * (s + g*s*(1-s)))
		dup[i] = F(d * g * s)
	}
}
