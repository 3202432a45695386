package moe

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/moesys/moesys/dist"
)

// Expert parallelism over W = 1, 2, 4 in-process ranks gives what one
// layer holding every expert gives on all the ranks' tokens together: the
// same routing, outputs, input and routing gradients, and each rank's
// expert gradients are the global ones of its experts (to rounding: the
// rows are summed in another order). Ranks hold different token counts,
// one of them none.
func TestEPMatchesOneLayer(t *testing.T) {
	const D, F, E, K = 6, 5, 8, 2
	rng := rand.New(rand.NewPCG(31, 32))
	W13, W2 := randVec(rng, E*2*F*D, 0.5), randVec(rng, E*D*F, 0.5)
	router := randVec(rng, E*D, 0.8)
	for _, W := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("W%d", W), func(t *testing.T) {
			tokens := []int{5, 0, 7, 3}[:W]
			if W == 1 {
				tokens = []int{9}
			}
			T := 0
			for _, n := range tokens {
				T += n
			}
			x, dy := randVec(rng, T*D, 1), randVec(rng, T*D, 1)
			ref := &testLayer{Layer: &Layer{D: D, F: F, E: E, K: K, Normalize: true, W13: W13, W2: W2}, router: router}
			y0 := make([]float32, T*D)
			var act0 Activations
			ref.forward(y0, x, T, &act0)
			g0 := ref.NewGrads()
			dx0 := make([]float32, T*D)
			gr0 := ref.backward(dx0, dy, &act0, g0)

			comms, err := dist.NewLocal(W)
			if err != nil {
				t.Fatal(err)
			}
			type out struct {
				y, dx, gr []float32
				g         *Grads
				ids       []int32
			}
			outs := make([]out, W)
			errs := make([]error, W)
			var wg sync.WaitGroup
			for r, c := range comms {
				wg.Go(func() {
					defer func() {
						if p := recover(); p != nil {
							errs[r] = fmt.Errorf("panic: %v", p)
						}
					}()
					ep, err := NewEP(c, E)
					if err != nil {
						errs[r] = err
						return
					}
					first, El := ep.LocalExperts()
					l := &testLayer{Layer: &Layer{D: D, F: F, E: E, K: K, Normalize: true, Exchange: ep,
						W13: W13[first*2*F*D : (first+El)*2*F*D], W2: W2[first*D*F : (first+El)*D*F]}, router: router}
					t0 := 0
					for q := range r {
						t0 += tokens[q]
					}
					Tr := tokens[r]
					xr, dyr := x[t0*D:(t0+Tr)*D], dy[t0*D:(t0+Tr)*D]
					y := make([]float32, Tr*D)
					var act Activations
					l.forward(y, xr, Tr, &act)
					g := l.NewGrads()
					dx := make([]float32, Tr*D)
					gr := l.backward(dx, dyr, &act, g)
					outs[r] = out{y, dx, gr, g, slices.Clone(act.routing.IDsTK)}
				})
			}
			wg.Wait()
			for r, err := range errs {
				if err != nil {
					t.Fatalf("rank %d: %v", r, err)
				}
			}
			var y, dx []float32
			var ids []int32
			gr := make([]float32, E*D)
			for r := range W {
				y = append(y, outs[r].y...)
				dx = append(dx, outs[r].dx...)
				ids = append(ids, outs[r].ids...)
				for i, v := range outs[r].gr {
					gr[i] += v
				}
			}
			if !slices.Equal(ids, act0.routing.IDsTK) {
				t.Fatalf("routing differs: %v, want %v", ids, act0.routing.IDsTK)
			}
			close := func(name string, got, want []float32, tol float64) {
				t.Helper()
				if len(got) != len(want) {
					t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
				}
				for i := range got {
					if d := math.Abs(float64(got[i] - want[i])); d > tol*(1+math.Abs(float64(want[i]))) {
						t.Fatalf("%s[%d] = %v, want %v", name, i, got[i], want[i])
					}
				}
			}
			close("y", y, y0, 1e-6)
			close("dx", dx, dx0, 1e-6)
			close("router grad", gr, gr0, 1e-5)
			for r := range W {
				first, El := r*E/W, E/W
				close(fmt.Sprintf("rank %d dW13", r), outs[r].g.W13, g0.W13[first*2*F*D:(first+El)*2*F*D], 1e-5)
				close(fmt.Sprintf("rank %d dW2", r), outs[r].g.W2, g0.W2[first*D*F:(first+El)*D*F], 1e-5)
			}
		})
	}
}

func TestNewEPErrors(t *testing.T) {
	comms, err := dist.NewLocal(3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewEP(comms[0], 8); err == nil {
		t.Fatal("8 experts over 3 ranks: no error")
	}
	ep := &EP{Comm: comms[0], E: 6}
	if err := ep.Return(context.Background(), nil, nil, &Plan{E: 6}, 4); err == nil {
		t.Fatal("Return before Send: no error")
	}
}
