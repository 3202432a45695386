package model

import (
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

// refNet is the slow twin of Net: the same model written as plain float64
// loops over a name -> weights map, used for finite differences.
type refNet struct {
	c     *Config
	w     map[string][]float64
	noise [][]float32 // per layer router jitter (from the Net under test), or nil
}

func newRefNet(n *Net) *refNet {
	r := &refNet{c: n.Cfg, w: map[string][]float64{}}
	for name, p := range n.byName {
		if len(p.Name) > 0 && p.Name == name {
			w := make([]float64, len(p.W))
			for i, v := range p.W {
				w[i] = float64(v)
			}
			r.w[name] = w
		}
	}
	return r
}

func refRMS(x, w []float64, eps float64) []float64 {
	var s float64
	for _, v := range x {
		s += v * v
	}
	rs := 1 / math.Sqrt(s/float64(len(x))+eps)
	out := make([]float64, len(x))
	for i := range x {
		out[i] = x[i] * rs * w[i]
	}
	return out
}

// refLinear returns W x for W (O, I).
func refLinear(w, x []float64, O int) []float64 {
	I := len(x)
	y := make([]float64, O)
	for o := 0; o < O; o++ {
		var s float64
		for i := 0; i < I; i++ {
			s += w[o*I+i] * x[i]
		}
		y[o] = s
	}
	return y
}

func refSiLU(x float64) float64 { return x / (1 + math.Exp(-x)) }

func refMLP(w1, w3, w2, x []float64, F int) []float64 {
	g, u := refLinear(w1, x, F), refLinear(w3, x, F)
	a := make([]float64, F)
	for i := range a {
		a[i] = refSiLU(g[i]) * u[i]
	}
	return refLinear(w2, a, len(x))
}

// refRope rotates one head vector in place (rotate_half convention).
func refRope(x []float64, pos, rot int, theta float64) {
	h := rot / 2
	for i := 0; i < h; i++ {
		ang := float64(pos) * math.Pow(theta, -2*float64(i)/float64(rot))
		c, s := math.Cos(ang), math.Sin(ang)
		a, b := x[i], x[i+h]
		x[i], x[i+h] = a*c-b*s, b*c+a*s
	}
}

// loss returns the total loss and each MoE layer's kept routing (expert id
// per slot, -1 when dropped), whose change under a perturbation makes the
// loss non-differentiable there.
func (r *refNet) loss(ids, tgt []int32, B, T int) (float64, []int32) {
	c, sp := r.c, SpecFor(r.c.Arch)
	D, H, G, Dh, E, K := c.D, c.H, c.G, c.Dh, c.E, c.K
	N := B * T
	x := make([][]float64, N)
	for t := range x {
		x[t] = slices.Clone(r.w[sp.Embed()][int(ids[t])*D : (int(ids[t])+1)*D])
	}
	route := map[int][][]float64{}
	var counts, probSum []float64 = make([]float64, E), make([]float64, E)
	var lse2 float64
	rows := 0
	var sig []int32
	for l := 0; l < c.L; l++ {
		// Attention.
		q, k, v := make([][]float64, N), make([][]float64, N), make([][]float64, N)
		for t := 0; t < N; t++ {
			h := refRMS(x[t], r.w[sp.InNorm(l)], c.NormEps)
			q[t] = refLinear(r.w[sp.Attn(l, "q", "weight")], h, H*Dh)
			k[t] = refLinear(r.w[sp.Attn(l, "k", "weight")], h, G*Dh)
			v[t] = refLinear(r.w[sp.Attn(l, "v", "weight")], h, G*Dh)
			for hh := 0; hh < H; hh++ {
				refRope(q[t][hh*Dh:(hh+1)*Dh], t%T, c.RotaryDim, c.RopeTheta)
			}
			for g := 0; g < G; g++ {
				refRope(k[t][g*Dh:(g+1)*Dh], t%T, c.RotaryDim, c.RopeTheta)
			}
		}
		for b := 0; b < B; b++ {
			for t := 0; t < T; t++ {
				i := b*T + t
				att := make([]float64, H*Dh)
				for hh := 0; hh < H; hh++ {
					g := hh / (H / G)
					lo := 0
					if w := c.Window[l]; w > 0 {
						lo = max(0, t-w+1)
					}
					sc := make([]float64, t+1)
					mx := math.Inf(-1)
					for j := lo; j <= t; j++ {
						var s float64
						for d := 0; d < Dh; d++ {
							s += q[i][hh*Dh+d] * k[b*T+j][g*Dh+d]
						}
						sc[j] = s / math.Sqrt(float64(Dh))
						mx = math.Max(mx, sc[j])
					}
					var z float64
					for j := lo; j <= t; j++ {
						sc[j] = math.Exp(sc[j] - mx)
						z += sc[j]
					}
					for j := lo; j <= t; j++ {
						for d := 0; d < Dh; d++ {
							att[hh*Dh+d] += sc[j] / z * v[b*T+j][g*Dh+d]
						}
					}
				}
				o := refLinear(r.w[sp.Attn(l, "o", "weight")], att, D)
				for d := range o {
					x[i][d] += o[d]
				}
			}
		}
		// FFN.
		h := make([][]float64, N)
		for t := 0; t < N; t++ {
			h[t] = refRMS(x[t], r.w[sp.PostNorm(l)], c.NormEps)
		}
		if !c.MoE[l] {
			g, u, d := sp.Dense(l)
			for t := 0; t < N; t++ {
				y := refMLP(r.w[g], r.w[u], r.w[d], h[t], c.DenseFFN)
				for i := range y {
					x[t][i] += y[i]
				}
			}
			continue
		}
		gx := make([][]float64, N)
		for t := range gx {
			gx[t] = slices.Clone(h[t])
			if r.noise != nil && r.noise[l] != nil {
				for i := range gx[t] {
					gx[t][i] *= float64(r.noise[l][t*D+i])
				}
			}
		}
		if c.RouteSource(l) < 0 {
			route[l] = make([][]float64, N)
			for t := range gx {
				route[l][t] = refLinear(r.w[sp.Router(l)], gx[t], E)
			}
		}
		if tg := c.PregateTarget(l); tg >= 0 {
			route[tg] = make([][]float64, N)
			for t := range gx {
				route[tg][t] = refLinear(r.w[sp.Pregate(l)], gx[t], E)
			}
		}
		capacity := math.MaxInt
		if c.Capacity > 0 {
			capacity = int(math.Ceil(c.Capacity * float64(N*K) / float64(E)))
		}
		used := make([]int, E)
		for t := 0; t < N; t++ {
			lg := route[l][t]
			mx := slices.Max(lg)
			p := make([]float64, E)
			var z float64
			for e := range p {
				p[e] = math.Exp(lg[e] - mx)
				z += p[e]
			}
			for e := range p {
				p[e] /= z
				probSum[e] += p[e]
			}
			lse := mx + math.Log(z)
			lse2 += lse * lse
			rows++
			order := make([]int, E)
			for e := range order {
				order[e] = e
			}
			sort.SliceStable(order, func(a, b int) bool { return p[order[a]] > p[order[b]] })
			top := order[:K]
			var S float64
			for _, e := range top {
				S += p[e]
				counts[e]++
			}
			for _, e := range top {
				wgt := p[e]
				if c.NormTopK {
					wgt /= S
				}
				if used[e] >= capacity {
					sig = append(sig, -1)
					continue
				}
				used[e]++
				sig = append(sig, int32(e))
				g, u, d := sp.Expert(l, e)
				y := refMLP(r.w[g], r.w[u], r.w[d], h[t], c.ExpertFFN)
				for i := range y {
					x[t][i] += wgt * y[i]
				}
			}
			if c.SharedFFN > 0 {
				g, u, d, sg := sp.Shared(l)
				y := refMLP(r.w[g], r.w[u], r.w[d], h[t], c.SharedFFN)
				s := 1 / (1 + math.Exp(-refLinear(r.w[sg], h[t], 1)[0]))
				for i := range y {
					x[t][i] += s * y[i]
				}
			}
		}
	}
	head := sp.Head()
	if c.TieEmbeddings {
		head = sp.Embed()
	}
	var ce float64
	cnt := 0
	for t := 0; t < N; t++ {
		if tgt[t] < 0 {
			continue
		}
		hf := refRMS(x[t], r.w[sp.Norm()], c.NormEps)
		lg := refLinear(r.w[head], hf, c.V)
		mx := slices.Max(lg)
		var z float64
		for _, v := range lg {
			z += math.Exp(v - mx)
		}
		ce += mx + math.Log(z) - lg[tgt[t]]
		cnt++
	}
	total := ce / float64(cnt)
	if rows > 0 {
		var cp float64
		for e := 0; e < E; e++ {
			cp += counts[e] * probSum[e]
		}
		total += c.AuxCoef*float64(E)*cp/float64(rows*rows) + c.ZCoef*lse2/float64(rows)
	}
	return total, sig
}

// tinyConfig is a small moesys config: layers 0, 2, 3 MoE, layer 1 dense.
func tinyConfig() *Config {
	return &Config{Arch: "moesys", V: 17, D: 8, L: 4, H: 2, G: 1, Dh: 4, DenseFFN: 6, ExpertFFN: 5, E: 4, K: 2,
		NormTopK: true, MoE: []bool{true, false, true, true}, RopeTheta: 10000, RotaryDim: 4, NormEps: 1e-5,
		Window: make([]int, 4), AuxCoef: 0.05, ZCoef: 0.01, BOS: -1, MaxPos: 64}
}

// TestNetGradientsFiniteDifference checks every parameter's gradient against
// central differences of the float64 twin, over model variants.
func TestNetGradientsFiniteDifference(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		rec  bool
	}{
		{"plain", func(c *Config) {}, false},
		{"recompute", func(c *Config) {}, true},
		{"pregate-1", func(c *Config) { c.PregateDist = 1 }, false},
		{"pregate-2-recompute", func(c *Config) { c.PregateDist = 2 }, true},
		{"capacity", func(c *Config) { c.Capacity = 0.6 }, false},
		{"capacity-pregate", func(c *Config) { c.Capacity = 0.6; c.PregateDist = 1 }, false},
		{"shared-no-renorm", func(c *Config) { c.SharedFFN = 3; c.NormTopK = false }, false},
		{"jitter-window-tied", func(c *Config) { c.Jitter = 0.1; c.Window = []int{0, 2, 3, 0}; c.TieEmbeddings = true }, false},
		{"top1", func(c *Config) { c.K = 1; c.AuxCoef = 0.3 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tinyConfig()
			tc.mod(c)
			const B, T = 2, 5
			n, err := NewNet(c, T)
			if err != nil {
				t.Fatal(err)
			}
			n.Recompute, n.Train, n.JitterSeed = tc.rec, true, 3
			n.Init(11, 0.3)
			rng := rand.New(rand.NewPCG(5, 6))
			for _, p := range n.Params { // non-trivial norm weights
				if len(p.Shape) == 1 {
					for i := range p.W {
						p.W[i] = float32(0.7 + 0.6*rng.Float64())
					}
				}
			}
			ids, tgt := make([]int32, B*T), make([]int32, B*T)
			for i := range ids {
				ids[i], tgt[i] = int32(rng.IntN(c.V)), int32(rng.IntN(c.V))
			}
			tgt[3] = -1
			n.ZeroGrad()
			loss := fwd(t, n, ids, tgt, B, T, 7)
			bwd(t, n, 1)
			ref := newRefNet(n)
			if c.Jitter > 0 {
				ref.noise = n.acts.noise
			}
			l0, sig0 := ref.loss(ids, tgt, B, T)
			t.Logf("loss %.12g twin %.12g", loss.Total, l0)
			if math.Abs(l0-loss.Total) > 1e-5*math.Max(1, math.Abs(l0)) {
				t.Fatalf("loss %.9g, float64 twin %.9g", loss.Total, l0)
			}
			var sigNet []int32
			for l := 0; l < c.L; l++ {
				if !c.MoE[l] || tc.rec {
					continue
				}
				a := &n.acts.ffn[l].moe
				p, r := a.Plan(), a.Routing()
				for s, id := range r.IDsTK {
					if p.SlotRow[s] < 0 {
						id = -1
					}
					sigNet = append(sigNet, id)
				}
			}
			if !tc.rec && !slices.Equal(sigNet, sig0) {
				t.Fatalf("routing differs from the float64 twin:\n%v\n%v", sigNet, sig0)
			}
			if c.Capacity > 0 && !slices.Contains(sig0, -1) {
				t.Fatal("capacity case dropped nothing")
			}
			const h = 1e-5
			for _, p := range n.Params {
				w := ref.w[p.Name]
				fd := make([]float64, len(w))
				var num, den float64
				skipped := 0
				for i := range w {
					if raceEnabled && i%5 != 0 {
						continue // the race detector makes every evaluation ~10x slower
					}
					old := w[i]
					w[i] = old + h
					lp, sp := ref.loss(ids, tgt, B, T)
					w[i] = old - h
					lm, sm := ref.loss(ids, tgt, B, T)
					w[i] = old
					if !slices.Equal(sp, sig0) || !slices.Equal(sm, sig0) {
						skipped++
						continue
					}
					fd[i] = (lp - lm) / (2 * h)
					d := fd[i] - float64(p.G[i])
					num += d * d
					den += fd[i] * fd[i]
				}
				if skipped > len(w)/4 {
					t.Fatalf("%s: %d of %d coordinates change the routing", p.Name, skipped, len(w))
				}
				if den == 0 && num == 0 {
					continue // e.g. an expert no token chose
				}
				if testing.Verbose() {
					t.Logf("%s: rel err %.3g", p.Name, math.Sqrt(num/math.Max(den, 1e-20)))
				}
				if e := math.Sqrt(num / math.Max(den, 1e-20)); !(e < 1e-4) {
					t.Errorf("%s: gradient rel err %.3g (|fd| %.3g)", p.Name, e, math.Sqrt(den))
				}
			}
		})
	}
}
