package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/moesys/moesys/internal/atomicfile"
	"github.com/moesys/moesys/safetensors"
	"github.com/moesys/moesys/tensor"
	"golang.org/x/sys/unix"
)

// RandomOptions configure WriteRandom.
type RandomOptions struct {
	DType tensor.DType // F32 or BF16 (default BF16)
	Seed  uint64
	// ShardBytes caps one shard file (default 4 GiB); a model that fits one
	// shard is written as model.safetensors, else as an HF sharded index.
	ShardBytes int64
	// Std is the standard deviation of the random weights (default 0.02, the
	// HF initializer_range); they are uniform with that deviation.
	Std float64
	// Progress, if set, is called after each tensor with bytes done and total.
	Progress func(done, total int64)
}

// randomChunk is the number of elements generated and written at a time:
// the writer streams, so memory stays at one chunk whatever the model size.
const randomChunk = 1 << 20

// WriteRandom writes a checkpoint of the model configJSON describes, with
// random weights, to dir (created): config.json and model.safetensors or
// shards with an index. Weights stream to disk chunk by chunk; the free disk
// space is checked first. Each tensor's values depend only on the seed and
// the tensor's name, so shards can be regenerated identically.
func WriteRandom(dir string, configJSON []byte, o RandomOptions) error {
	c, err := ParseConfig(configJSON)
	if err != nil {
		return err
	}
	if o.DType == tensor.Invalid {
		o.DType = tensor.BF16
	}
	if o.DType != tensor.BF16 && o.DType != tensor.F32 {
		return fmt.Errorf("model: random weights in %v: want F32 or BF16", o.DType)
	}
	if o.ShardBytes <= 0 {
		o.ShardBytes = 4 << 30
	}
	if o.Std == 0 {
		o.Std = 0.02
	}
	specs := SpecFor(c.Arch).Tensors(c)
	esz := int64(o.DType.Size())
	var total int64
	for _, ts := range specs {
		total += int64(prod(ts.Shape)) * esz
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil {
		if free := int64(st.Bavail) * int64(st.Bsize); free < total+(64<<20) {
			return fmt.Errorf("model: %s needs %.1f GiB for the weights, %.1f GiB free", dir, float64(total)/(1<<30), float64(free)/(1<<30))
		}
	}
	// Assign tensors to shards in order.
	var shards [][]TensorSpec
	var size int64
	for _, ts := range specs {
		b := int64(prod(ts.Shape)) * esz
		if len(shards) == 0 || (size+b > o.ShardBytes && size > 0) {
			shards = append(shards, nil)
			size = 0
		}
		shards[len(shards)-1] = append(shards[len(shards)-1], ts)
		size += b
	}
	weightMap := map[string]string{}
	var done int64
	for i, shard := range shards {
		name := safetensors.ModelFile
		if len(shards) > 1 {
			name = safetensors.ShardName(i, len(shards))
		}
		if err := writeRandomShard(filepath.Join(dir, name), shard, o, &done, total); err != nil {
			return err
		}
		for _, ts := range shard {
			weightMap[ts.Name] = name
		}
	}
	if len(shards) > 1 {
		idx := safetensors.Index{Metadata: map[string]any{"total_size": total}, WeightMap: weightMap}
		if err := safetensors.WriteIndex(filepath.Join(dir, safetensors.IndexFile), idx); err != nil {
			return err
		}
	}
	// config.json last: a directory with a config is a complete checkpoint.
	return atomicfile.WriteFile(filepath.Join(dir, "config.json"), append(configJSON, '\n'))
}

func writeRandomShard(path string, specs []TensorSpec, o RandomOptions, done *int64, total int64) error {
	infos := make([]safetensors.TensorInfo, len(specs))
	for i, ts := range specs {
		infos[i] = safetensors.TensorInfo{Name: ts.Name, DType: o.DType, Shape: tensor.Shape(ts.Shape)}
	}
	w, err := safetensors.Create(path, infos, map[string]string{"format": "pt", "generator": "moesys random-model"})
	if err != nil {
		return err
	}
	defer w.Abort()
	esz := o.DType.Size()
	buf := make([]byte, randomChunk*esz)
	half := math.Sqrt(3) * o.Std // uniform on [-half, half) has deviation Std
	for _, ts := range specs {
		rng := rand.New(rand.NewPCG(o.Seed, nameHash(ts.Name)))
		n := prod(ts.Shape)
		for off := 0; off < n; off += randomChunk {
			m := min(randomChunk, n-off)
			for j := 0; j < m; j++ {
				var v float32
				switch ts.Kind {
				case "norm":
					v = 1
				case "weight":
					v = float32((rng.Float64()*2 - 1) * half)
				}
				if o.DType == tensor.BF16 {
					binary.LittleEndian.PutUint16(buf[2*j:], tensor.F32ToBF16(v))
				} else {
					binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(v))
				}
			}
			if err := w.Write(ts.Name, buf[:m*esz]); err != nil {
				return err
			}
		}
		*done += int64(n * esz)
		if o.Progress != nil {
			o.Progress(*done, total)
		}
	}
	return w.Close()
}

// nameHash is FNV-1a of a tensor name: the per-tensor RNG stream.
func nameHash(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// prod is the element count of a shape.
func prod(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}
