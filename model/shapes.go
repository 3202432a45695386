package model

import (
	"encoding/json"
	"fmt"
	"sort"
)

// shapes are config.json files of real models' shapes (published configs)
// and moesys' Switch-like decoders, for random-weight checkpoints used in
// benchmarks.
var shapes = map[string]map[string]any{
	"olmoe-1b-7b": {
		"model_type": "olmoe", "vocab_size": 50304, "hidden_size": 2048, "intermediate_size": 1024,
		"num_hidden_layers": 16, "num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 64,
		"num_experts_per_tok": 8, "norm_topk_prob": false, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
		"max_position_embeddings": 4096, "tie_word_embeddings": false, "eos_token_id": 50279, "hidden_act": "silu",
	},
	"qwen1.5-moe-a2.7b": {
		"model_type": "qwen2_moe", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 5632,
		"moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "num_hidden_layers": 24,
		"num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 60, "num_experts_per_tok": 4,
		"norm_topk_prob": false, "decoder_sparse_step": 1, "mlp_only_layers": []int{}, "qkv_bias": true,
		"rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 8192,
		"use_sliding_window": false, "sliding_window": 32768, "max_window_layers": 21,
		"tie_word_embeddings": false, "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu",
	},
	"mixtral-8x7b": {
		"model_type": "mixtral", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
		"num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
		"num_experts_per_tok": 2, "rope_theta": 1000000.0, "rms_norm_eps": 1e-5, "max_position_embeddings": 32768,
		"sliding_window": nil, "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
	},
}

func init() {
	// Switch-Transformer-base-like decoders: d_model 768, d_ff 3072, 12
	// layers, MoE every other layer, top-1, byte vocabulary.
	for _, e := range []int{8, 64, 128} {
		shapes[fmt.Sprintf("switch-base-%d", e)] = map[string]any{
			"model_type": "moesys", "vocab_size": 256, "hidden_size": 768, "intermediate_size": 3072,
			"num_hidden_layers": 12, "num_attention_heads": 12, "num_key_value_heads": 12,
			"num_local_experts": e, "num_experts_per_tok": 1, "moe_interval": 2, "norm_topk_prob": false,
			"rope_theta": 10000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 2048,
			"tie_word_embeddings": false, "hidden_act": "silu",
		}
	}
}

// ShapeNames lists the named shapes, sorted.
func ShapeNames() []string {
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ShapeConfig returns the config.json of a named shape.
func ShapeConfig(name string) ([]byte, error) {
	s, ok := shapes[name]
	if !ok {
		return nil, fmt.Errorf("model: unknown shape %q (known: %v)", name, ShapeNames())
	}
	return json.MarshalIndent(s, "", "  ")
}
