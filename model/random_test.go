package model

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/moesys/moesys/safetensors"
	"github.com/moesys/moesys/tensor"
)

func TestWriteRandomLoadsAndRuns(t *testing.T) {
	cfg := []byte(`{"model_type":"qwen2_moe","vocab_size":50,"hidden_size":32,"num_hidden_layers":3,
		"num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":48,"moe_intermediate_size":16,
		"shared_expert_intermediate_size":24,"num_experts":6,"num_experts_per_tok":2,"decoder_sparse_step":1,
		"mlp_only_layers":[1]}`)
	for _, tc := range []struct {
		name  string
		dtype tensor.DType
		shard int64
	}{{"bf16-single", tensor.BF16, 0}, {"f32-sharded", tensor.F32, 40 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var calls int
			err := WriteRandom(dir, cfg, RandomOptions{DType: tc.dtype, Seed: 7, ShardBytes: tc.shard,
				Progress: func(done, total int64) { calls++ }})
			if err != nil {
				t.Fatal(err)
			}
			if calls == 0 {
				t.Fatal("no progress reported")
			}
			_, errIdx := os.Stat(filepath.Join(dir, safetensors.IndexFile))
			if (tc.shard > 0) != (errIdx == nil) {
				t.Fatalf("sharded=%v but index present=%v", tc.shard > 0, errIdx == nil)
			}
			m, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if m.Layers[1].MoE || !m.Layers[0].MoE || m.Layers[0].Shared == nil {
				t.Fatal("layer kinds not as configured")
			}
			if got := m.Layers[0].InNorm[3]; got != 1 {
				t.Fatalf("norm weight %g, want 1", got)
			}
			logits, err := m.NewSession(8).Forward([]int32{1, 2, 3})
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range logits {
				if v != v {
					t.Fatal("NaN logits")
				}
			}
		})
	}
	// Same seed, same bytes.
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		if err := WriteRandom(d, cfg, RandomOptions{Seed: 3}); err != nil {
			t.Fatal(err)
		}
	}
	x, _ := os.ReadFile(filepath.Join(a, "model.safetensors"))
	y, _ := os.ReadFile(filepath.Join(b, "model.safetensors"))
	if string(x) != string(y) {
		t.Fatal("same seed wrote different weights")
	}
}
