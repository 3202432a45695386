package moe

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func randVec(rng *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * scale)
	}
	return v
}

// testLayer is a Layer with its router (E, D) and auxiliary-loss
// coefficients, as a model block holds them.
type testLayer struct {
	*Layer
	router         []float32
	auxCoef, zCoef float64
}

func newTestLayer(rng *rand.Rand, normalize bool, capacity float64) *testLayer {
	D, F, E, K := 6, 5, 4, 2
	return &testLayer{Layer: &Layer{D: D, F: F, E: E, K: K, Normalize: normalize, Capacity: capacity,
		W13: randVec(rng, E*2*F*D, 0.5), W2: randVec(rng, E*D*F, 0.5)},
		router: randVec(rng, E*D, 0.8), auxCoef: 0.3, zCoef: 0.05}
}

func (l *testLayer) forward(y, x []float32, T int, act *Activations) {
	logits := make([]float32, T*l.E)
	for t := 0; t < T; t++ {
		for e := 0; e < l.E; e++ {
			var s float32
			for i := 0; i < l.D; i++ {
				s += x[t*l.D+i] * l.router[e*l.D+i]
			}
			logits[t*l.E+e] = s
		}
	}
	if err := l.Forward(context.Background(), y, x, logits, T, act); err != nil {
		panic(err)
	}
}

// loss is sum(y * r) + the weighted auxiliary losses, in float64.
func (l *testLayer) loss(x, r []float32, T int) (float64, []int32) {
	y := make([]float32, T*l.D)
	var act Activations
	l.forward(y, x, T, &act)
	st := NewAuxStats(l.E)
	st.Add(&act)
	s := l.auxCoef*st.Balance() + l.zCoef*st.Z()
	for i := range y {
		s += float64(y[i]) * float64(r[i])
	}
	return s, act.routing.IDsTK
}

// backward returns the router gradient and adds the input gradient to dx.
func (l *testLayer) backward(dx, dy []float32, act *Activations, g *Grads) []float32 {
	T, E, D := act.T, l.E, l.D
	st := NewAuxStats(E)
	st.Add(act)
	dprob, zs := st.Grad(nil, l.auxCoef, l.zCoef)
	dlogits := make([]float32, T*E)
	if err := l.Backward(context.Background(), dx, dlogits, dy, act, g, dprob, zs); err != nil {
		panic(err)
	}
	grouter := make([]float32, E*D)
	for t := 0; t < T; t++ {
		for e := 0; e < E; e++ {
			for i := 0; i < D; i++ {
				grouter[e*D+i] += dlogits[t*E+e] * act.x[t*D+i]
				dx[t*D+i] += dlogits[t*E+e] * l.router[e*D+i]
			}
		}
	}
	return grouter
}

// TestLayerGradients checks every parameter's and the input's gradient
// against central finite differences, with and without renormalisation and
// capacity dropping. Coordinates whose perturbation changes the top-k choice
// are skipped: the loss is not differentiable there.
func TestLayerGradients(t *testing.T) {
	for _, tc := range []struct {
		name      string
		normalize bool
		capacity  float64
	}{{"renorm-dropless", true, 0}, {"no-renorm-dropless", false, 0}, {"renorm-capacity", true, 0.75}} {
		t.Run(tc.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, 9))
			l := newTestLayer(rng, tc.normalize, tc.capacity)
			T := 7
			x := randVec(rng, T*l.D, 1)
			r := randVec(rng, T*l.D, 1)
			var act Activations
			y := make([]float32, T*l.D)
			l.forward(y, x, T, &act)
			if tc.capacity > 0 && act.plan.Dropped == 0 {
				t.Fatal("capacity case dropped nothing: the test would not cover dropping")
			}
			g := l.NewGrads()
			dx := make([]float32, T*l.D)
			grouter := l.backward(dx, r, &act, g)
			_, ids0 := l.loss(x, r, T)
			for _, p := range []struct {
				name string
				w, g []float32
			}{{"router", l.router, grouter}, {"w13", l.W13, g.W13}, {"w2", l.W2, g.W2}, {"x", x, dx}} {
				const h = 1e-2
				var num, den float64
				checked := 0
				for i := range p.w {
					old := p.w[i]
					p.w[i] = old + h
					lp, idp := l.loss(x, r, T)
					p.w[i] = old - h
					lm, idm := l.loss(x, r, T)
					p.w[i] = old
					if !slices.Equal(idp, ids0) || !slices.Equal(idm, ids0) {
						continue
					}
					fd := (lp - lm) / (2 * h)
					num += (fd - float64(p.g[i])) * (fd - float64(p.g[i]))
					den += fd * fd
					checked++
				}
				if checked < len(p.w)/2 {
					t.Fatalf("%s: only %d of %d coordinates kept the routing", p.name, checked, len(p.w))
				}
				if e := math.Sqrt(num / math.Max(den, 1e-30)); !(e < 5e-3) {
					t.Fatalf("%s: gradient rel err %g over %d coordinates", p.name, e, checked)
				}
			}
		})
	}
}

