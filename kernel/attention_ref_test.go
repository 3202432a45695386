package kernel

import (
	"math"
	"testing"
)

// TestAttentionRefHandExample: Dh = 1, q = (1, 2), k = (0.5, −1), v = (3, 5),
// scale 1. Token 0 sees only key 0: out 3. Token 1 sees both, scores (1, −2):
// out = (3e + 5e⁻²)/(e + e⁻²).
func TestAttentionRefHandExample(t *testing.T) {
	out := make([]float32, 2)
	AttentionRef(out, []float32{1, 2}, []float32{0.5, -1}, []float32{3, 5}, 2, 2, 1, 1, 1, 0, 0, 1)
	e1, e2 := math.E, math.Exp(-2)
	checkRel(t, "out", out, []float32{3, float32((3*e1 + 5*e2) / (e1 + e2))}, 1e-7)
}

// attnRefCases are the shapes the reference tests run: decode against a cache,
// chunks after a cache, GQA, sliding windows, odd head dims.
var attnRefCases = []struct {
	name                         string
	T, S, H, G, Dh, pos0, window int
}{
	{"single", 1, 1, 1, 1, 1, 0, 0},
	{"prefill", 5, 5, 2, 2, 3, 0, 0},
	{"gqa", 7, 7, 4, 2, 8, 0, 0},
	{"mqa-window", 9, 9, 3, 1, 5, 0, 3},
	{"decode", 1, 17, 4, 2, 16, 16, 0},
	{"chunk-window", 6, 20, 2, 1, 4, 14, 4},
	{"window1", 4, 4, 2, 2, 3, 0, 1},
}

// TestAttentionRefProperties checks the masking and head mapping by
// identities rather than by recomputation:
//   - window ≥ S is the same as no window;
//   - window 1: each token sees only itself, so out = its own v;
//   - GQA equals full multi-head attention with each KV head repeated;
//   - a chunk at pos0 equals the same rows of a full prefill (causality).
func TestAttentionRefProperties(t *testing.T) {
	for i, c := range attnRefCases {
		t.Run(c.name, func(t *testing.T) {
			rng := newRNG(1300 + uint64(i))
			q := randSlice(rng, c.T*c.H*c.Dh)
			k, v := randSlice(rng, c.S*c.G*c.Dh), randSlice(rng, c.S*c.G*c.Dh)
			scale := float32(1 / math.Sqrt(float64(c.Dh)))
			out := nanSlice(c.T * c.H * c.Dh)
			AttentionRef(out, q, k, v, c.T, c.S, c.H, c.G, c.Dh, c.pos0, c.window, scale)

			if c.window == 0 {
				wide := nanSlice(len(out))
				AttentionRef(wide, q, k, v, c.T, c.S, c.H, c.G, c.Dh, c.pos0, c.S, scale)
				checkRel(t, "window ≥ S", wide, out, 0)
			}
			if c.window == 1 {
				for tk := 0; tk < c.T; tk++ {
					for h := 0; h < c.H; h++ {
						g := h / (c.H / c.G)
						for d := 0; d < c.Dh; d++ {
							if got, want := out[(tk*c.H+h)*c.Dh+d], v[((c.pos0+tk)*c.G+g)*c.Dh+d]; got != want {
								t.Fatalf("window 1: out[%d,%d,%d] = %g, want own v %g", tk, h, d, got, want)
							}
						}
					}
				}
			}
			// Repeat KV heads to H and compare.
			rep := c.H / c.G
			kf, vf := make([]float32, c.S*c.H*c.Dh), make([]float32, c.S*c.H*c.Dh)
			for s := 0; s < c.S; s++ {
				for h := 0; h < c.H; h++ {
					copy(kf[(s*c.H+h)*c.Dh:(s*c.H+h+1)*c.Dh], k[(s*c.G+h/rep)*c.Dh:])
					copy(vf[(s*c.H+h)*c.Dh:(s*c.H+h+1)*c.Dh], v[(s*c.G+h/rep)*c.Dh:])
				}
			}
			full := nanSlice(len(out))
			AttentionRef(full, q, kf, vf, c.T, c.S, c.H, c.H, c.Dh, c.pos0, c.window, scale)
			checkRel(t, "GQA vs repeated heads", full, out, 0)
			// The chunk's rows inside a prefill of all S positions.
			qAll := randSlice(rng, c.S*c.H*c.Dh)
			copy(qAll[c.pos0*c.H*c.Dh:], q)
			all := nanSlice(c.S * c.H * c.Dh)
			AttentionRef(all, qAll, k, v, c.S, c.S, c.H, c.G, c.Dh, 0, c.window, scale)
			checkRel(t, "chunk vs prefill rows", out, all[c.pos0*c.H*c.Dh:(c.pos0+c.T)*c.H*c.Dh], 0)
		})
	}
}

