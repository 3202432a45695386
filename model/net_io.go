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
	cfg, err := n.Cfg.MarshalHF()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("model: save: %w", err)
	}
	ts := make([]safetensors.Tensor, 0, len(n.Params))
	for _, p := range n.Params {
		ts = append(ts, safetensors.Tensor{Name: p.Name, DType: tensor.F32, Shape: tensor.Shape(p.Shape), Data: encodeF32(p.W, bf16)})
		if bf16 {
			ts[len(ts)-1].DType = tensor.BF16
		}
	}
	if metadata == nil {
		metadata = map[string]string{}
	}
	metadata["format"] = "pt"
	if err := safetensors.WriteFile(filepath.Join(dir, WeightsFile), ts, metadata); err != nil {
		return fmt.Errorf("model: save weights: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "config.json"), append(cfg, '\n')); err != nil {
		return fmt.Errorf("model: save config: %w", err)
	}
	return nil
}

// encodeF32 returns w as little-endian f32 or bf16 (round to nearest even).
func encodeF32(w []float32, bf16 bool) []byte {
	if bf16 {
		b := make([]byte, 2*len(w))
		for i, v := range w {
			binary.LittleEndian.PutUint16(b[2*i:], tensor.F32ToBF16(v))
		}
		return b
	}
	b := make([]byte, 4*len(w))
	for i, v := range w {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

// LoadNet reads a checkpoint directory (config.json and safetensors) into
// a new Net for sequences up to maxT.
func LoadNet(dir string, maxT int) (*Net, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	n, err := NewNet(cfg, maxT)
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
