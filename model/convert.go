package model

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/moesys/moesys/internal/atomicfile"
	"github.com/moesys/moesys/offload"
	"github.com/moesys/moesys/safetensors"
	"github.com/moesys/moesys/tensor"
)

// sideFiles are copied unchanged by the converters when present.
var sideFiles = []string{"config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"}

func copySideFiles(src, dst string) error {
	for _, name := range sideFiles {
		b, err := os.ReadFile(filepath.Join(src, name))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(dst, name), b); err != nil {
			return err
		}
	}
	return nil
}

// ConvertToOffload rewrites the checkpoint in src into the offloading
// layout in dst: dense tensors (attention, norms, routers, embeddings,
// shared experts) in dst/model.safetensors, every routed expert's gate, up
// and down tensors contiguous and 4 KiB aligned in dst/experts.bin with an
// index (see package offload). config.json and tokenizer files are copied.
func ConvertToOffload(src, dst string) error {
	cfg, err := LoadConfig(src)
	if err != nil {
		return err
	}
	set, err := safetensors.OpenModel(src)
	if err != nil {
		return err
	}
	defer set.Close()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	sp := SpecFor(cfg.Arch)
	inBlock := map[string]bool{}
	var blocks []offload.BlockSpec
	for l := 0; l < cfg.L; l++ {
		if !cfg.MoE[l] {
			continue
		}
		for e := 0; e < cfg.E; e++ {
			g, u, d := sp.Expert(l, e)
			bs := offload.BlockSpec{Layer: l, Expert: e}
			for _, name := range []string{g, u, d} {
				info, ok := set.Info(name)
				if !ok {
					return fmt.Errorf("%w: missing tensor %s", ErrWeights, name)
				}
				bs.Tensors = append(bs.Tensors, offload.TensorRef{Name: name, DType: info.DType.String(), Shape: info.Shape, Bytes: info.Size})
				inBlock[name] = true
			}
			blocks = append(blocks, bs)
		}
	}
	var dense []safetensors.Tensor
	for _, name := range set.Names() {
		if inBlock[name] {
			continue
		}
		info, _ := set.Info(name)
		data, err := set.Bytes(name)
		if err != nil {
			return err
		}
		dense = append(dense, safetensors.Tensor{Name: name, DType: info.DType, Shape: info.Shape, Data: data})
	}
	if _, err := offload.WriteLayout(dst, blocks, set.Bytes); err != nil {
		return err
	}
	if err := safetensors.WriteFile(filepath.Join(dst, safetensors.ModelFile), dense, map[string]string{"format": "pt", "moesys_layout": "offload-v1"}); err != nil {
		return err
	}
	return copySideFiles(src, dst)
}

// ConvertFromOffload turns an offloading layout back into a plain
// single-file checkpoint: every tensor bit for bit, in the standard
// safetensors order, streamed (expert blocks are read one at a time).
func ConvertFromOffload(src, dst string) error {
	lay, err := offload.OpenLayout(src)
	if err != nil {
		return err
	}
	dense, err := safetensors.Open(filepath.Join(src, safetensors.ModelFile))
	if err != nil {
		return err
	}
	defer dense.Close()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	infos := dense.Tensors()
	for _, blk := range lay.Blocks {
		for _, t := range blk.Tensors {
			info, err := refInfo(t)
			if err != nil {
				return err
			}
			infos = append(infos, info)
		}
	}
	meta := dense.Metadata()
	delete(meta, "moesys_layout")
	w, err := safetensors.Create(filepath.Join(dst, safetensors.ModelFile), infos, meta)
	if err != nil {
		return err
	}
	defer w.Abort()
	for _, t := range dense.Tensors() {
		data, err := dense.Bytes(t.Name)
		if err != nil {
			return err
		}
		if err := w.Write(t.Name, data); err != nil {
			return err
		}
	}
	if err := lay.ReadTensors(func(t offload.TensorRef, data []byte) error { return w.Write(t.Name, data) }); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return copySideFiles(src, dst)
}

func refInfo(t offload.TensorRef) (safetensors.TensorInfo, error) {
	dt, err := tensor.ParseDType(t.DType)
	if err != nil {
		return safetensors.TensorInfo{}, fmt.Errorf("%w: tensor %s: %v", offload.ErrLayout, t.Name, err)
	}
	return safetensors.TensorInfo{Name: t.Name, DType: dt, Shape: t.Shape}, nil
}
