package model

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/safetensors"
)

// trainFixture is testdata/hf/train_tiny/expected/train.json.
type trainFixture struct {
	Batch  [][]int32 `json:"batch"`
	Coef   float64   `json:"router_aux_loss_coef"`
	Losses []struct {
		CE, Aux, Total float64
	} `json:"losses_before_each_step"`
	Optimizer struct {
		LR          float64   `json:"lr"`
		Betas       []float64 `json:"betas"`
		Eps         float64   `json:"eps"`
		WeightDecay float64   `json:"weight_decay"`
		Steps       int       `json:"steps"`
	} `json:"optimizer"`
}

// loadTrainTiny returns a Net with the fixture's initial weights, the
// fixture, and the batch as ids and targets (each sequence run whole; the
// last position predicts nothing, as HF shifts labels inside the model).
func loadTrainTiny(t *testing.T, recompute bool) (*Net, *trainFixture, []int32, []int32, int, int) {
	t.Helper()
	dir := filepath.Join("..", "testdata", "hf", "train_tiny")
	cfg, err := LoadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	var fx trainFixture
	b, err := os.ReadFile(filepath.Join(dir, "expected", "train.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	if cfg.AuxCoef != fx.Coef {
		t.Fatalf("config router_aux_loss_coef %g, fixture %g", cfg.AuxCoef, fx.Coef)
	}
	B, T := len(fx.Batch), len(fx.Batch[0])
	n, err := NewNet(cfg, T)
	if err != nil {
		t.Fatal(err)
	}
	n.Recompute = recompute
	set, err := safetensors.OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if err := n.LoadWeights(set); err != nil {
		t.Fatal(err)
	}
	ids, tgt := make([]int32, B*T), make([]int32, B*T)
	for b, seq := range fx.Batch {
		for i, id := range seq {
			ids[b*T+i] = id
			tgt[b*T+i] = -1
			if i+1 < T {
				tgt[b*T+i] = seq[i+1]
			}
		}
	}
	return n, &fx, ids, tgt, B, T
}

// TestTrainTinyFixture: losses before each of 3 AdamW steps, every
// gradient at the initial weights, and the weights after 3 steps match the
// PyTorch oracle (tolerances of testdata/README.md).
func TestTrainTinyFixture(t *testing.T) {
	for _, recompute := range []bool{false, true} {
		name := "stored"
		if recompute {
			name = "recompute"
		}
		t.Run(name, func(t *testing.T) {
			n, fx, ids, tgt, B, T := loadTrainTiny(t, recompute)
			grads, err := safetensors.Open(filepath.Join("..", "testdata", "hf", "train_tiny", "expected", "grads.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			defer grads.Close()
			after, err := safetensors.Open(filepath.Join("..", "testdata", "hf", "train_tiny", "expected", "adamw_step3.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			defer after.Close()
			o := fx.Optimizer
			m := make([][]float32, len(n.Params))
			v := make([][]float32, len(n.Params))
			for i, p := range n.Params {
				m[i], v[i] = make([]float32, len(p.W)), make([]float32, len(p.W))
			}
			for step := 1; step <= o.Steps; step++ {
				n.ZeroGrad()
				loss := fwd(t, n, ids, tgt, B, T, 0)
				want := fx.Losses[step-1]
				if math.Abs(loss.CE-want.CE) > 1e-5 || math.Abs(loss.Aux-want.Aux) > 1e-5 || math.Abs(loss.Total-want.Total) > 1e-5 {
					t.Fatalf("step %d: loss ce %.8f aux %.8f total %.8f, want %.8f %.8f %.8f", step, loss.CE, loss.Aux, loss.Total, want.CE, want.Aux, want.Total)
				}
				t.Logf("step %d: ce %.9f aux %.9f total %.9f (want %.9f %.9f %.9f)", step, loss.CE, loss.Aux, loss.Total, want.CE, want.Aux, want.Total)
				bwd(t, n, 1)
				if step == 1 {
					checked, worst := 0, 0.0
					for _, p := range n.Params {
						g, err := grads.F32(p.Name)
						if err != nil {
							t.Fatalf("%s: %v", p.Name, err)
						}
						e := relErr(p.G, g)
						if !(e < 1e-4) {
							t.Errorf("grad %s: rel err %.3g", p.Name, e)
						}
						worst = math.Max(worst, e)
						checked++
					}
					t.Logf("%d gradients, worst rel err %.3g", checked, worst)
					if checked != len(grads.Names()) {
						t.Fatalf("checked %d gradients, fixture has %d", checked, len(grads.Names()))
					}
				}
				for i, p := range n.Params {
					kernel.AdamW(p.W, p.G, m[i], v[i], step, float32(o.LR), float32(o.Betas[0]), float32(o.Betas[1]), float32(o.Eps), float32(o.WeightDecay))
				}
			}
			worst := 0.0
			for _, p := range n.Params {
				w, err := after.F32(p.Name)
				if err != nil {
					t.Fatalf("%s: %v", p.Name, err)
				}
				e := relErr(p.W, w)
				if !(e < 1e-5) {
					t.Errorf("weights %s after %d steps: rel err %.3g", p.Name, o.Steps, e)
				}
				worst = math.Max(worst, e)
			}
			t.Logf("%d tensors after %d steps, worst rel err %.3g", len(n.Params), o.Steps, worst)
		})
	}
}
