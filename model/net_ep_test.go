package model

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/moesys/moesys/dist"
)

// Expert parallelism over W in-process ranks, each with its share of the
// batch, gives the single-process Net's loss on every rank, and gradients
// that match it: the dense parameters' summed over the ranks, each
// expert's on its owner (and zero elsewhere). Variants: pre-gates, a
// shared expert with recomputation, top-1.
func TestNetExpertParallel(t *testing.T) {
	const T, perRank, seed = 6, 2, 7
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		rec  bool
	}{
		{"plain", func(c *Config) {}, false},
		{"pregate-1", func(c *Config) { c.PregateDist = 1 }, false},
		{"shared-recompute", func(c *Config) { c.SharedFFN = 3 }, true},
		{"top1", func(c *Config) { c.K = 1; c.AuxCoef = 0.3 }, false},
		// Capacity dropping: each rank's per-expert limits keep the
		// single process's drops (its assignments in global token order).
		{"capacity", func(c *Config) { c.Capacity = 0.5 }, false},
		// Router jitter in training: each token draws its own noise.
		{"jitter-capacity", func(c *Config) { c.Jitter = 0.3; c.Capacity = 0.75 }, false},
	} {
		for _, W := range []int{1, 2, 4} {
			t.Run(fmt.Sprintf("%s/W%d", tc.name, W), func(t *testing.T) {
				c := tinyConfig()
				tc.mod(c)
				B := W * perRank
				rng := rand.New(rand.NewPCG(seed, uint64(W)))
				ids, tgt := make([]int32, B*T), make([]int32, B*T)
				for i := range ids {
					ids[i], tgt[i] = int32(rng.IntN(c.V)), int32(rng.IntN(c.V))
				}
				tgt[3] = -1 // an ignored target
				ref, err := NewNet(c, T)
				if err != nil {
					t.Fatal(err)
				}
				ref.Init(seed, 0.5)
				ref.Recompute = tc.rec
				ref.Train = c.Jitter > 0
				want := fwd(t, ref, ids, tgt, B, T, 3)
				bwd(t, ref, 1)
				if c.Capacity > 0 && W > 1 {
					dropped := 0
					for l := range c.L {
						if ref.MoELayer(l) != nil {
							p := ref.acts.ffn[ref.slot(l)].moe.Plan()
							dropped += p.Dropped
						}
					}
					if dropped == 0 {
						t.Fatalf("capacity %g drops nothing: the case tests nothing", c.Capacity)
					}
				}

				comms, err := dist.NewLocal(W)
				if err != nil {
					t.Fatal(err)
				}
				nets := make([]*Net, W)
				losses := make([]Loss, W)
				errs := make([]error, W)
				var wg sync.WaitGroup
				for r := range W {
					wg.Go(func() {
						n, err := NewNet(c, T)
						if err != nil {
							errs[r] = err
							return
						}
						n.Init(seed, 0.5)
						n.Recompute = tc.rec
						n.Train = c.Jitter > 0
						n.TokenBase = r * perRank * T
						if errs[r] = n.SetExpertParallel(comms[r]); errs[r] != nil {
							return
						}
						ctx := context.Background()
						lo, hi := r*perRank*T, (r+1)*perRank*T
						if losses[r], errs[r] = n.Forward(ctx, ids[lo:hi], tgt[lo:hi], perRank, T, 3); errs[r] != nil {
							return
						}
						if errs[r] = n.Backward(ctx, 1); errs[r] != nil {
							return
						}
						// The dense parameters' shares, summed (data parallelism).
						for _, p := range n.Params {
							if expert, _ := n.ExpertParam(p); !expert {
								if errs[r] = comms[r].AllReduce(ctx, p.G); errs[r] != nil {
									return
								}
							}
						}
						nets[r] = n
					})
				}
				wg.Wait()
				for r, err := range errs {
					if err != nil {
						t.Fatalf("rank %d: %v", r, err)
					}
				}
				near := func(what string, got, want, tol float64) {
					t.Helper()
					if math.Abs(got-want) > tol*(1+math.Abs(want)) {
						t.Fatalf("%s = %.9g, want %.9g", what, got, want)
					}
				}
				for r, l := range losses {
					near(fmt.Sprintf("rank %d CE", r), l.CE, want.CE, 1e-6)
					near(fmt.Sprintf("rank %d aux", r), l.Aux, want.Aux, 1e-6)
					near(fmt.Sprintf("rank %d z", r), l.Z, want.Z, 1e-6)
					if l.Tokens != want.Tokens {
						t.Fatalf("rank %d: %d tokens, want %d", r, l.Tokens, want.Tokens)
					}
				}
				moeLayers := len(c.MoELayers())
				for r, n := range nets {
					experts, locals := 0, 0
					for _, p := range n.Params {
						e, l := n.ExpertParam(p)
						if e {
							experts++
						}
						if l {
							locals++
						}
					}
					if experts != 3*c.E*moeLayers || locals != experts/W {
						t.Fatalf("rank %d: %d expert params, %d local; want %d and %d", r, experts, locals, 3*c.E*moeLayers, 3*c.E*moeLayers/W)
					}
				}
				for i, rp := range ref.Params {
					scale := 0.0
					for _, v := range rp.G {
						scale = max(scale, math.Abs(float64(v)))
					}
					for r, n := range nets {
						p := n.Params[i]
						expert, local := n.ExpertParam(p)
						for j := range p.G {
							w := float64(rp.G[j])
							if expert && !local {
								w = 0 // another rank's expert: untouched here
							}
							if d := math.Abs(float64(p.G[j]) - w); d > 1e-5*(scale+1e-3) {
								t.Fatalf("rank %d %s[%d] = %v, want %v (expert %v, local %v)", r, p.Name, j, p.G[j], w, expert, local)
							}
						}
					}
				}
			})
		}
	}
}

// GradsDone reports every Param exactly once per Backward, each when its
// gradient is final: the gradient seen then equals the one Backward ends
// with (pre-gates, whose gradient comes partly from the next block, and a
// shared expert included).
func TestGradsDone(t *testing.T) {
	const B, T = 2, 5
	c := tinyConfig()
	c.PregateDist, c.SharedFFN = 1, 3
	n, err := NewNet(c, T)
	if err != nil {
		t.Fatal(err)
	}
	n.Init(3, 0.5)
	rng := rand.New(rand.NewPCG(1, 2))
	ids, tgt := make([]int32, B*T), make([]int32, B*T)
	for i := range ids {
		ids[i], tgt[i] = int32(rng.IntN(c.V)), int32(rng.IntN(c.V))
	}
	seen := map[*Param][]float32{}
	n.GradsDone = func(ps []*Param) {
		for _, p := range ps {
			if _, dup := seen[p]; dup {
				t.Fatalf("%s reported twice", p.Name)
			}
			seen[p] = append([]float32(nil), p.G...)
		}
	}
	fwd(t, n, ids, tgt, B, T, 0)
	bwd(t, n, 1)
	if len(seen) != len(n.Params) {
		t.Fatalf("%d of %d params reported", len(seen), len(n.Params))
	}
	for _, p := range n.Params {
		for j, v := range seen[p] {
			if v != p.G[j] {
				t.Fatalf("%s[%d] reported as %v, final %v: reported before Backward finished it", p.Name, j, v, p.G[j])
			}
		}
	}
}
