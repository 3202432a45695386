package model

import (
	"encoding/json"
	"fmt"
	"slices"
)

// MarshalHF returns c as a Hugging Face config.json that ParseConfig reads
// back to an equal Config. A model Mixtral can express (every layer MoE, no
// shared expert, no pre-gates, head_dim = hidden/heads, one window for all
// layers, no q/k norm or biases) is written as model_type "mixtral", so
// transformers loads it too; any other as moesys' own "moesys".
func (c *Config) MarshalHF() ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.QKNorm != QKNormNone || c.QKVBias || c.RotaryDim != c.Dh {
		return nil, fmt.Errorf("%w: %s: only Mixtral-style attention can be written as a moesys config", ErrConfig, c.Arch)
	}
	allMoE := !slices.Contains(c.MoE, false)
	window := c.Window[0]
	for _, w := range c.Window {
		if w != window {
			return nil, fmt.Errorf("%w: per-layer sliding windows %v cannot be written", ErrConfig, c.Window)
		}
	}
	m := map[string]any{
		"vocab_size": c.V, "hidden_size": c.D, "num_hidden_layers": c.L,
		"num_attention_heads": c.H, "num_key_value_heads": c.G,
		"num_local_experts": c.E, "num_experts_per_tok": c.K, "intermediate_size": c.ExpertFFN,
		"hidden_act": "silu", "max_position_embeddings": c.MaxPos, "rms_norm_eps": c.NormEps,
		"rope_theta": c.RopeTheta, "tie_word_embeddings": c.TieEmbeddings,
		"router_aux_loss_coef": c.AuxCoef, "router_jitter_noise": c.Jitter,
		"router_z_loss_coef": c.ZCoef, "capacity_factor": c.Capacity,
		"torch_dtype": "float32", "sliding_window": nil,
	}
	if window > 0 {
		m["sliding_window"] = window
	}
	if c.BOS >= 0 {
		m["bos_token_id"] = c.BOS
	}
	switch len(c.EOS) {
	case 0:
	case 1:
		m["eos_token_id"] = c.EOS[0]
	default:
		m["eos_token_id"] = c.EOS
	}
	if allMoE && c.SharedFFN == 0 && c.PregateDist == 0 && c.Tasks == 0 && c.Dh*c.H == c.D && c.NormTopK {
		m["model_type"] = "mixtral"
		m["architectures"] = []string{"MixtralForCausalLM"}
		return json.MarshalIndent(m, "", "  ")
	}
	m["model_type"] = "moesys"
	m["head_dim"] = c.Dh
	m["norm_topk_prob"] = c.NormTopK
	m["dense_intermediate_size"] = c.DenseFFN
	m["shared_expert_intermediate_size"] = c.SharedFFN
	m["pregate_distance"] = c.PregateDist
	if c.Tasks > 0 {
		m["moesys_tasks"], m["moesys_task_intermediate_size"] = c.Tasks, c.TaskFFN
	}
	// The MoE pattern: every moe_interval-th layer, minus mlp_only_layers.
	interval := 1
	for try := 1; try <= c.L; try++ {
		match := true
		for l, moe := range c.MoE {
			if moe && (l+1)%try != 0 {
				match = false
			}
		}
		if match {
			interval = try
		}
	}
	var only []int
	for l, moe := range c.MoE {
		if !moe && (l+1)%interval == 0 {
			only = append(only, l)
		}
	}
	m["moe_interval"] = interval
	if len(only) > 0 {
		m["mlp_only_layers"] = only
	}
	return json.MarshalIndent(m, "", "  ")
}
