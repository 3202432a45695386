package model

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mutate returns the mixtral fixture's config.json with one field replaced
// (value "" deletes it).
func mutate(t *testing.T, field, value string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "hf", "mixtral_f32", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), `"`+field+`"`) {
			if value == "" {
				lines[i] = ""
			} else {
				lines[i] = `  "` + field + `": ` + value + `,`
			}
		}
	}
	return []byte(strings.Join(lines, "\n"))
}

func TestParseConfigErrors(t *testing.T) {
	cases := []struct {
		name, field, value, want string
	}{
		{"unknown model_type", "model_type", `"gpt2"`, `unsupported model_type "gpt2"`},
		{"k above experts", "num_experts_per_tok", "9", "num_experts_per_tok 9"},
		{"heads not multiple of kv", "num_key_value_heads", "3", "multiple of num_key_value_heads 3"},
		{"gelu", "hidden_act", `"gelu"`, `hidden_act "gelu"`},
		{"rope scaling", "rope_theta", `1e6, "rope_scaling": {"type": "yarn"}`, "rope_scaling"},
		{"zero vocab", "vocab_size", "0", "vocab_size 0"},
		{"negative eps", "rms_norm_eps", "-1", "rms_norm_eps"},
		{"bad eos", "eos_token_id", `"x"`, "eos_token_id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig(mutate(t, c.field, c.value))
			if err == nil || !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an ErrConfig naming %q", err, c.want)
			}
		})
	}
	if _, err := ParseConfig([]byte("{")); !errors.Is(err, ErrConfig) {
		t.Fatalf("truncated JSON: %v", err)
	}
}

func TestParseConfigSemantics(t *testing.T) {
	cases := []struct {
		name  string
		json  string
		check func(t *testing.T, c *Config)
	}{
		{"qwen2 sparse step and mlp-only layers", `{"model_type":"qwen2_moe","vocab_size":10,"hidden_size":8,"num_hidden_layers":4,
			"num_attention_heads":2,"num_key_value_heads":1,"intermediate_size":16,"moe_intermediate_size":4,"num_experts":4,
			"num_experts_per_tok":2,"decoder_sparse_step":2,"mlp_only_layers":[3],"use_sliding_window":true,"sliding_window":5,"max_window_layers":2}`,
			func(t *testing.T, c *Config) {
				if want := []bool{false, true, false, false}; !equalBools(c.MoE, want) {
					t.Fatalf("MoE layers %v, want %v", c.MoE, want)
				}
				if want := []int{0, 0, 5, 5}; !equalInts(c.Window, want) {
					t.Fatalf("windows %v, want %v", c.Window, want)
				}
				if c.NormTopK || !c.QKVBias {
					t.Fatalf("qwen2 defaults: norm_topk_prob false, qkv bias true; got %v %v", c.NormTopK, c.QKVBias)
				}
			}},
		{"qwen3 head_dim and per-head norm", `{"model_type":"qwen3_moe","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
			"num_attention_heads":4,"num_key_value_heads":2,"head_dim":6,"moe_intermediate_size":4,"num_experts":4,"num_experts_per_tok":2}`,
			func(t *testing.T, c *Config) {
				if c.Dh != 6 || c.QKNorm != QKNormPerHead || !c.NormTopK {
					t.Fatalf("Dh %d QKNorm %v NormTopK %v", c.Dh, c.QKNorm, c.NormTopK)
				}
			}},
		{"olmoe full-width qk norm, tied head", `{"model_type":"olmoe","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
			"num_attention_heads":2,"intermediate_size":4,"num_experts":4,"num_experts_per_tok":2,"tie_word_embeddings":true,"eos_token_id":[3,4]}`,
			func(t *testing.T, c *Config) {
				if c.QKNorm != QKNormFull || c.NormTopK || !c.TieEmbeddings || c.G != 2 || len(c.EOS) != 2 {
					t.Fatalf("%+v", c)
				}
			}},
		{"mixtral sliding window", `{"model_type":"mixtral","vocab_size":10,"hidden_size":8,"num_hidden_layers":2,
			"num_attention_heads":2,"intermediate_size":4,"num_local_experts":4,"num_experts_per_tok":2,"sliding_window":7}`,
			func(t *testing.T, c *Config) {
				if !equalInts(c.Window, []int{7, 7}) || !c.NormTopK {
					t.Fatalf("windows %v NormTopK %v", c.Window, c.NormTopK)
				}
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := ParseConfig([]byte(c.json))
			if err != nil {
				t.Fatal(err)
			}
			c.check(t, cfg)
		})
	}
}

