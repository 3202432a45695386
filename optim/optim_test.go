package optim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/moesys/moesys/kernel"
)

func randParam(rng *rand.Rand, name string, n int, noDecay bool) *Param {
	p := &Param{Name: name, W: make([]float32, n), G: make([]float32, n), NoDecay: noDecay}
	for i := range p.W {
		p.W[i] = float32(rng.NormFloat64())
	}
	return p
}

// adamwRef is torch.optim.AdamW written out in float64.
func adamwRef(w, m, v []float64, g []float32, step int, lr, b1, b2, eps, wd float64) {
	bc1 := 1 - math.Pow(b1, float64(step))
	bc2 := 1 - math.Pow(b2, float64(step))
	for i := range w {
		w[i] *= 1 - lr*wd
		m[i] = b1*m[i] + (1-b1)*float64(g[i])
		v[i] = b2*v[i] + (1-b2)*float64(g[i])*float64(g[i])
		w[i] -= lr / bc1 * m[i] / (math.Sqrt(v[i])/math.Sqrt(bc2) + eps)
	}
}

func TestAdamWMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	params := []*Param{randParam(rng, "w", 300, false), randParam(rng, "norm", 17, true)}
	cfg := AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1}
	opt, err := NewAdamW(params, cfg)
	if err != nil {
		t.Fatal(err)
	}
	type ref struct{ w, m, v []float64 }
	refs := make([]ref, len(params))
	for i, p := range params {
		refs[i] = ref{make([]float64, len(p.W)), make([]float64, len(p.W)), make([]float64, len(p.W))}
		for j, x := range p.W {
			refs[i].w[j] = float64(x)
		}
	}
	sched := WarmupCosine{Peak: 1e-2, Min: 1e-3, Warmup: 2, Total: 6}
	for step := 0; step < 6; step++ {
		for i, p := range params {
			for j := range p.G {
				p.G[j] = float32(rng.NormFloat64())
			}
			wd := cfg.WeightDecay
			if p.NoDecay {
				wd = 0
			}
			adamwRef(refs[i].w, refs[i].m, refs[i].v, p.G, step+1, sched.LR(step), cfg.Beta1, cfg.Beta2, cfg.Eps, wd)
		}
		opt.Step(sched.LR(step))
	}
	if opt.Steps() != 6 {
		t.Fatalf("Steps() = %d, want 6", opt.Steps())
	}
	for i, p := range params {
		for j := range p.W {
			if d := math.Abs(float64(p.W[j]) - refs[i].w[j]); d > 1e-5*math.Max(1, math.Abs(refs[i].w[j])) {
				t.Fatalf("%s[%d] = %g, reference %g", p.Name, j, p.W[j], refs[i].w[j])
			}
		}
	}
}

func TestNewAdamWRejects(t *testing.T) {
	p := &Param{Name: "x", W: make([]float32, 3), G: make([]float32, 2)}
	if _, err := NewAdamW([]*Param{p}, AdamWConfig{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}); err == nil {
		t.Fatal("mismatched gradient accepted")
	}
	q := &Param{Name: "y", W: make([]float32, 3), G: make([]float32, 3)}
	for _, c := range []AdamWConfig{{Beta1: 1, Beta2: 0.9, Eps: 1e-8}, {Beta1: 0.9, Beta2: 0.9, Eps: 0}, {Beta1: 0.9, Beta2: 0.9, Eps: 1e-8, WeightDecay: -1}} {
		if _, err := NewAdamW([]*Param{q}, c); err == nil {
			t.Fatalf("config %+v accepted", c)
		}
	}
}

func TestClipGradNorm(t *testing.T) {
	mk := func(gs ...float32) []*Param {
		return []*Param{{Name: "a", G: gs[:2]}, {Name: "b", G: gs[2:]}}
	}
	// Norm 5 (3-4 across two params): clipped to 1.
	ps := mk(3, 0, 0, 4)
	if n := ClipGradNorm(ps, 1); math.Abs(n-5) > 1e-12 {
		t.Fatalf("norm %g, want 5", n)
	}
	if n := GradNorm(ps); math.Abs(n-1) > 1e-5 {
		t.Fatalf("norm after clipping %g, want 1", n)
	}
	// Below the threshold: untouched.
	ps = mk(0.3, 0, 0, 0.4)
	ClipGradNorm(ps, 1)
	if ps[0].G[0] != 0.3 || ps[1].G[1] != 0.4 {
		t.Fatal("gradients under the threshold were changed")
	}
	// Non-finite: reported, left alone.
	ps = mk(float32(math.Inf(1)), 1, 1, 1)
	if n := ClipGradNorm(ps, 1); !math.IsInf(n, 1) || ps[0].G[1] != 1 {
		t.Fatalf("non-finite norm %g, gradients changed: %v", n, ps[0].G)
	}
}

