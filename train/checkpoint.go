package train

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/internal/atomicfile"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/tensor"
)

// ErrCheckpoint is wrapped by every unreadable, corrupt or mismatched
// checkpoint.
var ErrCheckpoint = errors.New("train: bad checkpoint")

// Checkpoint files. A checkpoint is a directory step-NNNNNNNN under the
// run's output directory holding config.json and model.safetensors (a
// Hugging Face checkpoint the inference path loads), optimizer.safetensors
// (AdamW moments, and fp32 masters when training in bf16) and trainer.json;
// the file "latest" in the output directory names the newest one.
const (
	OptimizerFile = "optimizer.safetensors"
	TrainerFile   = "trainer.json"
	LatestFile    = "latest"
	formatVersion = 1
)

// trainerState is trainer.json.
type trainerState struct {
	Format  int     `json:"format"`
	Step    int     `json:"step"`
	Tokens  int64   `json:"tokens"`
	Options Options `json:"options"`
	World   int     `json:"world,omitempty"` // ranks that wrote it (sharded when > 1)
}

// CheckpointName returns the directory name of the checkpoint after step.
func CheckpointName(step int) string { return fmt.Sprintf("step-%08d", step) }

// Save writes a checkpoint of the current step into out (created if needed)
// and points out/latest at it. The checkpoint directory is written under a
// temporary name and renamed into place, so a crash leaves either the whole
// checkpoint or none. keepLast > 0 deletes older checkpoints beyond the
// newest keepLast. It returns the checkpoint's path.
//
// In a parallel run Save is a collective (every rank calls it) and writes a
// sharded checkpoint (see OptimizerIndexFile).
func (t *Trainer) Save(out string, keepLast int) (string, error) {
	if t.par != nil && (t.par.comm.Size() > 1 || t.par.zero != nil) {
		return t.saveSharded(out, keepLast)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", fmt.Errorf("train: checkpoint: %w", err)
	}
	name := CheckpointName(t.Step)
	final := filepath.Join(out, name)
	tmp, err := os.MkdirTemp(out, ".tmp-"+name+"-")
	if err != nil {
		return "", fmt.Errorf("train: checkpoint: %w", err)
	}
	defer os.RemoveAll(tmp)                      // no-op after the rename
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes it private
		return "", fmt.Errorf("train: checkpoint: %w", err)
	}
	meta := map[string]string{"step": strconv.Itoa(t.Step), "producer": "moesys train"}
	if t.sparse != nil { // the experts' weights current, their state written back
		if err := t.sparse.flush(context.Background()); err != nil {
			return "", fmt.Errorf("train: checkpoint: %w", err)
		}
	}
	var fill func(p *model.Param) func([]float32) error
	if t.sparse != nil { // the experts' weights come from their records
		fill = func(p *model.Param) func([]float32) error { return t.sparse.fill(p, partW) }
	}
	if err := t.Net.SaveWeightsFrom(tmp, t.Opts.BF16, meta, fill); err != nil {
		return "", err
	}
	var ts []model.F32Tensor
	for i, p := range t.params {
		shape := t.Net.Params[t.idx[i]].Shape
		ts = append(ts, model.F32Tensor{Name: p.Name + ".exp_avg", Shape: shape, Data: p.M},
			model.F32Tensor{Name: p.Name + ".exp_avg_sq", Shape: shape, Data: p.V})
		if t.master != nil {
			ts = append(ts, model.F32Tensor{Name: p.Name + ".master", Shape: shape, Data: t.master[i]})
		}
	}
	if t.sparse != nil {
		ts = t.sparse.appendTensors(ts)
	}
	if err := model.WriteF32Tensors(filepath.Join(tmp, OptimizerFile), ts, false, map[string]string{"adam_steps": strconv.Itoa(t.adam.Steps())}); err != nil {
		return "", fmt.Errorf("train: checkpoint optimizer: %w", err)
	}
	st, err := json.MarshalIndent(trainerState{Format: formatVersion, Step: t.Step, Tokens: t.tokens, Options: t.Opts}, "", "  ")
	if err != nil {
		return "", err
	}
	if err := atomicfile.WriteFile(filepath.Join(tmp, TrainerFile), append(st, '\n')); err != nil {
		return "", fmt.Errorf("train: checkpoint state: %w", err)
	}
	if err := publish(out, tmp, final, name, keepLast); err != nil {
		return "", err
	}
	return final, nil
}

// prune deletes all but the newest keep checkpoints in out (best effort).
func prune(out string, keep int) {
	entries, err := os.ReadDir(out)
	if err != nil {
		return
	}
	var steps []string
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), "step-") {
			steps = append(steps, e.Name())
		}
	}
	sort.Strings(steps) // zero-padded: lexical = numeric
	for len(steps) > keep {
		os.RemoveAll(filepath.Join(out, steps[0]))
		steps = steps[1:]
	}
}

// ResolveCheckpoint returns the checkpoint directory path names: a
// checkpoint itself (it has trainer.json), a run's output directory (its
// latest checkpoint) or that directory's latest file.
func ResolveCheckpoint(path string) (string, error) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && filepath.Base(path) == LatestFile {
		path = filepath.Dir(path)
	}
	if _, err := os.Stat(filepath.Join(path, TrainerFile)); err == nil {
		return path, nil
	}
	b, err := os.ReadFile(filepath.Join(path, LatestFile))
	if err != nil {
		return "", fmt.Errorf("%w: %s is neither a checkpoint (no %s) nor a run directory (no %s)", ErrCheckpoint, path, TrainerFile, LatestFile)
	}
	name := strings.TrimSpace(string(b))
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return "", fmt.Errorf("%w: %s names %q", ErrCheckpoint, filepath.Join(path, LatestFile), name)
	}
	return filepath.Join(path, name), nil
}

