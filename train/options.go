package train

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/tokenizer"
)

// ErrOptions is wrapped by every invalid training option.
var ErrOptions = errors.New("train: bad options")

// Options is a training run's configuration: the model, the batch shape, the
// optimiser and schedule, and the run's bookkeeping. Presets fill it; flags
// and config files override it. Validate checks it before any work.
type Options struct {
	Model *model.Config `json:"-"`

	Seq   int `json:"seq"`   // T, tokens per sequence
	Batch int `json:"batch"` // B, sequences per micro-batch
	Accum int `json:"accum"` // micro-batches per optimizer step (gradient accumulation)
	Steps int `json:"steps"` // optimizer steps in the run

	LR          float64 `json:"lr"`     // peak learning rate
	MinLR       float64 `json:"min_lr"` // cosine floor
	Warmup      int     `json:"warmup"` // linear warmup steps
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	Eps         float64 `json:"eps"`
	WeightDecay float64 `json:"weight_decay"` // decoupled (AdamW)
	Clip        float64 `json:"clip"`         // max global gradient norm; 0: off

	Seed    uint64  `json:"seed"`     // initialisation, batches and router jitter
	InitStd float64 `json:"init_std"` // std of the initial weight matrices

	BF16      bool `json:"bf16"`      // bf16 weights (rounded after every step) over an fp32 master copy
	Recompute bool `json:"recompute"` // recompute activations in backward

	// BucketBytes is the size of a fused gradient all-reduce in a parallel
	// run (0: DefaultBucketBytes).
	BucketBytes int `json:"bucket_bytes,omitempty"`
	// AllToAll is the expert exchange of a parallel run: "flat" (one
	// AllToAllV over every rank), "hierarchical" (inside each node, then
	// between nodes: dist.Hier) or "auto"/"" (hierarchical when there are
	// several nodes of several ranks). The result is the same either way.
	AllToAll string `json:"alltoall,omitempty"`
	// RanksPerNode groups the ranks into nodes of this many consecutive
	// ranks for the hierarchical exchange (0: ask the backend, MPI's
	// shared-memory split; the in-process ranks are one node).
	RanksPerNode int `json:"ranks_per_node,omitempty"`

	EvalEvery   int `json:"eval_every"`   // steps between validation losses; 0: only at the end
	EvalBatches int `json:"eval_batches"` // validation batches per evaluation
	SaveEvery   int `json:"save_every"`   // steps between checkpoints; 0: only at the end
	KeepLast    int `json:"keep_last"`    // checkpoints kept (older ones are deleted); 0: all

	// Tasks makes the run multi-task (multitask.go): each task's batch
	// comes from its own data, Batch is their sum, and the model has one
	// task expert per task (Model.Tasks = len(Tasks)). TaskPlacement is
	// how a parallel run assigns ranks to tasks: "elastic" (or "":
	// PlanTasks) or "one-per-task" (PlanOnePerTask, W = len(Tasks)).
	Tasks         []TaskSpec `json:"tasks,omitempty"`
	TaskPlacement string     `json:"task_placement,omitempty"`

	// ShardDense shards the dense parameters' state over the ranks of a
	// parallel run, ZeRO-3 style (zero.go): each rank keeps 1/W of every
	// dense parameter's weights, gradient and optimizer state; a group's
	// whole weights are gathered one group ahead of their use.
	ShardDense bool `json:"shard_dense,omitempty"`

	// EmbedPartition splits the embedding table along the hidden dimension
	// over the ranks of a parallel run (model.Net.SetEmbedPartition): rank
	// r keeps columns [r*D/W, (r+1)*D/W) of the weights, gradient and
	// optimizer state; forward and backward exchange ids, partial rows and
	// gradients with all-to-alls. Checkpoints hold the whole table.
	EmbedPartition bool `json:"embed_partition,omitempty"`

	// Storage, when set, keeps the routed experts' optimizer state on an
	// SSD tier with a RAM cache (hierarchical storage: storage.go).
	Storage *StorageOptions `json:"storage,omitempty"`
}

// DefaultBucketBytes is the default fused gradient all-reduce size.
const DefaultBucketBytes = 4 << 20

