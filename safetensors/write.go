package safetensors

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/moesys/moesys/tensor"
)

// Tensor is a tensor held in memory, for writing. Data holds the raw
// little-endian elements, len(Data) == elements(Shape) * DType.Size().
type Tensor struct {
	Name  string
	DType tensor.DType
	Shape tensor.Shape
	Data  []byte
}

// WriteFile atomically writes tensors and metadata as a safetensors file at
// path, laid out as Create describes (byte-identical to HF's writer for the
// same tensors and metadata). It does not retain tensors. Errors for bad
// names, dtypes, shapes or data sizes wrap ErrInvalid.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) error {
	infos, err := specsOf(tensors)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	w, err := Create(path, infos, metadata)
	if err != nil {
		return err
	}
	for _, t := range tensors {
		if err := w.Write(t.Name, t.Data); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Close()
}

// specsOf checks each tensor's data size against its dtype and shape.
func specsOf(tensors []Tensor) ([]TensorInfo, error) {
	infos := make([]TensorInfo, len(tensors))
	for i, t := range tensors {
		size, err := byteSize(t.DType, t.Shape)
		if err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %v", ErrInvalid, t.Name, err)
		}
		if int64(len(t.Data)) != size {
			return nil, fmt.Errorf("%w: tensor %q: %v %v needs %d bytes, Data has %d",
				ErrInvalid, t.Name, t.DType, t.Shape, size, len(t.Data))
		}
		infos[i] = TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape}
	}
	return infos, nil
}

// WriteSharded writes tensors as a sharded checkpoint in dir (created if
// needed): shards named ShardName(i, n), each holding consecutive tensors of
// the slice until adding the next would pass maxShardBytes of tensor data (a
// tensor larger than that gets a shard of its own; maxShardBytes <= 0 means
// one shard), each shard with metadata; then IndexFile, with
// {"total_size": bytes} metadata. OpenModel(dir) reads the result.
//
// Each file is replaced atomically and the index is written last, but the
// checkpoint as a whole is not: files of an earlier checkpoint in dir are
// overwritten or left behind. To replace a checkpoint atomically, write a
// fresh directory and rename it into place. For models larger than memory,
// do what WriteSharded does with Create and WriteIndex.
func WriteSharded(dir string, tensors []Tensor, metadata map[string]string, maxShardBytes int64) error {
	if _, err := specsOf(tensors); err != nil {
		return fmt.Errorf("write %s: %w", dir, err)
	}
	seen := make(map[string]bool, len(tensors))
	for _, t := range tensors {
		if seen[t.Name] {
			return fmt.Errorf("write %s: %w: duplicate tensor name %q", dir, ErrInvalid, t.Name)
		}
		seen[t.Name] = true
	}
	// Group consecutive tensors greedily, as transformers does.
	var shards [][]Tensor
	var cur []Tensor
	var curBytes, total int64
	for _, t := range tensors {
		n := int64(len(t.Data))
		if len(cur) > 0 && maxShardBytes > 0 && curBytes+n > maxShardBytes {
			shards = append(shards, cur)
			cur, curBytes = nil, 0
		}
		cur = append(cur, t)
		curBytes += n
		total += n
	}
	if len(cur) > 0 || len(shards) == 0 {
		shards = append(shards, cur)
	}
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	idx := Index{Metadata: map[string]any{"total_size": total}, WeightMap: map[string]string{}}
	for i, group := range shards {
		name := ShardName(i, len(shards))
		for _, t := range group {
			idx.WeightMap[t.Name] = name
		}
		if err := WriteFile(filepath.Join(dir, name), group, metadata); err != nil {
			return err
		}
	}
	return WriteIndex(filepath.Join(dir, IndexFile), idx)
}
