package kernel

import "fmt"

// SwiGLU computes the gated activation of Llama/Mixtral/Qwen experts,
// elementwise: out[i] = silu(gate[i])·up[i] = gate·up / (1 + e^(−gate)).
// Shapes: out, gate, up (n) — typically (T, F) flattened. out may alias gate
// or up. Accuracy: within a few ulp of the float64 value (expPoly ≤ 1 ulp;
// the C kernels mk_swiglu and mk2_swiglu use its polynomial with FMAs,
// ≤ 1.3 ulp, so tiers may differ in the last bit).
func SwiGLU(out, gate, up []float32) {
	n := len(gate)
	if len(up) < n || len(out) < n {
		panic(fmt.Sprintf("kernel.SwiGLU: need len(out), len(up) ≥ len(gate)=%d; have out %d, up %d", n, len(out), len(up)))
	}
	if useNative() && n >= nativeMinElems {
		nativeSwiGLU(out, n, gate, up, n, 1, n)
		return
	}
	swiglu(out[:n], gate, up[:n])
}

// SwiGLUBackward computes, with s = sigmoid(gate):
//
//	dup[i]   = dout[i] · gate·s
//	dgate[i] = dout[i] · up · s·(1 + gate·(1−s))
//
// overwriting dgate and dup (n each, n = len(gate)). Outputs may alias inputs
// index for index (each element is read before it is written).
func SwiGLUBackward(dgate, dup, dout, gate, up []float32) {
	n := len(gate)
	if len(dgate) < n || len(dup) < n || len(dout) < n || len(up) < n {
		panic(fmt.Sprintf("kernel.SwiGLUBackward: need len(dgate), len(dup), len(dout), len(up) ≥ len(gate)=%d; have dgate %d, dup %d, dout %d, up %d",
			n, len(dgate), len(dup), len(dout), len(up)))
	}
	if useNative() && n >= nativeMinElems {
		nativeSwiGLUBackward(dgate, dup, dout, n, gate, up, n, 1, n)
		return
	}
	swigluBackward(dgate[:n], dup[:n], dout[:n], gate, up[:n])
}

// SwiGLUFused is SwiGLU on a fused gate_up projection: gu (T, 2F) holds the
// gate in columns [0, F) and up in [F, 2F) of each row (the gate_up_proj
// layout of fused checkpoints, and the output of one GEMM with the two weight
// matrices stacked); out (T, F).
func SwiGLUFused(out, gu []float32, T, F int) {
	if T < 0 || F < 0 || len(out) < T*F || len(gu) < 2*T*F {
		panic(fmt.Sprintf("kernel.SwiGLUFused: T=%d F=%d need len(out) ≥ T·F, len(gu) ≥ T·2F; have out %d, gu %d", T, F, len(out), len(gu)))
	}
	if useNative() && T*F >= nativeMinElems {
		nativeSwiGLU(out, F, gu, gu[F:], 2*F, T, F)
		return
	}
	for t := 0; t < T; t++ {
		row := gu[2*t*F : 2*t*F+2*F]
		swiglu(out[t*F:t*F+F], row[:F], row[F:])
	}
}

// SwiGLUFusedBackward is SwiGLUBackward for the fused layout: dgu (T, 2F) is
// overwritten, gate gradients in columns [0, F), up gradients in [F, 2F);
// dout (T, F); gu (T, 2F) as given to SwiGLUFused. dgu may alias gu.
func SwiGLUFusedBackward(dgu, dout, gu []float32, T, F int) {
	if T < 0 || F < 0 || len(dgu) < 2*T*F || len(dout) < T*F || len(gu) < 2*T*F {
		panic(fmt.Sprintf("kernel.SwiGLUFusedBackward: T=%d F=%d need len(dgu), len(gu) ≥ T·2F, len(dout) ≥ T·F; have dgu %d, dout %d, gu %d",
			T, F, len(dgu), len(dout), len(gu)))
	}
	if useNative() && T*F >= nativeMinElems {
		nativeSwiGLUBackward(dgu, dgu[F:], dout, F, gu, gu[F:], 2*F, T, F)
		return
	}
	for t := 0; t < T; t++ {
		row := gu[2*t*F : 2*t*F+2*F]
		drow := dgu[2*t*F : 2*t*F+2*F]
		swigluBackward(drow[:F], drow[F:], dout[t*F:t*F+F], row[:F], row[F:])
	}
}

// swiglu is the loop of SwiGLU; len(out) = len(up) = len(gate).
func swiglu(out, gate, up []float32) {
	out, up = out[:len(gate)], up[:len(gate)]
	for i, g := range gate {
		out[i] = g * up[i] / (1 + expPoly(-g))
	}
}

// swigluBackward is the loop of SwiGLUBackward; all lengths equal len(gate).
// As in SiLUBackward, gate is clamped below at −88 (silu and its slope are
// below 1e-36 in magnitude there) and 1−s is formed as e^(−g)·s.
func swigluBackward(dgate, dup, dout, gate, up []float32) {
	n := len(gate)
	dgate, dup, dout, up = dgate[:n], dup[:n], dout[:n], up[:n]
	for i, g := range gate {
		u, d := up[i], dout[i]
		g = max(g, -expArgCap)
		e := expPoly(-g)
		s := 1 / (1 + e)
		dup[i] = d * g * s
		dgate[i] = d * u * s * (1 + g*(e*s))
	}
}