// ReadCheckpointOptions returns the options a checkpoint was trained with
// (the model config from its config.json) and its step.
func ReadCheckpointOptions(dir string) (Options, int, error) {
	b, err := os.ReadFile(filepath.Join(dir, TrainerFile))
	if err != nil {
		return Options{}, 0, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	var st trainerState
	if err := json.Unmarshal(b, &st); err != nil {
		return Options{}, 0, fmt.Errorf("%w: %s: %v", ErrCheckpoint, filepath.Join(dir, TrainerFile), err)
	}
	if st.Format != formatVersion {
		return Options{}, 0, fmt.Errorf("%w: %s has format %d, this moesys reads %d", ErrCheckpoint, dir, st.Format, formatVersion)
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return Options{}, 0, fmt.Errorf("%w: %s: %v", ErrCheckpoint, dir, err)
	}
	st.Options.Model = cfg
	return st.Options, st.Step, nil
}

// Resume rebuilds a Trainer from checkpoint dir with options o (normally
// the checkpoint's own, from ReadCheckpointOptions, with Steps or the eval
// and save cadence changed). The model and batch shape must match the
// checkpoint's. Weights, optimizer state, step and token counts are
// restored; batches and jitter are functions of (seed, step), so the run
// continues exactly as if it had not stopped.
func Resume(dir string, o Options, corpus *Corpus) (*Trainer, error) {
	return ResumeParallel(dir, o, corpus, nil)
}

// ResumeParallel is Resume for rank c.Rank() of a parallel run (c nil: one
// process). The checkpoint may come from any number of ranks: each rank
// reads the dense parameters and its own experts by name (resharding).
func ResumeParallel(dir string, o Options, corpus *Corpus, c dist.Comm) (*Trainer, error) {
	saved, step, err := ReadCheckpointOptions(dir)
	if err != nil {
		return nil, err
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if err := sameRun(saved, o); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCheckpoint, dir, err)
	}
	if err := corpus.Check(o.Seq); err != nil {
		return nil, err
	}
	rank, W := 0, 1
	if c != nil {
		rank, W = c.Rank(), c.Size()
	}
	net, err := model.LoadNetOpts(dir, o.Seq, rank, W, model.NetOptions{ExpertsOutside: o.Storage != nil})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCheckpoint, dir, err)
	}
	var src expertSource
	if o.Storage != nil { // the experts' weights go from the checkpoint to their records
		src = checkpointExperts(dir, net)
	}
	t, err := newTrainer(o, corpus, net, c, src)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			t.Close() // the storage tiers' goroutines, files and mappings
		}
	}()
	set, err := openOptimizer(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	defer set.Close()
	read := func(name string, dst []float32) error {
		info, ok := set.Info(name)
		if !ok || info.DType != tensor.F32 || info.Shape.NumElements() != len(dst) {
			return fmt.Errorf("%w: %s: tensor %s missing or mis-shaped", ErrCheckpoint, OptimizerFile, name)
		}
		raw, err := set.Bytes(name)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCheckpoint, err)
		}
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		return nil
	}
	ei := t.embedIndex()
	var whole []float32 // a partitioned embedding's whole tensor, read before taking this rank's columns
	if ei >= 0 {
		whole = make([]float32, o.Model.V*o.Model.D)
	}
	for i, p := range t.params {
		for _, x := range []struct {
			suffix string
			dst    []float32
		}{{".exp_avg", p.M}, {".exp_avg_sq", p.V}, {".master", nil}} {
			if x.suffix == ".master" {
				if t.master == nil {
					break
				}
				x.dst = t.master[i]
			}
			if i != ei {
				if err := read(p.Name+x.suffix, x.dst); err != nil {
					return nil, err
				}
				continue
			}
			if err := read(p.Name+x.suffix, whole); err != nil {
				return nil, err
			}
			t.embedColumns(x.dst, whole)
		}
	}
	if t.master != nil {
		t.syncBF16()
	}
	adamSteps, err := strconv.Atoi(set.Metadata()["adam_steps"])
	if err != nil {
		return nil, fmt.Errorf("%w: %s: adam_steps: %v", ErrCheckpoint, OptimizerFile, err)
	}
	t.adam.SetSteps(adamSteps)
	if t.sparse != nil {
		if err := t.sparse.load(read, adamSteps); err != nil {
			return nil, err
		}
	}
	if o.ShardDense {
		if err := t.shardDense(); err != nil {
			return nil, err
		}
	}
	t.Step = step
	ok = true
	return t, nil
}

// sameRun reports how o differs from saved where resuming needs them equal.
func sameRun(saved, o Options) error {
	a, err := saved.Model.MarshalHF()
	if err != nil {
		return err
	}
	b, err := o.Model.MarshalHF()
	if err != nil {
		return err
	}
	switch {
	case string(a) != string(b):
		return fmt.Errorf("the model config differs from the checkpoint's")
	case saved.Seq != o.Seq || saved.Batch != o.Batch || saved.Accum != o.Accum:
		return fmt.Errorf("batch shape seq %d x batch %d x accum %d differs from the checkpoint's %d x %d x %d",
			o.Seq, o.Batch, o.Accum, saved.Seq, saved.Batch, saved.Accum)
	case saved.Seed != o.Seed:
		return fmt.Errorf("seed %d differs from the checkpoint's %d", o.Seed, saved.Seed)
	case saved.BF16 != o.BF16:
		return fmt.Errorf("bf16 %v differs from the checkpoint's %v", o.BF16, saved.BF16)
	}
	return nil
}
