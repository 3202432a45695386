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
	return n.SaveWeightsFrom(dir, bf16, metadata, nil)
}

// SaveWeightsFrom is SaveWeights where fill, when set, may supply a
// Param's values instead of its W (a function that fills dst, the whole
// tensor, or nil to use W): the weights an owner keeps outside the Net
// are written one tensor at a time.
func (n *Net) SaveWeightsFrom(dir string, bf16 bool, metadata map[string]string, fill func(p *Param) func(dst []float32) error) error {
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
		t := F32Tensor{Name: p.Name, Shape: p.Shape, Data: p.W}
		if fill != nil {
			if f := fill(p); f != nil {
				t.Data, t.Fill = nil, f
			}
		}
		ts = append(ts, t)
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

// F32Tensor is a named f32 tensor to write: Data, or with Data nil, what
// Fill writes into a buffer of the shape's size when the tensor's turn
// comes (one such buffer at a time).
type F32Tensor struct {
	Name  string
	Shape []int
	Data  []float32
	Fill  func(dst []float32) error
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
	var filled []float32
	for _, t := range ts {
		data := t.Data
		if data == nil && t.Fill != nil {
			n := 1
			for _, d := range t.Shape {
				n *= d
			}
			if cap(filled) < n {
				filled = make([]float32, n)
			}
			data = filled[:n]
			if err := t.Fill(data); err != nil {
				return fmt.Errorf("%s: %w", t.Name, err)
			}
		}
		for lo := 0; lo < len(data); lo += writeChunk {
			chunk := data[lo:min(lo+writeChunk, len(data))]
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
	return LoadNetOpts(dir, maxT, rank, W, NetOptions{})
}

// LoadNetOpts is LoadNetShard with options: with ExpertsOutside, the
// routed experts' tensors are not read.
func LoadNetOpts(dir string, maxT, rank, W int, o NetOptions) (*Net, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	n, err := NewNetOpts(cfg, maxT, rank, W, o)
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
