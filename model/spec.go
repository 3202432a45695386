package model

import "fmt"

// Spec names a checkpoint's tensors for one architecture (the Hugging Face
// names of each model_type).
type Spec struct {
	arch string
}

// SpecFor returns the naming of arch.
func SpecFor(arch string) Spec { return Spec{arch} }

func (s Spec) Embed() string { return "model.embed_tokens.weight" }
func (s Spec) Norm() string  { return "model.norm.weight" }
func (s Spec) Head() string  { return "lm_head.weight" }

func (s Spec) layer(l int, name string) string { return fmt.Sprintf("model.layers.%d.%s", l, name) }

func (s Spec) InNorm(l int) string   { return s.layer(l, "input_layernorm.weight") }
func (s Spec) PostNorm(l int) string { return s.layer(l, "post_attention_layernorm.weight") }

// Attn names a projection ("q", "k", "v", "o") weight or ("q", "k", "v") bias.
func (s Spec) Attn(l int, proj, kind string) string {
	return s.layer(l, fmt.Sprintf("self_attn.%s_proj.%s", proj, kind))
}

// QKNorm names the q or k normalisation weight ("q" or "k").
func (s Spec) QKNorm(l int, which string) string {
	return s.layer(l, fmt.Sprintf("self_attn.%s_norm.weight", which))
}

func (s Spec) moePrefix() string {
	if s.arch == "mixtral" {
		return "block_sparse_moe"
	}
	return "mlp"
}

// Router names the router (gate) weight (E, D).
func (s Spec) Router(l int) string { return s.layer(l, s.moePrefix()+".gate.weight") }

// Expert names expert e's gate, up and down projections.
func (s Spec) Expert(l, e int) (gate, up, down string) {
	if s.arch == "mixtral" {
		p := fmt.Sprintf("block_sparse_moe.experts.%d.", e)
		return s.layer(l, p+"w1.weight"), s.layer(l, p+"w3.weight"), s.layer(l, p+"w2.weight")
	}
	p := fmt.Sprintf("mlp.experts.%d.", e)
	return s.layer(l, p+"gate_proj.weight"), s.layer(l, p+"up_proj.weight"), s.layer(l, p+"down_proj.weight")
}

// Shared names the shared expert's projections and its sigmoid gate (Qwen2-MoE).
func (s Spec) Shared(l int) (gate, up, down, sgate string) {
	return s.layer(l, "mlp.shared_expert.gate_proj.weight"), s.layer(l, "mlp.shared_expert.up_proj.weight"),
		s.layer(l, "mlp.shared_expert.down_proj.weight"), s.layer(l, "mlp.shared_expert_gate.weight")
}

// Dense names a dense layer's MLP projections.
func (s Spec) Dense(l int) (gate, up, down string) {
	return s.layer(l, "mlp.gate_proj.weight"), s.layer(l, "mlp.up_proj.weight"), s.layer(l, "mlp.down_proj.weight")
}
