package model

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// strictSource is a DenseSource that keeps every dense weight and gradient
// itself and gives the Net only the group in use: the previous group's
// Params are emptied at each Use, so a read of any other group's weights
// (or a gradient written after GradsDone) fails the test.
type strictSource struct {
	groups [][]*Param // the dense Params of each GradGroups group
	w, g   map[*Param][]float32
	calls  []string
	cur    int
}

func newStrictSource(n *Net) *strictSource {
	s := &strictSource{w: map[*Param][]float32{}, g: map[*Param][]float32{}, cur: -1}
	for _, ps := range n.GradGroups() {
		var dense []*Param
		for _, p := range ps {
			if expert, _ := n.ExpertParam(p); !expert {
				dense = append(dense, p)
				s.w[p], s.g[p] = slices.Clone(p.W), make([]float32, len(p.W))
				p.W, p.G = nil, nil
			}
		}
		s.groups = append(s.groups, dense)
	}
	n.GradsDone = func(ps []*Param) {
		for _, p := range s.groups[s.cur] {
			for j, v := range p.G {
				s.g[p][j] += v
			}
		}
	}
	return s
}

func (s *strictSource) Use(_ context.Context, g int, back bool) error {
	s.calls = append(s.calls, fmt.Sprintf("%d%s", g, map[bool]string{true: "b", false: "f"}[back]))
	if s.cur >= 0 {
		for _, p := range s.groups[s.cur] {
			p.W, p.G = nil, nil
		}
	}
	for _, p := range s.groups[g] {
		p.W = slices.Clone(s.w[p])
		if back {
			p.G = make([]float32, len(p.W))
		}
	}
	s.cur = g
	return nil
}

// A Net whose dense weights come from a DenseSource, one group at a time
// in the documented order, computes the loss and gradients of the Net
// that holds them all, bit for bit (plain; pre-gates, a shared expert and
// recomputation; a dense layer between MoE ones).
func TestDenseSource(t *testing.T) {
	const B, T = 2, 5
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		rec  bool
	}{
		{"plain", func(c *Config) {}, false},
		{"pregate-shared-recompute", func(c *Config) { c.PregateDist, c.SharedFFN = 1, 3 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tinyConfig()
			tc.mod(c)
			nets := make([]*Net, 2)
			for i := range nets {
				n, err := NewNet(c, T)
				if err != nil {
					t.Fatal(err)
				}
				n.Init(3, 0.5)
				n.Recompute, n.Train, n.JitterSeed = tc.rec, true, 1
				nets[i] = n
			}
			ref, got := nets[0], nets[1]
			src := newStrictSource(got)
			got.Dense = src
			rng := rand.New(rand.NewPCG(1, 2))
			ids, tgt := make([]int32, B*T), make([]int32, B*T)
			for i := range ids {
				ids[i], tgt[i] = int32(rng.IntN(c.V)), int32(rng.IntN(c.V))
			}
			want := fwd(t, ref, ids, tgt, B, T, 0)
			bwd(t, ref, 1)
			if l := fwd(t, got, ids, tgt, B, T, 0); l != want {
				t.Fatalf("loss %+v, want %+v", l, want)
			}
			bwd(t, got, 1)
			L := c.L
			var order []string
			for g := L + 1; g >= 0; g-- {
				order = append(order, fmt.Sprintf("%df", g))
			}
			for g := 0; g <= L+1; g++ {
				order = append(order, fmt.Sprintf("%db", g))
			}
			if !slices.Equal(src.calls, order) {
				t.Fatalf("Use calls %v, want %v", src.calls, order)
			}
			for _, rp := range ref.Params {
				p := got.Param(rp.Name)
				g := p.G
				if sg, ok := src.g[p]; ok {
					g = sg
				}
				if !slices.Equal(g, rp.G) {
					t.Fatalf("%s: gradient differs from the whole Net's", rp.Name)
				}
			}
		})
	}
}
