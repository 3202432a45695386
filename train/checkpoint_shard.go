package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/internal/atomicfile"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/safetensors"
)

// Sharded checkpoints. A parallel run's checkpoint (W > 1 ranks) has the
// same directory layout as a single process's, with the weights and the
// optimizer state sharded by rank in Hugging Face's sharded form: rank r
// writes model-(r+1)-of-W.safetensors (its experts; rank 0's also holds
// every dense parameter) and optimizer-(r+1)-of-W.safetensors (the same
// parameters' AdamW moments and fp32 masters); rank 0 writes config.json,
// the two index files mapping each tensor to its shard, and trainer.json
// last: trainer.json is the manifest, and a checkpoint directory without
// it is ignored (ResolveCheckpoint). Every rank writes into one temporary
// directory, which rank 0 renames into place once all shards are down, so
// the run's directory must be on storage every rank sees. Tensors are
// found by name, so any world size resumes any checkpoint (each rank reads
// the dense parameters and its own experts) and inference loads it as any
// sharded Hugging Face checkpoint.
const (
	// OptimizerIndexFile indexes a sharded checkpoint's optimizer shards.
	OptimizerIndexFile = "optimizer.safetensors.index.json"
)

// optimizerShardName is the optimizer shard of rank i of n.
func optimizerShardName(i, n int) string {
	return fmt.Sprintf("optimizer-%05d-of-%05d.safetensors", i+1, n)
}

// saveSharded is Save of a parallel run: a collective.
func (t *Trainer) saveSharded(out string, keepLast int) (string, error) {
	ctx := t.par.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	c := t.par.comm
	W, r := c.Size(), c.Rank()
	name := CheckpointName(t.Step)
	final := filepath.Join(out, name)
	tmp := filepath.Join(out, ".tmp-"+name)
	var err error
	if r == 0 {
		err = os.MkdirAll(out, 0o755)
		if err == nil {
			err = os.RemoveAll(tmp) // a crashed save's leftovers
		}
		if err == nil {
			err = os.Mkdir(tmp, 0o755)
		}
		if err != nil {
			err = fmt.Errorf("train: checkpoint: %w", err)
		}
	}
	if err := dist.Agree(ctx, c, "checkpoint directory", err); err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // no-op after the rename

	// Every rank: its shard of the weights and of the optimizer state.
	var ws, os_ []model.F32Tensor
	var serr error       // reported with the shards, so every rank stays in step
	if t.sparse != nil { // its experts', from their records
		if serr = t.sparse.flush(ctx); serr == nil {
			ws, os_ = t.sparse.weightTensors(), t.sparse.appendTensors(nil)
		}
	}
	ei := t.embedIndex()
	for i, p := range t.params {
		np := t.Net.Params[t.idx[i]]
		if i == ei || !t.par.writes(t.Net, np) {
			continue // replicated: rank 0 (or the task group's first rank) writes it
		}
		shape := np.Shape
		ws = append(ws, model.F32Tensor{Name: p.Name, Shape: shape, Data: np.W})
		os_ = append(os_, model.F32Tensor{Name: p.Name + ".exp_avg", Shape: shape, Data: p.M},
			model.F32Tensor{Name: p.Name + ".exp_avg_sq", Shape: shape, Data: p.V})
		if t.master != nil {
			os_ = append(os_, model.F32Tensor{Name: p.Name + ".master", Shape: shape, Data: t.master[i]})
		}
	}
	if z := t.par.zero; z != nil {
		// The dense tensors whole, from every rank's shard: rank 0 writes
		// them, as it writes replicated ones.
		full, err := z.gatherAll(ctx)
		if err != nil {
			return "", fmt.Errorf("train: checkpoint: %w", err)
		}
		for _, f := range full {
			if r != 0 {
				break
			}
			ws = append(ws, model.F32Tensor{Name: f.p.Name, Shape: f.p.Shape, Data: f.w})
			os_ = append(os_, model.F32Tensor{Name: f.p.Name + ".exp_avg", Shape: f.p.Shape, Data: f.m},
				model.F32Tensor{Name: f.p.Name + ".exp_avg_sq", Shape: f.p.Shape, Data: f.v})
			if f.master != nil {
				os_ = append(os_, model.F32Tensor{Name: f.p.Name + ".master", Shape: f.p.Shape, Data: f.master})
			}
		}
	}
	if ei >= 0 {
		// The partitioned embedding whole, gathered by columns: a
		// safetensors tensor is whole, so rank 0 writes it.
		f, err := t.embedWhole(ctx)
		if err != nil {
			return "", fmt.Errorf("train: checkpoint: %w", err)
		}
		if r == 0 {
			ws = append(ws, model.F32Tensor{Name: f.name, Shape: f.shape, Data: f.w})
			os_ = append(os_, model.F32Tensor{Name: f.name + ".exp_avg", Shape: f.shape, Data: f.m},
				model.F32Tensor{Name: f.name + ".exp_avg_sq", Shape: f.shape, Data: f.v})
			if f.master != nil {
				os_ = append(os_, model.F32Tensor{Name: f.name + ".master", Shape: f.shape, Data: f.master})
			}
		}
	}
	meta := map[string]string{"format": "pt", "step": strconv.Itoa(t.Step), "producer": "moesys train", "rank": strconv.Itoa(r), "world": strconv.Itoa(W)}
	err = serr
	if err == nil {
		err = model.WriteF32Tensors(filepath.Join(tmp, safetensors.ShardName(r, W)), ws, t.Opts.BF16, meta)
	}
	if err == nil {
		err = model.WriteF32Tensors(filepath.Join(tmp, optimizerShardName(r, W)), os_, false, meta)
	}
	if err != nil {
		err = fmt.Errorf("train: checkpoint shard of rank %d: %w", r, err)
	}
	if err := dist.Agree(ctx, c, "checkpoint shards", err); err != nil {
		return "", err
	}

	// Rank 0: config, indexes, the manifest, then the rename.
	if r == 0 {
		err = t.finishSharded(out, tmp, final, name, keepLast)
	}
	if err := dist.Agree(ctx, c, "checkpoint manifest", err); err != nil {
		return "", err
	}
	return final, nil
}

