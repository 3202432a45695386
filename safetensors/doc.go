// Package safetensors reads and writes Hugging Face safetensors checkpoints,
// single-file and sharded. It knows the file format only, nothing of models.
//
// A file is an 8-byte little-endian header length N, N bytes of JSON
//
//	{"__metadata__": {"format": "pt"},
//	 "lm_head.weight": {"dtype": "F32", "shape": [256, 64], "data_offsets": [0, 65536]}, ...}
//
// and the data buffer, to whose start data_offsets are relative. Headers are
// untrusted input: ParseHeader validates them strictly (sizes, dtypes,
// offsets that tile the buffer exactly, no duplicate keys) and never panics.
//
// Reading maps the file read-only; tensors come back as zero-copy views that
// are valid until Close:
//
//	m, err := safetensors.OpenModel("testdata/hf/mixtral_f32") // model.safetensors or sharded index
//	if err != nil { ... }
//	defer m.Close()
//	w, err := m.F32("model.layers.0.block_sparse_moe.gate.weight") // (E, D) row-major
//	info, _ := m.Info("lm_head.weight")                            // DType, Shape, Offset, Size
//	raw, err := m.U16("model.embed_tokens.weight")                 // BF16/F16 bits, if stored so
//
// Writing is atomic (temporary file, fsync, rename, fsync of the directory)
// and lays data out as HF does, so files are byte-identical to HF's:
//
//	err := safetensors.WriteFile(path, []safetensors.Tensor{{Name: "w", DType: tensor.F32, Shape: tensor.Shape{2, 3}, Data: b}}, nil)
//	err = safetensors.WriteSharded(dir, tensors, nil, 5<<30) // shards + model.safetensors.index.json
//
// For checkpoints larger than memory, Create fixes the header up front and
// Writer.Write streams each tensor's bytes in chunks.
package safetensors
