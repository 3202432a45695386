package model

import (
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

// TestConfigMarshalRoundTrip: MarshalHF then ParseConfig gives the config
// back, as mixtral where Mixtral can express it, else as moesys.
func TestConfigMarshalRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name, arch string
		mod        func(c *Config)
	}{
		{"mixtral", "mixtral", func(c *Config) { c.MoE = []bool{true, true, true, true}; c.Dh = 4; c.D = 8 }},
		{"dense-layer", "moesys", func(c *Config) {}},
		{"switch", "moesys", func(c *Config) { c.MoE = []bool{false, true, false, true} }},
		{"pregate-shared", "moesys", func(c *Config) { c.MoE = []bool{true, true, true, true}; c.PregateDist = 2; c.SharedFFN = 3 }},
		{"window-tied", "moesys", func(c *Config) { c.Window = []int{3, 3, 3, 3}; c.TieEmbeddings = true; c.EOS = []int32{1, 2} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tinyConfig()
			c.Capacity, c.Jitter = 1.25, 0.01
			tc.mod(c)
			b, err := c.MarshalHF()
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseConfig(b)
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			want := *c
			want.Arch = tc.arch
			if want.Arch == "mixtral" {
				want.DenseFFN = want.ExpertFFN // Mixtral has no dense layers; it reads one size
			}
			if !reflect.DeepEqual(got, &want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v\n%s", got, &want, b)
			}
		})
	}
}

// TestNetSaveLoad: SaveWeights then LoadNet gives the same weights and loss.
func TestNetSaveLoad(t *testing.T) {
	c := tinyConfig()
	c.PregateDist = 1
	n, err := NewNet(c, 8)
	if err != nil {
		t.Fatal(err)
	}
	n.Init(1, 0.1)
	dir := t.TempDir()
	if err := n.SaveWeights(dir, false, nil); err != nil {
		t.Fatal(err)
	}
	m, err := LoadNet(dir, 8)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range n.Params {
		if !reflect.DeepEqual(p.W, m.Params[i].W) {
			t.Fatalf("%s differs after save and load", p.Name)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	ids, tgt := make([]int32, 16), make([]int32, 16)
	for i := range ids {
		ids[i], tgt[i] = int32(rng.IntN(c.V)), int32(rng.IntN(c.V))
	}
	a, b := fwd(t, n, ids, tgt, 2, 8, 0), fwd(t, m, ids, tgt, 2, 8, 0)
	if a != b {
		t.Fatalf("loss %+v after reload, %+v before", b, a)
	}
	// bf16 weights load widened.
	if err := n.SaveWeights(dir, true, nil); err != nil {
		t.Fatal(err)
	}
	m, err = LoadNet(dir, 8)
	if err != nil {
		t.Fatal(err)
	}
	if e := relErr(m.Params[0].W, n.Params[0].W); !(e > 0 && e < 1e-2) || math.IsNaN(e) {
		t.Fatalf("bf16 round trip rel err %g", e)
	}
}