func TestWarmupCosine(t *testing.T) {
	s := WarmupCosine{Peak: 1, Min: 0.1, Warmup: 10, Total: 110}
	cases := []struct {
		step int
		want float64
	}{{0, 0.1}, {4, 0.5}, {9, 1}, {10, 1}, {60, 0.55}, {110, 0.1}, {500, 0.1}}
	for _, c := range cases {
		if got := s.LR(c.step); math.Abs(got-c.want) > 1e-12 {
			t.Fatalf("LR(%d) = %g, want %g", c.step, got, c.want)
		}
	}
	for step := 10; step < 110; step++ {
		if s.LR(step+1) > s.LR(step) {
			t.Fatalf("not decreasing after warmup at step %d", step)
		}
	}
}

// TestStepPiecesMatchWholeTensors: AdamW.Step and ClipTo, which cut the
// parameters into pieces spread over the threads, give every element
// exactly what kernel.AdamW and the scale give the whole tensor.
func TestStepPiecesMatchWholeTensors(t *testing.T) {
	prev := kernel.SetThreads(3)
	defer kernel.SetThreads(prev)
	sizes := []int{0, 1, 300, pieceElems - 1, pieceElems, 3*pieceElems + 5, 7}
	mk := func() []*Param {
		var ps []*Param
		for i, n := range sizes {
			p := &Param{Name: fmt.Sprint(i), W: make([]float32, n), G: make([]float32, n), NoDecay: i%2 == 1}
			for j := range p.W {
				p.W[j] = float32(math.Sin(float64(i*7919 + j)))
				p.G[j] = float32(math.Cos(float64(i*104729+j))) * 3
			}
			ps = append(ps, p)
		}
		return ps
	}
	got, want := mk(), mk()
	cfg := AdamWConfig{Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1}
	o, err := NewAdamW(got, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range want {
		p.M, p.V = make([]float32, len(p.W)), make([]float32, len(p.W))
	}
	for step := 1; step <= 3; step++ {
		ClipTo(got, 10, 1)
		o.Step(1e-3)
		for _, p := range want {
			for j := range p.G {
				p.G[j] *= ClipScale(10, 1)
			}
			wd := cfg.WeightDecay
			if p.NoDecay {
				wd = 0
			}
			kernel.AdamW(p.W, p.G, p.M, p.V, step, 1e-3, 0.9, 0.95, 1e-8, float32(wd))
		}
	}
	for i := range got {
		for _, s := range [][2][]float32{{got[i].W, want[i].W}, {got[i].G, want[i].G}, {got[i].M, want[i].M}, {got[i].V, want[i].V}} {
			for j := range s[0] {
				if math.Float32bits(s[0][j]) != math.Float32bits(s[1][j]) {
					t.Fatalf("tensor %d (%d elements) element %d: %g, want %g", i, sizes[i], j, s[0][j], s[1][j])
				}
			}
		}
	}
}

func TestForPiecesCoversEachElementOnce(t *testing.T) {
	sizes := []int{0, 5, pieceElems, 2*pieceElems + 1, 5*pieceElems - 3}
	var ps []*Param
	hits := make([][]int32, len(sizes))
	for i, n := range sizes {
		ps = append(ps, &Param{W: make([]float32, n)})
		hits[i] = make([]int32, n)
	}
	idx := map[*Param]int{}
	for i, p := range ps {
		idx[p] = i
	}
	forPieces(ps, func(p *Param) int { return len(p.W) }, func(p *Param, lo, hi int) {
		if hi-lo < min(pieceElems, len(p.W)) {
			t.Errorf("piece [%d, %d) of %d elements is below %d", lo, hi, len(p.W), pieceElems)
		}
		for j := lo; j < hi; j++ {
			atomic.AddInt32(&hits[idx[p]][j], 1)
		}
	})
	for i, h := range hits {
		for j, c := range h {
			if c != 1 {
				t.Fatalf("tensor %d element %d covered %d times", i, j, c)
			}
		}
	}
}