func TestAttentionBackwardRefGradFD(t *testing.T) {
	for i, c := range attnRefCases {
		t.Run(c.name, func(t *testing.T) {
			rng := newRNG(1400 + uint64(i))
			q := randSlice64(rng, c.T*c.H*c.Dh)
			k, v := randSlice64(rng, c.S*c.G*c.Dh), randSlice64(rng, c.S*c.G*c.Dh)
			dout := randSlice64(rng, c.T*c.H*c.Dh)
			scale := 1.3 / math.Sqrt(float64(c.Dh))
			out := make([]float64, len(q))
			loss := func() float64 {
				attentionRef(out, q, k, v, c.T, c.S, c.H, c.G, c.Dh, c.pos0, c.window, scale)
				return dot64(out, dout)
			}
			dq, dk, dv := make([]float64, len(q)), make([]float64, len(k)), make([]float64, len(v))
			attentionBackwardRef(dq, dk, dv, dout, q, k, v, c.T, c.S, c.H, c.G, c.Dh, c.pos0, c.window, scale)
			checkGrad(t, "dq", dq, fdGrad(q, 1e-6, loss), 1e-7)
			checkGrad(t, "dk", dk, fdGrad(k, 1e-6, loss), 1e-7)
			checkGrad(t, "dv", dv, fdGrad(v, 1e-6, loss), 1e-7)
		})
	}
}

// TestAttentionBackwardRefFloat32 checks the exported float32 wrapper against
// the float64 body, and that keys no query sees get zero gradient.
func TestAttentionBackwardRefFloat32(t *testing.T) {
	const T, S, H, G, Dh, pos0, window = 3, 8, 2, 1, 4, 5, 2
	rng := newRNG(1450)
	q, k, v, dout := randSlice(rng, T*H*Dh), randSlice(rng, S*G*Dh), randSlice(rng, S*G*Dh), randSlice(rng, T*H*Dh)
	dq, dk, dv := nanSlice(T*H*Dh), nanSlice(S*G*Dh), nanSlice(S*G*Dh)
	AttentionBackwardRef(dq, dk, dv, dout, q, k, v, T, S, H, G, Dh, pos0, window, 0.5)
	to64 := func(x []float32) []float64 {
		y := make([]float64, len(x))
		for i, f := range x {
			y[i] = float64(f)
		}
		return y
	}
	dq64, dk64, dv64 := make([]float64, len(dq)), make([]float64, len(dk)), make([]float64, len(dv))
	attentionBackwardRef(dq64, dk64, dv64, to64(dout), to64(q), to64(k), to64(v), T, S, H, G, Dh, pos0, window, 0.5)
	for _, p := range []struct {
		name string
		got  []float32
		want []float64
	}{{"dq", dq, dq64}, {"dk", dk, dk64}, {"dv", dv, dv64}} {
		if e := relErr64(to64(p.got), p.want); !(e < 1e-7) {
			t.Errorf("%s: float32 wrapper vs float64 body: %g", p.name, e)
		}
	}
	// Queries at 5, 6, 7 with window 2 see keys 4..7: keys 0..3 get nothing.
	for i := 0; i < 4*G*Dh; i++ {
		if dk[i] != 0 || dv[i] != 0 {
			t.Fatalf("unseen key %d: dk %g dv %g, want 0", i/(G*Dh), dk[i], dv[i])
		}
	}
}

func TestAttentionRefPanics(t *testing.T) {
	x := make([]float32, 64)
	mustPanic(t, "pos0+T > S", func() { AttentionRef(x, x, x, x, 2, 2, 1, 1, 4, 1, 0, 1) })
	mustPanic(t, "H % G", func() { AttentionRef(x, x, x, x, 1, 1, 3, 2, 4, 0, 0, 1) })
	mustPanic(t, "short q", func() { AttentionRef(x, x[:7], x, x, 2, 2, 1, 1, 4, 0, 0, 1) })
	mustPanic(t, "backward short dk", func() {
		AttentionBackwardRef(x, x[:7], x, x, x, x, x, 2, 2, 1, 1, 4, 0, 0, 1)
	})
}