// TestOneExpertTop1IsDenseMLP: one expert with top-1 routes every token to
// it with weight 1, so the layer is a SwiGLU MLP, forward and backward.
func TestOneExpertTop1IsDenseMLP(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	D, F, T := 6, 5, 9
	l := &testLayer{Layer: &Layer{D: D, F: F, E: 1, K: 1, Normalize: false, W13: randVec(rng, 2*F*D, 0.5), W2: randVec(rng, D*F, 0.5)},
		router: randVec(rng, D, 1)}
	W1, W3 := l.W13[:F*D], l.W13[F*D:] // the one expert's gate and up projections
	x := randVec(rng, T*D, 1)
	y := make([]float32, T*D)
	var act Activations
	l.forward(y, x, T, &act)
	for tok := 0; tok < T; tok++ {
		for j := 0; j < D; j++ {
			var want float64
			for f := 0; f < F; f++ {
				var g1, g3 float64
				for i := 0; i < D; i++ {
					g1 += float64(W1[f*D+i]) * float64(x[tok*D+i])
					g3 += float64(W3[f*D+i]) * float64(x[tok*D+i])
				}
				want += float64(l.W2[j*F+f]) * g1 / (1 + math.Exp(-g1)) * g3
			}
			if got := float64(y[tok*D+j]); math.Abs(got-want) > 1e-4*math.Max(1, math.Abs(want)) {
				t.Fatalf("y[%d,%d] = %g, dense MLP %g", tok, j, got, want)
			}
		}
	}
	// The router gets no gradient from the output: softmax over one expert is 1.
	g := l.NewGrads()
	dx := make([]float32, T*D)
	dy := randVec(rng, T*D, 1)
	grouter := l.backward(dx, dy, &act, g)
	for _, v := range grouter {
		if math.Abs(float64(v)) > 1e-6 {
			t.Fatalf("router gradient %g with a single expert", v)
		}
	}
	// Backward equals the dense MLP's, computed in float64.
	wdx, wW1, wW3, wW2 := make([]float64, T*D), make([]float64, F*D), make([]float64, F*D), make([]float64, D*F)
	for tok := 0; tok < T; tok++ {
		xt := x[tok*D : (tok+1)*D]
		for f := 0; f < F; f++ {
			var g1, g3, da float64
			for i := 0; i < D; i++ {
				g1 += float64(W1[f*D+i]) * float64(xt[i])
				g3 += float64(W3[f*D+i]) * float64(xt[i])
			}
			for j := 0; j < D; j++ {
				da += float64(dy[tok*D+j]) * float64(l.W2[j*F+f])
			}
			s := 1 / (1 + math.Exp(-g1))
			a := g1 * s * g3
			for j := 0; j < D; j++ {
				wW2[j*F+f] += float64(dy[tok*D+j]) * a
			}
			dg := da * g3 * s * (1 + g1*(1-s))
			du := da * g1 * s
			for i := 0; i < D; i++ {
				wW1[f*D+i] += dg * float64(xt[i])
				wW3[f*D+i] += du * float64(xt[i])
				wdx[tok*D+i] += dg*float64(W1[f*D+i]) + du*float64(W3[f*D+i])
			}
		}
	}
	for _, c := range []struct {
		name string
		got  []float32
		want []float64
	}{{"dx", dx, wdx}, {"dW1", g.W13[:F*D], wW1}, {"dW3", g.W13[F*D:], wW3}, {"dW2", g.W2, wW2}} {
		for i, w := range c.want {
			if math.Abs(float64(c.got[i])-w) > 1e-4*math.Max(1, math.Abs(w)) {
				t.Fatalf("%s[%d] = %g, dense MLP %g", c.name, i, c.got[i], w)
			}
		}
	}
}
