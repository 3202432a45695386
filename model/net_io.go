package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/moesys/moesys/internal/atomicfile"
	"github.com/moesys/moesys/safetensors"
	"github.com/moesys/moesys/tensor"
)

// WeightsFile is the safetensors file a Net saves its weights to.
const WeightsFile = "model.safetensors"

// SaveWeights writes the Net as a Hugging Face checkpoint into dir:
// config.json and model.safetensors (f32, or bf16 when bf16 is set), each
// replaced atomically. The inference path (Load) reads it.
func (n *Net) SaveWeights(dir string, bf16 bool, metadata map[string]string) error {
	if n.Sharded() {
		return fmt.Errorf("%w: SaveWeights: this Net holds experts [%d, %d) of %d only (a parallel run saves sharded checkpoints)", ErrConfig, n.heldFirst, n.heldFirst+n.heldN, n.Cfg.E)
	}
	cfg, err := n.Cfg.MarshalHF()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("model: save: %w", err)
	}
	ts := make([]F32Tensor, 0, len(n.Params))
	for _, p := range n.Params {
		ts = append(ts, F32Tensor{Name: p.Name, Shape: p.Shape, Data: p.W})
	}
	if metadata == nil {
		metadata = map[string]string{}
	}
	metadata["format"] = "pt"
	if err := WriteF32Tensors(filepath.Join(dir, WeightsFile), ts, bf16, metadata); err != nil {
		return fmt.Errorf("model: save weights: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "config.json"), append(cfg, '\n')); err != nil {
		return fmt.Errorf("model: save config: %w", err)
	}
	return nil
}

// F32Tensor is a named f32 tensor to write.
type F32Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// writeChunk is how many elements WriteF32Tensors encodes at a time: the
// file is streamed, so saving needs this much extra memory, not a copy of
// the model.
const writeChunk = 1 << 20

// WriteF32Tensors writes ts as a safetensors file at path, atomically, as
// f32 or (bf16) rounded to bf16, streaming in chunks.
func WriteF32Tensors(path string, ts []F32Tensor, bf16 bool, metadata map[string]string) error {
	dt, esz := tensor.F32, 4
	if bf16 {
		dt, esz = tensor.BF16, 2
	}
	infos := make([]safetensors.TensorInfo, len(ts))
	for i, t := range ts {
		infos[i] = safetensors.TensorInfo{Name: t.Name, DType: dt, Shape: tensor.Shape(t.Shape)}
	}
	w, err := safetensors.Create(path, infos, metadata)
	if err != nil {
		return err
	}
	defer w.Abort()
	buf := make([]byte, writeChunk*esz)
	for _, t := range ts {
		for lo := 0; lo < len(t.Data); lo += writeChunk {
			chunk := t.Data[lo:min(lo+writeChunk, len(t.Data))]
			b := buf[:len(chunk)*esz]
			for i, v := range chunk {
				if bf16 {
					binary.LittleEndian.PutUint16(b[2*i:], tensor.F32ToBF16(v))
				} else {
					binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
				}
			}
			if err := w.Write(t.Name, b); err != nil {
				return err
			}
		}
	}
	return w.Close()
}

// LoadNet reads a checkpoint directory (config.json and safetensors) into
// a new Net for sequences up to maxT.
func LoadNet(dir string, maxT int) (*Net, error) {
	return LoadNetShard(dir, maxT, 0, 1)
}

// LoadNetShard is LoadNet into NewNetShard's Net for rank `rank` of W:
// only that rank's experts are read.
func LoadNetShard(dir string, maxT, rank, W int) (*Net, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	n, err := NewNetShard(cfg, maxT, rank, W)
	if err != nil {
		return nil, err
	}
	set, err := safetensors.OpenModel(dir)
	if err != nil {
		return nil, fmt.Errorf("model: open weights: %w", err)
	}
	defer set.Close()
	if err := n.LoadWeights(set); err != nil {
		return nil, err
	}
	return n, nil
}