// finishSharded is rank 0's part of saveSharded once every shard is in
// tmp: the shards' indexes (read back from their headers), config.json,
// trainer.json, the rename and "latest".
func (t *Trainer) finishSharded(out, tmp, final, name string, keepLast int) error {
	W := t.par.comm.Size()
	fail := func(err error) error { return fmt.Errorf("train: checkpoint: %w", err) }
	model, opt := safetensors.Index{WeightMap: map[string]string{}}, safetensors.Index{WeightMap: map[string]string{}}
	var total int64
	for r := range W {
		for _, sh := range []struct {
			idx  *safetensors.Index
			file string
		}{{&model, safetensors.ShardName(r, W)}, {&opt, optimizerShardName(r, W)}} {
			f, err := safetensors.Open(filepath.Join(tmp, sh.file))
			if err != nil {
				return fail(err)
			}
			for _, ti := range f.Tensors() {
				sh.idx.WeightMap[ti.Name] = sh.file
				if sh.idx == &model {
					total += ti.Size
				}
			}
			f.Close()
		}
	}
	model.Metadata = map[string]any{"total_size": total}
	opt.Metadata = map[string]any{"adam_steps": strconv.Itoa(t.adam.Steps())}
	if err := safetensors.WriteIndex(filepath.Join(tmp, safetensors.IndexFile), model); err != nil {
		return fail(err)
	}
	if err := safetensors.WriteIndex(filepath.Join(tmp, OptimizerIndexFile), opt); err != nil {
		return fail(err)
	}
	cfg, err := t.Net.Cfg.MarshalHF()
	if err != nil {
		return fail(err)
	}
	if err := atomicfile.WriteFile(filepath.Join(tmp, "config.json"), append(cfg, '\n')); err != nil {
		return fail(err)
	}
	st, err := json.MarshalIndent(trainerState{Format: formatVersion, Step: t.Step, Tokens: t.tokens, Options: t.Opts, World: W}, "", "  ")
	if err != nil {
		return fail(err)
	}
	if err := atomicfile.WriteFile(filepath.Join(tmp, TrainerFile), append(st, '\n')); err != nil {
		return fail(err)
	}
	if err := atomicfile.SyncDir(tmp); err != nil {
		return fail(err)
	}
	return publish(out, tmp, final, name, keepLast)
}

// publish renames a complete checkpoint directory tmp into place as final
// (out/name), points out/latest at it and prunes old ones.
func publish(out, tmp, final, name string, keepLast int) error {
	fail := func(err error) error { return fmt.Errorf("train: checkpoint: %w", err) }
	if err := os.RemoveAll(final); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fail(err)
	}
	if err := atomicfile.SyncDir(out); err != nil {
		return fail(err)
	}
	if err := atomicfile.WriteFile(filepath.Join(out, LatestFile), []byte(name+"\n")); err != nil {
		return fail(err)
	}
	if keepLast > 0 {
		prune(out, keepLast)
	}
	return nil
}

// tensorSource is what Resume reads optimizer tensors from: one file or a
// sharded set.
type tensorSource interface {
	Info(name string) (safetensors.TensorInfo, bool)
	Bytes(name string) ([]byte, error)
	Metadata() map[string]string
	Close() error
}

// openOptimizer opens a checkpoint's optimizer state: the shards its index
// names, or the single file.
func openOptimizer(dir string) (tensorSource, error) {
	idx := filepath.Join(dir, OptimizerIndexFile)
	if _, err := os.Stat(idx); err == nil {
		return safetensors.OpenIndex(idx)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return safetensors.Open(filepath.Join(dir, OptimizerFile))
}
