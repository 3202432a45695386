package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hfFixtures = "../../testdata/hf"

// modelConfig is the part of config.json the expected counts derive from.
type modelConfig struct {
	Vocab     int64 `json:"vocab_size"`
	Hidden    int64 `json:"hidden_size"`
	FFN       int64 `json:"intermediate_size"`
	MoeFFN    int64 `json:"moe_intermediate_size"`
	SharedFFN int64 `json:"shared_expert_intermediate_size"`
	Layers    int64 `json:"num_hidden_layers"`
	Heads     int64 `json:"num_attention_heads"`
	KVHeads   int64 `json:"num_key_value_heads"`
	LocalE    int64 `json:"num_local_experts"`
	E         int64 `json:"num_experts"`
	K         int64 `json:"num_experts_per_tok"`
	QKVBias   bool  `json:"qkv_bias"`
}

func loadConfig(t *testing.T, dir string) modelConfig {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c modelConfig
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// runCmd runs moesys with args and returns exit code, stdout and stderr.
func runCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func inspectJSON(t *testing.T, args ...string) inspectReport {
	t.Helper()
	code, out, errs := runCmd(append([]string{"inspect", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("bad JSON: %v\n%s", err, out)
	}
	return rep
}

func TestInspectMixtralCounts(t *testing.T) {
	dir := filepath.Join(hfFixtures, "mixtral_f32")
	c := loadConfig(t, dir)
	L, E, D, F, V, k := c.Layers, c.LocalE, c.Hidden, c.FFN, c.Vocab, c.K
	Dh := D / c.Heads
	// Independently of inspect: three (F, D)-sized matrices per expert ...
	routed := L * E * 3 * D * F
	// ... and per layer: router (E, D), two norms, q/o (D, D), k/v (G*Dh, D);
	// plus embeddings, lm_head and the final norm.
	perLayer := E*D + 2*D + 2*D*c.Heads*Dh + 2*c.KVHeads*Dh*D
	dense := 2*V*D + D + L*perLayer
	tensors := L*(3*E+1+2+4) + 3

	rep := inspectJSON(t, dir)
	p := rep.Params
	if p.Routed != routed || p.Dense != dense || p.Total != routed+dense {
		t.Errorf("params routed %d dense %d total %d, want %d %d %d", p.Routed, p.Dense, p.Total, routed, dense, routed+dense)
	}
	if p.Experts != E || p.ExpertsPerToken != k || p.Active == nil || *p.Active != dense+routed*k/E {
		t.Errorf("E %d k %d active %v, want %d %d %d", p.Experts, p.ExpertsPerToken, p.Active, E, k, dense+routed*k/E)
	}
	if int64(rep.Tensors) != tensors || rep.TotalBytes != 4*(routed+dense) {
		t.Errorf("tensors %d bytes %d, want %d %d", rep.Tensors, rep.TotalBytes, tensors, 4*(routed+dense))
	}
	if d := rep.DTypes["F32"]; len(rep.DTypes) != 1 || d.Bytes != rep.TotalBytes || int64(d.Tensors) != tensors {
		t.Errorf("dtypes = %+v", rep.DTypes)
	}
	if len(rep.Files) != 1 || filepath.Base(rep.Files[0]) != "model.safetensors" {
		t.Errorf("files = %v", rep.Files)
	}
	var cfg map[string]any
	if err := json.Unmarshal(rep.Config, &cfg); err != nil || cfg["model_type"] != "mixtral" {
		t.Errorf("config = %s (%v)", rep.Config, err)
	}
	if rep.TensorList != nil {
		t.Error("tensor list without --tensors")
	}
}

// TestInspectQwen2MoeSharedExpertIsDense: the shared expert and its gate
// count as dense, only mlp.experts.N as routed.
func TestInspectQwen2MoeSharedExpertIsDense(t *testing.T) {
	dir := filepath.Join(hfFixtures, "qwen2_moe")
	c := loadConfig(t, dir)
	L, E, D, Fm, S, V := c.Layers, c.E, c.Hidden, c.MoeFFN, c.SharedFFN, c.Vocab
	Dh := D / c.Heads
	G := c.KVHeads * Dh
	routed := L * E * 3 * D * Fm
	attn := 2*D*D + 2*G*D
	if c.QKVBias {
		attn += D + 2*G
	}
	perLayer := attn + 2*D + E*D + 3*D*S + D // router, shared expert, shared gate (1, D)
	dense := 2*V*D + D + L*perLayer

	rep := inspectJSON(t, dir, "--tensors")
	p := rep.Params
	if p.Routed != routed || p.Dense != dense {
		t.Errorf("routed %d dense %d, want %d %d", p.Routed, p.Dense, routed, dense)
	}
	if p.Active == nil || *p.Active != dense+routed*c.K/E {
		t.Errorf("active %v, want %d", p.Active, dense+routed*c.K/E)
	}
	if len(rep.TensorList) != rep.Tensors {
		t.Fatalf("%d rows for %d tensors", len(rep.TensorList), rep.Tensors)
	}
	for _, r := range rep.TensorList {
		if r.Name == "model.layers.1.mlp.shared_expert.up_proj.weight" {
			if r.DType != "F32" || len(r.Shape) != 2 || r.Shape[0] != int(S) || r.Bytes != 4*S*D {
				t.Errorf("row %+v", r)
			}
			return
		}
	}
	t.Error("shared expert tensor not listed")
}

func TestInspectText(t *testing.T) {
	dir := filepath.Join(hfFixtures, "mixtral_bf16")
	// Flags may follow the path.
	code, out, errs := runCmd("inspect", dir, "--tensors")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"model_type                       mixtral\n",
		"num_local_experts                8\n",
		"sliding_window                   null\n",
		`architectures=["MixtralForCausalLM"]`,
		"tensors     127, 1741952 bytes (1.66 MiB)\n",
		"BF16",
		"routed experts              786432",
		"8 experts, 2 per token",
		"active per token            281152",
		"\nNAME ",
		"lm_head.weight",
		"(256, 64)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestInspectSingleFile(t *testing.T) {
	path := filepath.Join(hfFixtures, "train_tiny", "expected", "grads.safetensors")
	rep := inspectJSON(t, path)
	c := loadConfig(t, filepath.Join(hfFixtures, "train_tiny"))
	if rep.Config != nil || rep.Params.Active != nil {
		t.Errorf("a single file should have no config: %s", rep.Config)
	}
	if want := c.Layers * c.LocalE * 3 * c.Hidden * c.FFN; rep.Params.Routed != want {
		t.Errorf("routed %d, want %d", rep.Params.Routed, want)
	}
	code, out, _ := runCmd("inspect", path)
	if code != 0 || !strings.Contains(out, "config      (none)") || !strings.Contains(out, "active per token  unknown") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

func TestInspectErrors(t *testing.T) {
	empty := t.TempDir()
	badConfig := t.TempDir()
	if err := os.WriteFile(filepath.Join(badConfig, "config.json"), []byte(`{"model_type": "mixtral",`), 0o644); err != nil {
		t.Fatal(err)
	}
	badExperts := t.TempDir()
	if err := os.WriteFile(filepath.Join(badExperts, "config.json"), []byte(`{"num_experts": "eight"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	notSafetensors := filepath.Join(hfFixtures, "mixtral_f32", "config.json")
	for _, c := range []struct {
		name string
		args []string
		code int
		msg  string // in stderr
	}{
		{"no path", []string{"inspect"}, 2, "want one PATH, got 0"},
		{"two paths", []string{"inspect", "a", "b"}, 2, "want one PATH, got 2"},
		{"unknown flag", []string{"inspect", "--bogus", empty}, 2, "flag provided but not defined"},
		{"missing path", []string{"inspect", filepath.Join(empty, "nope")}, 1, "no such file or directory"},
		{"no checkpoint", []string{"inspect", empty}, 1, "no model.safetensors or model.safetensors.index.json"},
		{"other safetensors", []string{"inspect", filepath.Join(hfFixtures, "train_tiny", "expected")}, 1, "it holds adamw_step3.safetensors, grads.safetensors"},
		{"bad config", []string{"inspect", badConfig}, 1, "config.json: not a JSON object"},
		{"bad expert count", []string{"inspect", badExperts}, 1, `num_experts = "eight"`},
		{"not a safetensors file", []string{"inspect", notSafetensors}, 1, "safetensors: invalid header"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, errs := runCmd(c.args...)
			if code != c.code || !strings.Contains(errs, c.msg) {
				t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", code, errs, c.code, c.msg)
			}
		})
	}
}

func TestInspectHelp(t *testing.T) {
	code, out, _ := runCmd("inspect", "--help")
	if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "--tensors") {
		t.Errorf("exit %d:\n%s", code, out)
	}
}
