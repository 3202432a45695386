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

// mixtralNames reports whether MoE layers use Mixtral's tensor names.
func (s Spec) mixtralNames() bool { return s.arch == "mixtral" || s.arch == "moesys" }

func (s Spec) moePrefix() string {
	if s.mixtralNames() {
		return "block_sparse_moe"
	}
	return "mlp"
}

// Router names the router (gate) weight (E, D).
func (s Spec) Router(l int) string { return s.layer(l, s.moePrefix()+".gate.weight") }

// Pregate names the pre-gate weight (E, D) of layer l: applied to l's MoE
// input, it routes a later MoE layer (Config.PregateTarget).
func (s Spec) Pregate(l int) string { return s.layer(l, s.moePrefix()+".pregate.weight") }

// Expert names expert e's gate, up and down projections.
func (s Spec) Expert(l, e int) (gate, up, down string) {
	if s.mixtralNames() {
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

// TensorSpec is one tensor a checkpoint of a Config holds.
type TensorSpec struct {
	Name  string
	Shape []int
	// Kind says how a fresh tensor is initialised: "weight" (random),
	// "norm" (ones), "bias" (zeros).
	Kind string
}

// Tensors lists every tensor a checkpoint of c holds, layer by layer, in the
// order Load reads them.
func (s Spec) Tensors(c *Config) []TensorSpec {
	var ts []TensorSpec
	add := func(name, kind string, shape ...int) { ts = append(ts, TensorSpec{name, shape, kind}) }
	qd, kd := c.H*c.Dh, c.G*c.Dh
	add(s.Embed(), "weight", c.V, c.D)
	for l := 0; l < c.L; l++ {
		add(s.InNorm(l), "norm", c.D)
		add(s.Attn(l, "q", "weight"), "weight", qd, c.D)
		add(s.Attn(l, "k", "weight"), "weight", kd, c.D)
		add(s.Attn(l, "v", "weight"), "weight", kd, c.D)
		add(s.Attn(l, "o", "weight"), "weight", c.D, qd)
		if c.QKVBias {
			add(s.Attn(l, "q", "bias"), "bias", qd)
			add(s.Attn(l, "k", "bias"), "bias", kd)
			add(s.Attn(l, "v", "bias"), "bias", kd)
		}
		switch c.QKNorm {
		case QKNormPerHead:
			add(s.QKNorm(l, "q"), "norm", c.Dh)
			add(s.QKNorm(l, "k"), "norm", c.Dh)
		case QKNormFull:
			add(s.QKNorm(l, "q"), "norm", qd)
			add(s.QKNorm(l, "k"), "norm", kd)
		}
		add(s.PostNorm(l), "norm", c.D)
		if !c.MoE[l] {
			g, u, d := s.Dense(l)
			add(g, "weight", c.DenseFFN, c.D)
			add(u, "weight", c.DenseFFN, c.D)
			add(d, "weight", c.D, c.DenseFFN)
			continue
		}
		if c.RouteSource(l) < 0 {
			add(s.Router(l), "weight", c.E, c.D)
		}
		if c.PregateTarget(l) >= 0 {
			add(s.Pregate(l), "weight", c.E, c.D)
		}
		for e := 0; e < c.E; e++ {
			g, u, d := s.Expert(l, e)
			add(g, "weight", c.ExpertFFN, c.D)
			add(u, "weight", c.ExpertFFN, c.D)
			add(d, "weight", c.D, c.ExpertFFN)
		}
		if c.SharedFFN > 0 {
			g, u, d, sg := s.Shared(l)
			add(g, "weight", c.SharedFFN, c.D)
			add(u, "weight", c.SharedFFN, c.D)
			add(d, "weight", c.D, c.SharedFFN)
			add(sg, "weight", 1, c.D)
		}
	}
	add(s.Norm(), "norm", c.D)
	if !c.TieEmbeddings {
		add(s.Head(), "weight", c.V, c.D)
	}
	return ts
}
