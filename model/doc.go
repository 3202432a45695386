// Package model turns a checkpoint directory (config.json + safetensors) into
// a runnable MoE transformer: Config parses and validates the Hugging Face
// config of each supported architecture (mixtral, qwen2_moe, qwen3_moe, olmoe)
// and moesys' own; Spec names each tensor; Load maps the weights (zero-copy
// where the file's dtype is used as is); a Session runs the forward pass with
// a preallocated KV cache: batched prefill and single-token decode.
// LoadOffloaded opens a checkpoint in the offload layout (ConvertToOffload)
// without its routed experts, which a moe.ExpertSource (offload.Scheduler)
// then supplies under a memory budget, layer by layer; the model sends a
// moe.Prefetcher its pre-gates' routing of later layers, and a
// moe.Speculator that asks its predictions of the next layer's experts.
//
//	m, err := model.Load("testdata/hf/mixtral_f32", model.LoadOptions{})
//	s := m.NewSession(512)                 // KV cache for 512 positions
//	logits := s.Forward([]int32{1, 2, 3}) // (3, V), valid until the next call
package model
