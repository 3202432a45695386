package kernel

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

// TestAdamWHandExample: one parameter, p = 1, lr 0.1, betas (0.9, 0.999),
// eps 1e-8, weight decay 0.01, gradients 0.5 then −0.25. By hand, in exact
// decimals:
//
//	step 1: p = 1·0.999 = 0.999; m = 0.05; v = 0.00025; bc1 = 0.1, bc2 = 0.001
//	        denom = sqrt(0.00025/0.001) + 1e-8 = 0.50000001
//	        p = 0.999 − (0.1/0.1)·0.05/0.50000001 = 0.899000002
//	step 2: p = 0.899000002·0.999 = 0.898101002; m = 0.045 − 0.025 = 0.02;
//	        v = 0.00024975 + 0.0000625 = 0.00031225; bc1 = 0.19, bc2 = 0.001999
//	        denom = sqrt(0.00031225/0.001999) + 1e-8 = 0.39522539
//	        p = 0.898101002 − (0.1/0.19)·0.02/0.39522539 = 0.871467299
//
// The kernel takes float32 hyperparameters: float32(0.999) = 0.99900001287…,
// so 1−β2 is 0.99998713e-3 and v comes out 1.3e-5 relative below the decimal
// value (0.00024999678 after step 1, 0.00031224598 after step 2); m is off
// by ~2e-7 relative for the same reason. The bounds below allow exactly that.
func TestAdamWHandExample(t *testing.T) {
	for _, c := range []struct {
		name string
		fn   func(param, grad, m, v []float32, step int, lr, beta1, beta2, eps, weightDecay float32)
	}{{"fast", AdamW}, {"ref", AdamWRef}} {
		t.Run(c.name, func(t *testing.T) {
			p, m, v := []float32{1}, []float32{0}, []float32{0}
			near := func(got float32, want, tol float64) bool { return math.Abs(float64(got)-want) <= tol*math.Abs(want) }
			c.fn(p, []float32{0.5}, m, v, 1, 0.1, 0.9, 0.999, 1e-8, 0.01)
			if !near(p[0], 0.899000002, 2e-7) || !near(m[0], 0.05, 3e-7) || !near(v[0], 0.00025, 1.4e-5) || !near(v[0], 0.00024999678, 1e-7) {
				t.Fatalf("step 1: p %.10g m %.10g v %.10g, want 0.899000002 0.05 0.00024999678", p[0], m[0], v[0])
			}
			c.fn(p, []float32{-0.25}, m, v, 2, 0.1, 0.9, 0.999, 1e-8, 0.01)
			if !near(p[0], 0.871467299, 2e-7) || !near(m[0], 0.02, 3e-7) || !near(v[0], 0.00031225, 1.4e-5) || !near(v[0], 0.00031224598, 1e-7) {
				t.Fatalf("step 2: p %.10g m %.10g v %.10g, want 0.871467299 0.02 0.00031224598", p[0], m[0], v[0])
			}
		})
	}
}

// adamWCases run AdamW and its twin side by side: sizes below and above
// nativeMinElems, with tails of every width mod 16 among them.
var adamWCases = []adamWCase{
	{"n1-default", 1, adamWHyper{1e-3, 0.9, 0.999, 1e-8, 0.01}, 1},
	{"n3-train-tiny", 3, adamWHyper{1e-2, 0.9, 0.999, 1e-8, 0.1}, 1},
	{"n17-no-decay", 17, adamWHyper{3e-4, 0.9, 0.95, 1e-8, 0}, 1},
	{"n1000-low-beta1", 1000, adamWHyper{1e-3, 0.3, 0.999, 1e-6, 0.05}, 1}, // the other lerp branch
	{"n4099-late", 4099, adamWHyper{1e-3, 0.9, 0.999, 1e-8, 0.01}, 10000},
	{"n256-exact", 256, adamWHyper{1e-3, 0.9, 0.999, 1e-8, 0.01}, 1},
	{"n263-tail", 263, adamWHyper{3e-4, 0.9, 0.95, 1e-8, 0.1}, 1},
	{"n1021-low-beta1-tail", 1021, adamWHyper{1e-3, 0.3, 0.999, 1e-6, 0.05}, 1},
}

type adamWCase struct {
	name  string
	n     int
	h     adamWHyper
	step0 int // first step number: late steps have bc ≈ 1
}

type adamWHyper struct{ lr, b1, b2, eps, wd float32 }

func TestAdamWMatchesRef(t *testing.T) {
	forLevels(t, testAdamWMatchesRef)
}