// Validate checks o for consistency and returns an error naming the first
// bad field.
func (o *Options) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrOptions, fmt.Sprintf(format, args...))
	}
	if o.Model == nil {
		return bad("no model config")
	}
	c := o.Model
	if c.E > 0 && c.K > c.E {
		return bad("top-k %d is larger than the number of experts %d", c.K, c.E)
	}
	if c.V < tokenizer.ByteVocab {
		return bad("vocab_size %d is smaller than the byte-level data's %d token ids", c.V, tokenizer.ByteVocab)
	}
	if err := c.Validate(); err != nil {
		return err
	}
	switch {
	case o.Seq <= 0 || o.Batch <= 0 || o.Accum <= 0:
		return bad("seq %d, batch %d and accum %d must be > 0", o.Seq, o.Batch, o.Accum)
	case o.Seq > c.MaxPos && c.MaxPos > 0:
		return bad("seq %d is longer than the model's max_position_embeddings %d", o.Seq, c.MaxPos)
	case o.Steps <= 0:
		return bad("steps %d must be > 0", o.Steps)
	case !(o.LR > 0) || math.IsInf(o.LR, 0) || !(o.MinLR >= 0) || o.MinLR > o.LR:
		return bad("lr %g must be > 0 and min_lr %g in [0, lr]", o.LR, o.MinLR)
	case o.Warmup < 0:
		return bad("warmup %d must be >= 0", o.Warmup)
	case !(o.Beta1 >= 0 && o.Beta1 < 1) || !(o.Beta2 >= 0 && o.Beta2 < 1) || !(o.Eps > 0):
		return bad("betas (%g, %g) must be in [0, 1) and eps %g > 0", o.Beta1, o.Beta2, o.Eps)
	case !(o.WeightDecay >= 0) || !(o.Clip >= 0):
		return bad("weight_decay %g and clip %g must be >= 0", o.WeightDecay, o.Clip)
	case !(o.InitStd > 0):
		return bad("init_std %g must be > 0", o.InitStd)
	case o.BucketBytes < 0:
		return bad("bucket_bytes %d must be >= 0", o.BucketBytes)
	case o.AllToAll != "" && o.AllToAll != "auto" && o.AllToAll != "flat" && o.AllToAll != "hierarchical":
		return bad("alltoall %q: want flat, hierarchical or auto", o.AllToAll)
	case o.RanksPerNode < 0:
		return bad("ranks_per_node %d must be >= 0", o.RanksPerNode)
	case o.EvalEvery < 0 || o.SaveEvery < 0 || o.KeepLast < 0 || o.EvalBatches < 0:
		return bad("eval_every, eval_batches, save_every and keep_last must be >= 0")
	case o.ShardDense && len(o.Tasks) > 0:
		return bad("shard_dense with tasks: the task experts' groups are not sharded yet")
	case o.ShardDense && c.TieEmbeddings:
		return bad("shard_dense with tied embeddings: the head would be gathered in two groups")
	case o.EmbedPartition && o.ShardDense:
		return bad("embed_partition with shard_dense: both split the embedding over the ranks; use one or the other (shard_dense shards the embedding with the other dense parameters)")
	case o.EmbedPartition && c.TieEmbeddings:
		return bad("embed_partition with tied embeddings: the LM head tied to the embedding needs the whole table on every rank")
	}
	return o.validateTasks()
}

// Preset is a named model and training configuration.
type Preset struct {
	Name, About string
	Make        func() Options
}

// byteModel returns a moesys config over the byte vocabulary.
func byteModel(D, L, H, G, E, K, F int) *model.Config {
	c := &model.Config{Arch: "moesys", V: 256, D: D, L: L, H: H, G: G, Dh: D / H, DenseFFN: F, ExpertFFN: F,
		E: E, K: K, NormTopK: true, MoE: make([]bool, L), RopeTheta: 10000, RotaryDim: D / H, NormEps: 1e-5,
		Window: make([]int, L), AuxCoef: 0.01, BOS: -1, MaxPos: 4096}
	for l := range c.MoE {
		c.MoE[l] = true
	}
	return c
}

func defaults(c *model.Config, T, B, steps int, lr float64) Options {
	return Options{Model: c, Seq: T, Batch: B, Accum: 1, Steps: steps, LR: lr, MinLR: lr / 10, Warmup: max(steps/20, 1),
		Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, WeightDecay: 0.1, Clip: 1, Seed: 1, InitStd: 0.02,
		EvalEvery: max(steps/10, 1), EvalBatches: 8, BucketBytes: DefaultBucketBytes, SaveEvery: 0, KeepLast: 3}
}

// Presets are the built-in configurations.
var Presets = map[string]Preset{
	"tiny": {"tiny", "d_model 128, 4 layers, 8 experts top-2 (ffn 256), seq 128 x batch 8; about a minute on 2 cores", func() Options {
		return defaults(byteModel(128, 4, 4, 2, 8, 2, 256), 128, 8, 500, 3e-3)
	}},
	"small": {"small", "d_model 256, 4 layers, 4 heads (2 KV), 8 experts top-2 (ffn 512), seq 256 x batch 8 (the PyTorch comparison model)", func() Options {
		o := defaults(byteModel(256, 4, 4, 2, 8, 2, 512), 256, 8, 2000, 1e-3)
		return o
	}},
	"medium": {"medium", "d_model 1024, 4 layers, 16 heads (4 KV), 8 experts top-2 (ffn 4096), seq 512 x batch 4 (the MFU benchmark model)", func() Options {
		return defaults(byteModel(1024, 4, 16, 4, 8, 2, 4096), 512, 4, 2000, 3e-4)
	}},
	"switch-base-8": {"switch-base-8", "Switch-Base-like: d_model 768, d_ff 3072, 12 layers, 12 heads, MoE every other layer, 8 experts top-1, capacity 1.25", func() Options {
		c := byteModel(768, 12, 12, 12, 8, 1, 3072)
		for l := range c.MoE {
			c.MoE[l] = l%2 == 1
		}
		c.Capacity = 1.25
		return defaults(c, 512, 4, 10000, 1e-4)
	}},
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	var s []string
	for k := range Presets {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// PresetOptions returns the named preset's options.
func PresetOptions(name string) (Options, error) {
	p, ok := Presets[name]
	if !ok {
		return Options{}, fmt.Errorf("%w: unknown preset %q (have %s)", ErrOptions, name, strings.Join(PresetNames(), ", "))
	}
	return p.Make(), nil
}
