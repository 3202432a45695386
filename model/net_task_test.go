package model

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// taskBatch is a multi-task test batch: B sequences of T random tokens.
func taskBatch(c *Config, B, T int, seed uint64) (ids, tgt []int32) {
	rng := rand.New(rand.NewPCG(seed, 1))
	ids, tgt = make([]int32, B*T), make([]int32, B*T)
	for i := range ids {
		ids[i], tgt[i] = int32(rng.IntN(c.V)), int32(rng.IntN(c.V))
	}
	return ids, tgt
}

// A multi-task Net's gradients of task experts and backbone match central
// differences of its loss; the experts of a task absent from the batch get
// no gradient; recomputation changes nothing.
func TestNetTaskExpertsGradients(t *testing.T) {
	const B, T, seed = 4, 5, 3
	c := tinyConfig()
	c.Tasks, c.TaskFFN = 3, 4
	n, err := NewNet(c, T)
	if err != nil {
		t.Fatal(err)
	}
	n.Init(seed, 0.5)
	ids, tgt := taskBatch(c, B, T, seed)
	n.SetTaskOf([]int32{2, 2, 0, 2}) // task 1 absent
	loss := func() float64 { return fwd(t, n, ids, tgt, B, T, 0).Total }
	base := loss()
	n.ZeroGrad()
	bwd(t, n, 1)
	checked := 0
	for _, p := range n.Params {
		isTask := n.TaskParam(p) >= 0
		if isTask && n.TaskParam(p) == 1 {
			for _, g := range p.G {
				if g != 0 {
					t.Fatalf("%s: gradient %g for a task with no sequence", p.Name, g)
				}
			}
			continue
		}
		if !isTask && !strings.Contains(p.Name, "layers.3.") && !strings.Contains(p.Name, "norm.weight") {
			continue
		}
		for _, i := range []int{0, len(p.W) / 2, len(p.W) - 1} {
			const eps = 1e-2
			w := p.W[i]
			p.W[i] = w + eps
			lp := loss()
			p.W[i] = w - eps
			lm := loss()
			p.W[i] = w
			fd := (lp - lm) / (2 * eps)
			if d := math.Abs(fd - float64(p.G[i])); d > 2e-3+2e-2*math.Abs(fd) {
				t.Errorf("%s[%d]: gradient %g, finite difference %g", p.Name, i, p.G[i], fd)
			}
			checked++
		}
	}
	if checked < 50 {
		t.Fatalf("checked only %d entries", checked)
	}
	// Recomputation: the same loss and gradients.
	want := map[string][]float32{}
	for _, p := range n.Params {
		want[p.Name] = append([]float32(nil), p.G...)
	}
	n.Recompute = true
	if got := loss(); math.Abs(got-base) > 1e-6 {
		t.Fatalf("recompute loss %g, want %g", got, base)
	}
	n.ZeroGrad()
	bwd(t, n, 1)
	for _, p := range n.Params {
		for i, g := range p.G {
			if math.Abs(float64(g-want[p.Name][i])) > 1e-6 {
				t.Fatalf("recompute: %s[%d] = %g, want %g", p.Name, i, g, want[p.Name][i])
			}
		}
	}
}

// The task experts change the output only through their own task's
// sequences, and configs without MoE layers or FFN size are refused.
func TestNetTaskExpertsRouting(t *testing.T) {
	const B, T = 2, 4
	c := tinyConfig()
	c.Tasks, c.TaskFFN = 2, 4
	n, err := NewNet(c, T)
	if err != nil {
		t.Fatal(err)
	}
	n.Init(1, 0.5)
	ids, tgt := taskBatch(c, B, T, 1)
	n.SetTaskOf([]int32{0, 1})
	fwd(t, n, ids, tgt, B, T, 0)
	before := append([]float32(nil), n.Logits()...)
	for _, p := range n.Params { // perturb task 1's experts only
		if n.TaskParam(p) == 1 {
			for i := range p.W {
				p.W[i] *= 1.5
			}
		}
	}
	fwd(t, n, ids, tgt, B, T, 0)
	after := n.Logits()
	V := c.V
	for i := range before {
		seq1 := i >= T*V
		if changed := before[i] != after[i]; changed != seq1 {
			t.Fatalf("logit %d (sequence %d) changed=%v", i, i/(T*V), changed)
		}
	}
	for _, bad := range []func(c *Config){
		func(c *Config) { c.TaskFFN = 0 },
		func(c *Config) { c.Tasks = -1 },
		func(c *Config) { c.E, c.K = 0, 0; c.MoE = make([]bool, c.L) },
	} {
		c := tinyConfig()
		c.Tasks, c.TaskFFN = 2, 4
		bad(c)
		if _, err := NewNet(c, T); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
	// config.json round trip keeps the tasks.
	b, err := c.MarshalHF()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Tasks != 2 || back.TaskFFN != 4 {
		t.Fatalf("round trip: tasks %d ffn %d", back.Tasks, back.TaskFFN)
	}
}

// The inference path refuses a multi-task checkpoint instead of running
// it without its task experts.
func TestLoadRefusesMultiTask(t *testing.T) {
	c := tinyConfig()
	c.Tasks, c.TaskFFN = 2, 3
	n, err := NewNet(c, 8)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := n.SaveWeights(dir, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "multi-task") {
		t.Fatalf("Load of a multi-task checkpoint: %v", err)
	}
}