func TestLoadNamesMissingTensor(t *testing.T) {
	// A config asking for more layers than the weights hold.
	dir := t.TempDir()
	src := filepath.Join("..", "testdata", "hf", "mixtral_f32")
	if err := os.Symlink(filepath.Join(mustAbs(t, src), "model.safetensors"), filepath.Join(dir, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), mutate(t, "num_hidden_layers", "5"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir)
	if !errors.Is(err, ErrWeights) || !strings.Contains(err.Error(), "model.layers.4.") {
		t.Fatalf("got %v, want ErrWeights naming a layer-4 tensor", err)
	}
	// And a shape mismatch.
	if err := os.WriteFile(filepath.Join(dir, "config.json"), mutate(t, "intermediate_size", "64"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir)
	if !errors.Is(err, ErrWeights) || !strings.Contains(err.Error(), "has shape") {
		t.Fatalf("got %v, want a shape error", err)
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func equalBools(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func FuzzParseConfig(f *testing.F) {
	for _, name := range []string{"mixtral_f32", "qwen2_moe", "train_tiny"} {
		b, err := os.ReadFile(filepath.Join("..", "testdata", "hf", name, "config.json"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err == nil && c.Validate() != nil {
			t.Fatal("ParseConfig accepted a config Validate rejects")
		}
	})
}

func TestShapesParse(t *testing.T) {
	for _, name := range ShapeNames() {
		b, err := ShapeConfig(name)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ParseConfig(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var params int
		for _, ts := range SpecFor(c.Arch).Tensors(c) {
			n := 1
			for _, d := range ts.Shape {
				n *= d
			}
			params += n
		}
		t.Logf("%s: %.2fB parameters", name, float64(params)/1e9)
		// Published totals: OLMoE 6.9B, Qwen1.5-MoE 14.3B, Mixtral 46.7B.
		want := map[string]float64{"olmoe-1b-7b": 6.92, "qwen1.5-moe-a2.7b": 14.32, "mixtral-8x7b": 46.70}[name]
		if want > 0 && math.Abs(float64(params)/1e9-want) > 0.02*want {
			t.Fatalf("%s: %.2fB parameters, published %.2fB", name, float64(params)/1e9, want)
		}
	}
}

func TestTensorsMatchLoad(t *testing.T) {
	// Spec.Tensors lists exactly the fixture's tensors.
	for _, name := range []string{"mixtral_f32", "qwen2_moe"} {
		dir := filepath.Join("..", "testdata", "hf", name)
		m, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, n := range m.set.Names() {
			names[n] = true
		}
		specs := SpecFor(m.Cfg.Arch).Tensors(m.Cfg)
		for _, ts := range specs {
			info, ok := m.set.Info(ts.Name)
			if !ok {
				t.Fatalf("%s: spec lists %s, not in the checkpoint", name, ts.Name)
			}
			if n, _ := info.Shape.Elements(); n != prod(ts.Shape) {
				t.Fatalf("%s: %s has %v, spec %v", name, ts.Name, info.Shape, ts.Shape)
			}
			delete(names, ts.Name)
		}
		if len(names) != 0 {
			t.Fatalf("%s: checkpoint tensors not in the spec: %v", name, names)
		}
		m.Close()
	}
}