func testAdamWMatchesRef(t *testing.T) {
	cases := slices.Clone(adamWCases)
	rng := newRNG(1099) // random sizes on top of the fixed ones
	for range 4 {
		n := nativeMinElems + rng.IntN(3000)
		cases = append(cases, adamWCase{fmt.Sprintf("n%d-random", n), n, adamWHyper{1e-3, 0.9, 0.999, 1e-8, 0.01}, 1})
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := newRNG(1100 + uint64(i))
			p := randSlice(rng, c.n)
			m, v := make([]float32, c.n), make([]float32, c.n)
			pRef, mRef, vRef := clone32(p), clone32(m), clone32(v)
			h := c.h
			for s := c.step0; s < c.step0+5; s++ {
				g := randSlice(rng, c.n)
				// One step from the same state: each parameter within a few
				// float32 roundings of its operands (old value, update) of
				// the twin; a result near 0 cannot be held to its own ulp.
				p0 := clone32(p)
				p1, m1, v1 := clone32(p), clone32(m), clone32(v)
				AdamWRef(p1, g, m1, v1, s, h.lr, h.b1, h.b2, h.eps, h.wd)
				AdamW(p, g, m, v, s, h.lr, h.b1, h.b2, h.eps, h.wd)
				for j := range p {
					old, upd := math.Abs(float64(p0[j])), math.Abs(float64(p1[j]-p0[j]))
					if d := math.Abs(float64(p[j] - p1[j])); d > 0x1p-22*(old+upd) {
						t.Fatalf("step %d param[%d]: %g, ref %g (from %g)", s, j, p[j], p1[j], p0[j])
					}
				}
				checkRel(t, fmt.Sprintf("step %d m", s), m, m1, 1e-6)
				checkRel(t, fmt.Sprintf("step %d v", s), v, v1, 1e-6)
				// Trajectories run apart (rounding differences accumulate) but
				// stay within 1e-6.
				AdamWRef(pRef, g, mRef, vRef, s, h.lr, h.b1, h.b2, h.eps, h.wd)
				checkRel(t, fmt.Sprintf("step %d trajectory param", s), p, pRef, 1e-6)
				checkRel(t, fmt.Sprintf("step %d trajectory m", s), m, mRef, 1e-6)
				checkRel(t, fmt.Sprintf("step %d trajectory v", s), v, vRef, 1e-6)
			}
		})
	}
}

// TestAdamWTiersBitIdentical: the C kernels round every operation as the Go
// loop does, so each tier gives the portable path's bits (the training
// fixtures compare weights across steps at 1e-5).
func TestAdamWTiersBitIdentical(t *testing.T) {
	for i, c := range adamWCases {
		h := c.h
		rng := newRNG(1200 + uint64(i))
		p0, g := randSlice(rng, c.n), randSlice(rng, c.n)
		m0, v0 := randSlice(rng, c.n), randSlice(rng, c.n)
		for j := range v0 {
			v0[j] *= v0[j] * 1e-3 // second moments are non-negative
			m0[j] *= 1e-2
		}
		run := func() (p, m, v []float32) {
			p, m, v = clone32(p0), clone32(m0), clone32(v0)
			for s := c.step0; s < c.step0+3; s++ {
				AdamW(p, g, m, v, s, h.lr, h.b1, h.b2, h.eps, h.wd)
			}
			return p, m, v
		}
		prev := SetLevel(LevelGeneric)
		wp, wm, wv := run()
		SetLevel(prev)
		forLevels(t, func(t *testing.T) {
			p, m, v := run()
			for j := range p {
				if p[j] != wp[j] || m[j] != wm[j] || v[j] != wv[j] {
					t.Fatalf("%s [%d]: p %g m %g v %g, portable %g %g %g", c.name, j, p[j], m[j], v[j], wp[j], wm[j], wv[j])
				}
			}
		})
	}
}

// TestAdamWRefFloat64 holds the float64 twin to the algorithm as PyTorch's
// documentation states it (bias-corrected moments m̂, v̂, then
// p −= lr·m̂/(sqrt(v̂) + eps)), over a few steps.
func TestAdamWRefFloat64(t *testing.T) {
	p, m, v := []float64{0.3}, []float64{0}, []float64{0}
	wp, wm, wv := 0.3, 0.0, 0.0
	const lr, b1, b2, eps, wd = 0.01, 0.9, 0.99, 1e-8, 0.1
	for s, g := range []float64{0.1, -0.2, 0.05, 0.4} {
		step := float64(s + 1)
		adamWRef(p, []float64{g}, m, v, s+1, lr, b1, b2, eps, wd)
		wp -= lr * wd * wp
		wm = b1*wm + (1-b1)*g
		wv = b2*wv + (1-b2)*g*g
		mhat := wm / (1 - math.Pow(b1, step))
		vhat := wv / (1 - math.Pow(b2, step))
		wp -= lr * mhat / (math.Sqrt(vhat) + eps)
		if math.Abs(p[0]-wp) > 1e-15 || math.Abs(m[0]-wm) > 1e-15 || math.Abs(v[0]-wv) > 1e-15 {
			t.Fatalf("step %d: p %.17g m %g v %g, want %.17g %g %g", s+1, p[0], m[0], v[0], wp, wm, wv)
		}
	}
}

func TestAdamWPanics(t *testing.T) {
	x := make([]float32, 4)
	mustPanic(t, "step 0", func() { AdamW(x, x, x, x, 0, 1e-3, 0.9, 0.999, 1e-8, 0) })
	mustPanic(t, "short grad", func() { AdamW(x, x[:3], x, x, 1, 1e-3, 0.9, 0.999, 1e-8, 0) })
	mustPanic(t, "short v", func() { AdamW(x, x, x, x[:3], 1, 1e-3, 0.9, 0.999, 1e-8, 0) })
}

func BenchmarkAdamW(b *testing.B) {
	const n = 1 << 22 // 4M parameters (112 MiB of state traffic per step): beyond the caches
	rng := newRNG(1)
	p, g := randSlice(rng, n), randSlice(rng, n)
	m, v := make([]float32, n), make([]float32, n)
	b.ReportAllocs()
	b.SetBytes(28 * n) // read param, grad, m, v; write param, m, v
	step := 0
	for b.Loop() {
		step++
		AdamW(p, g, m, v, step, 1e-3, 0.9, 0.999, 1e-8, 0.01)
	}
}
