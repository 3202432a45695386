package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("model: bad config")

// Sanity limits on config sizes (far above any published MoE model).
const (
	maxLayers  = 1 << 12
	maxExperts = 1 << 14
	// maxPregateDist: the Pre-gated MoE paper evaluates pre-gates 1-3
	// blocks ahead; further ahead the routing accuracy falls off.
	maxPregateDist = 3
	// maxTasks bounds a multi-task model's tasks (each adds an FFN to every
	// MoE layer), so a bad config is an error, not an allocation.
	maxTasks = 1024
)

// QKNorm says how queries and keys are normalised before RoPE.
type QKNorm int

const (
	QKNormNone    QKNorm = iota
	QKNormPerHead        // RMSNorm over each head's Dh values (Qwen3-MoE)
	QKNormFull           // RMSNorm over the whole projection, H*Dh or G*Dh (OLMoE)
)

// Config is a model's shape and semantics, architecture-neutral.
type Config struct {
	Arch string // "mixtral", "qwen2_moe", "qwen3_moe", "olmoe" or "moesys"

	V, D, L int // vocab, model dim, layers
	H, G    int // query heads, KV heads
	Dh      int // head dim (may differ from D/H)

	DenseFFN  int // FFN dim of dense (non-MoE) layers
	ExpertFFN int // FFN dim of each routed expert (F)
	E, K      int // experts, experts per token
	SharedFFN int // shared expert FFN dim (Qwen2-MoE); 0: none
	// NormTopK renormalises the top-k softmax weights to sum 1.
	NormTopK bool
	// MoE[l] reports whether layer l is a MoE layer (else dense).
	MoE []bool

	RopeTheta float64
	RotaryDim int // dims of each head rotated (partial rotary); = Dh by default
	NormEps   float64
	QKNorm    QKNorm
	QKVBias   bool // q, k, v projections have biases (Qwen2)
	// Window[l] > 0: layer l attends to the last Window[l] positions only.
	Window []int
	// TieEmbeddings: the output head is the embedding table.
	TieEmbeddings bool

	// Training options, kept in config.json (router_aux_loss_coef and
	// router_jitter_noise are Mixtral's names; the rest are moesys'):
	AuxCoef  float64 // load-balancing loss coefficient
	ZCoef    float64 // router z-loss coefficient
	Jitter   float64 // router input noise: x *= U(1-Jitter, 1+Jitter) in training
	Capacity float64 // expert capacity factor; <= 0: dropless
	// PregateDist > 0 makes the model pre-gated: the pre-gate of MoE block i
	// (counted over MoE blocks) routes MoE block i+PregateDist; the first
	// PregateDist MoE blocks keep their own gates.
	PregateDist int
	// Tasks > 0 makes the model multi-task (train/multitask.go): every MoE
	// layer gets Tasks task experts, SwiGLU FFNs of TaskFFN hidden units
	// after the layer's token-routed FFN, each chosen by the task of the
	// sequence (task-level routing; model/net_task.go).
	Tasks, TaskFFN int

	BOS int32   // -1 if none
	EOS []int32 // may be empty
	// MaxPos is the longest context the config declares (max_position_embeddings).
	MaxPos int
}

// hfConfig is the union of the fields of the supported config.json files.
type hfConfig struct {
	ModelType             string          `json:"model_type"`
	VocabSize             int             `json:"vocab_size"`
	HiddenSize            int             `json:"hidden_size"`
	IntermediateSize      int             `json:"intermediate_size"`
	MoeIntermediateSize   int             `json:"moe_intermediate_size"`
	SharedExpertSize      int             `json:"shared_expert_intermediate_size"`
	NumHiddenLayers       int             `json:"num_hidden_layers"`
	NumAttentionHeads     int             `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	NumLocalExperts       int             `json:"num_local_experts"`
	NumExperts            int             `json:"num_experts"`
	NumExpertsPerTok      int             `json:"num_experts_per_tok"`
	NormTopKProb          *bool           `json:"norm_topk_prob"`
	DecoderSparseStep     *int            `json:"decoder_sparse_step"`
	MLPOnlyLayers         []int           `json:"mlp_only_layers"`
	QKVBias               *bool           `json:"qkv_bias"`
	AttentionBias         *bool           `json:"attention_bias"`
	HiddenAct             string          `json:"hidden_act"`
	MaxPositionEmbeddings int             `json:"max_position_embeddings"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	PartialRotaryFactor   *float64        `json:"partial_rotary_factor"`
	SlidingWindow         *int            `json:"sliding_window"`
	UseSlidingWindow      *bool           `json:"use_sliding_window"`
	MaxWindowLayers       *int            `json:"max_window_layers"`
	TieWordEmbeddings     *bool           `json:"tie_word_embeddings"`
	ClipQKV               *float64        `json:"clip_qkv"`
	BOSTokenID            json.RawMessage `json:"bos_token_id"`
	EOSTokenID            json.RawMessage `json:"eos_token_id"`
	RouterAuxLossCoef     *float64        `json:"router_aux_loss_coef"`
	RouterJitterNoise     *float64        `json:"router_jitter_noise"`
	RouterZLossCoef       *float64        `json:"router_z_loss_coef"`
	// moesys-native fields.
	MoEInterval           *int     `json:"moe_interval"`
	DenseIntermediateSize int      `json:"dense_intermediate_size"`
	CapacityFactor        *float64 `json:"capacity_factor"`
	PregateDistance       *int     `json:"pregate_distance"`
	Tasks                 int      `json:"moesys_tasks"`
	TaskIntermediateSize  int      `json:"moesys_task_intermediate_size"`
}

// LoadConfig reads dir/config.json.
func LoadConfig(dir string) (*Config, error) {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("model: read config: %w", err)
	}
	return ParseConfig(b)
}

// ParseConfig parses a Hugging Face config.json of a supported architecture
// and validates it; errors wrap ErrConfig and name the offending field.
func ParseConfig(b []byte) (*Config, error) {
	var h hfConfig
	if err := json.Unmarshal(b, &h); err != nil {
		return nil, fmt.Errorf("%w: config.json: %v", ErrConfig, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrConfig, h.ModelType, fmt.Sprintf(format, args...))
	}
	c := &Config{Arch: h.ModelType, V: h.VocabSize, D: h.HiddenSize, L: h.NumHiddenLayers, H: h.NumAttentionHeads,
		K: h.NumExpertsPerTok, MaxPos: h.MaxPositionEmbeddings, BOS: -1}
	switch h.ModelType {
	case "mixtral":
		c.E, c.ExpertFFN, c.DenseFFN = h.NumLocalExperts, h.IntermediateSize, h.IntermediateSize
		c.NormTopK = true
	case "qwen2_moe":
		c.E, c.ExpertFFN, c.DenseFFN, c.SharedFFN = h.NumExperts, h.MoeIntermediateSize, h.IntermediateSize, h.SharedExpertSize
		c.NormTopK = boolOr(h.NormTopKProb, false)
		c.QKVBias = boolOr(h.QKVBias, true)
	case "qwen3_moe":
		c.E, c.ExpertFFN, c.DenseFFN = h.NumExperts, h.MoeIntermediateSize, h.IntermediateSize
		c.NormTopK = boolOr(h.NormTopKProb, true)
		c.QKVBias = boolOr(h.AttentionBias, false)
		c.QKNorm = QKNormPerHead
	case "olmoe":
		c.E, c.ExpertFFN, c.DenseFFN = h.NumExperts, h.IntermediateSize, h.IntermediateSize
		c.NormTopK = boolOr(h.NormTopKProb, false)
		c.QKVBias = boolOr(h.AttentionBias, false)
		c.QKNorm = QKNormFull
		if h.ClipQKV != nil {
			return nil, bad("clip_qkv is not supported")
		}
	case "moesys":
		// moesys' own checkpoints: Mixtral names for MoE layers, Llama names
		// for dense ones; every moe_interval-th layer is MoE (Switch: 2).
		c.E, c.ExpertFFN = h.NumLocalExperts, h.IntermediateSize
		c.DenseFFN = h.DenseIntermediateSize
		if c.DenseFFN == 0 {
			c.DenseFFN = h.IntermediateSize
		}
		c.NormTopK = boolOr(h.NormTopKProb, true)
		c.SharedFFN = h.SharedExpertSize
	case "":
		return nil, fmt.Errorf("%w: config.json has no model_type", ErrConfig)
	default:
		return nil, fmt.Errorf("%w: unsupported model_type %q (supported: mixtral, qwen2_moe, qwen3_moe, olmoe, moesys)", ErrConfig, h.ModelType)
	}
	if h.HiddenAct != "" && h.HiddenAct != "silu" {
		return nil, bad("hidden_act %q is not supported (only silu)", h.HiddenAct)
	}
	if len(h.RopeScaling) > 0 && string(h.RopeScaling) != "null" {
		return nil, bad("rope_scaling %s is not supported", h.RopeScaling)
	}
	c.G = intOr(h.NumKeyValueHeads, c.H)
	if c.H > 0 {
		c.Dh = intOr(h.HeadDim, c.D/c.H)
	}
	c.RopeTheta = floatOr(h.RopeTheta, 10000)
	c.NormEps = floatOr(h.RMSNormEps, 1e-6)
	c.TieEmbeddings = boolOr(h.TieWordEmbeddings, false)
	c.RotaryDim = c.Dh
	if h.PartialRotaryFactor != nil {
		c.RotaryDim = int(float64(c.Dh) * *h.PartialRotaryFactor)
	}

	// Sizes beyond any real model are config errors, not allocations to try.
	if c.L > maxLayers || c.E > maxExperts {
		return nil, bad("num_hidden_layers %d or experts %d beyond the supported %d / %d", c.L, c.E, maxLayers, maxExperts)
	}
	// Which layers are MoE: Qwen's decoder_sparse_step and mlp_only_layers.
	c.MoE = make([]bool, max(c.L, 0))
	step := intOr(h.DecoderSparseStep, 1)
	if h.ModelType == "moesys" {
		step = intOr(h.MoEInterval, 1)
	}
	if step < 1 {
		return nil, bad("decoder_sparse_step / moe_interval %d must be >= 1", step)
	}
	only := map[int]bool{}
	for _, l := range h.MLPOnlyLayers {
		if l < 0 || l >= c.L {
			return nil, bad("mlp_only_layers has layer %d outside [0, %d)", l, c.L)
		}
		only[l] = true
	}
	for l := range c.MoE {
		c.MoE[l] = c.E > 0 && !only[l] && (l+1)%step == 0
	}

	// Sliding window: Mixtral/Qwen3 sliding_window (null: none); Qwen2 only
	// with use_sliding_window, for layers >= max_window_layers.
	c.Window = make([]int, max(c.L, 0))
	if h.SlidingWindow != nil && *h.SlidingWindow > 0 {
		use := true
		from := 0
		if h.ModelType == "qwen2_moe" || h.ModelType == "qwen3_moe" {
			use = boolOr(h.UseSlidingWindow, false)
			from = intOr(h.MaxWindowLayers, 0)
		}
		if use {
			for l := from; l < c.L; l++ {
				c.Window[l] = *h.SlidingWindow
			}
		}
	}
	c.AuxCoef = floatOr(h.RouterAuxLossCoef, 0)
	c.ZCoef = floatOr(h.RouterZLossCoef, 0)
	c.Jitter = floatOr(h.RouterJitterNoise, 0)
	c.Capacity = floatOr(h.CapacityFactor, 0)
	if h.ModelType == "moesys" {
		c.PregateDist = intOr(h.PregateDistance, 0)
		c.Tasks, c.TaskFFN = h.Tasks, h.TaskIntermediateSize
	} else if h.Tasks != 0 {
		return nil, bad("moesys_tasks needs model_type moesys")
	} else if h.PregateDistance != nil && *h.PregateDistance != 0 {
		return nil, bad("pregate_distance needs model_type moesys")
	}
	var err error
	if c.BOS, err = tokenID(h.BOSTokenID); err != nil {
		return nil, bad("bos_token_id: %v", err)
	}
	if c.EOS, err = tokenIDs(h.EOSTokenID); err != nil {
		return nil, bad("eos_token_id: %v", err)
	}
	return c, c.Validate()
}

// Validate checks the shape for consistency before any weights are read.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrConfig, c.Arch, fmt.Sprintf(format, args...))
	}
	switch {
	case c.V <= 0:
		return bad("vocab_size %d must be > 0", c.V)
	case c.D <= 0:
		return bad("hidden_size %d must be > 0", c.D)
	case c.L <= 0:
		return bad("num_hidden_layers %d must be > 0", c.L)
	case c.H <= 0 || c.G <= 0 || c.H%c.G != 0:
		return bad("num_attention_heads %d must be a positive multiple of num_key_value_heads %d", c.H, c.G)
	case c.Dh <= 0 || c.Dh%2 != 0:
		return bad("head_dim %d must be positive and even", c.Dh)
	case c.RotaryDim <= 0 || c.RotaryDim > c.Dh || c.RotaryDim%2 != 0:
		return bad("rotary dim %d must be even and in (0, head_dim %d]", c.RotaryDim, c.Dh)
	case c.E < 0 || (c.E > 0 && (c.K < 1 || c.K > c.E)):
		return bad("num_experts_per_tok %d must be in [1, experts %d]", c.K, c.E)
	case c.E > 0 && c.ExpertFFN <= 0:
		return bad("expert intermediate size %d must be > 0", c.ExpertFFN)
	case c.RopeTheta <= 0 || math.IsInf(c.RopeTheta, 0):
		return bad("rope_theta %g must be positive", c.RopeTheta)
	case c.NormEps <= 0:
		return bad("rms_norm_eps %g must be positive", c.NormEps)
	case !(c.AuxCoef >= 0) || !(c.ZCoef >= 0) || math.IsInf(c.AuxCoef, 0) || math.IsInf(c.ZCoef, 0):
		return bad("router_aux_loss_coef %g and router_z_loss_coef %g must be finite and >= 0", c.AuxCoef, c.ZCoef)
	case !(c.Jitter >= 0 && c.Jitter < 1):
		return bad("router_jitter_noise %g must be in [0, 1)", c.Jitter)
	case math.IsNaN(c.Capacity) || math.IsInf(c.Capacity, 0):
		return bad("capacity_factor %g must be finite", c.Capacity)
	case c.PregateDist < 0 || c.PregateDist > maxPregateDist:
		return bad("pregate_distance %d must be in [0, %d]", c.PregateDist, maxPregateDist)
	case c.PregateDist > 0 && c.PregateDist >= len(c.MoELayers()):
		return bad("pregate_distance %d needs more than %d MoE layers", c.PregateDist, len(c.MoELayers()))
	case c.Tasks < 0 || c.Tasks > maxTasks || (c.Tasks > 0 && (c.TaskFFN <= 0 || len(c.MoELayers()) == 0)):
		return bad("moesys_tasks %d must be in [0, %d]; task experts need a task intermediate size > 0 (have %d) and MoE layers", c.Tasks, maxTasks, c.TaskFFN)
	}
	for l, moe := range c.MoE {
		if !moe && c.DenseFFN <= 0 {
			return bad("layer %d is dense but intermediate_size is %d", l, c.DenseFFN)
		}
	}
	return nil
}

func intOr(p *int, d int) int {
	if p == nil {
		return d
	}
	return *p
}

func boolOr(p *bool, d bool) bool {
	if p == nil {
		return d
	}
	return *p
}

func floatOr(p *float64, d float64) float64 {
	if p == nil {
		return d
	}
	return *p
}

func tokenID(raw json.RawMessage) (int32, error) {
	ids, err := tokenIDs(raw)
	if err != nil || len(ids) == 0 {
		return -1, err
	}
	return ids[0], nil
}

// tokenIDs accepts null, a number or a list of numbers.
func tokenIDs(raw json.RawMessage) ([]int32, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one int32
	if json.Unmarshal(raw, &one) == nil {
		return []int32{one}, nil
	}
	var many []int32
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("want an id or a list of ids, got %s", raw)
	}
	return many, nil
}

// MoELayers returns the indices of the MoE layers, in order.
func (c *Config) MoELayers() []int {
	var ls []int
	for l, m := range c.MoE {
		if m {
			ls = append(ls, l)
		}
	}
	return ls
}

// RouteSource returns, for MoE layer l of a pre-gated model, the layer
// whose pre-gate routes it, or -1 when l uses its own gate (no pre-gates,
// or one of the first PregateDist MoE layers, or a dense layer).
func (c *Config) RouteSource(l int) int {
	if c.PregateDist <= 0 || !c.MoE[l] {
		return -1
	}
	ls := c.MoELayers()
	for i, x := range ls {
		if x == l && i >= c.PregateDist {
			return ls[i-c.PregateDist]
		}
	}
	return -1
}

// PregateTarget returns the MoE layer that layer l's pre-gate routes, or -1
// when l has no pre-gate (no pre-gates, a dense layer, or one of the last
// PregateDist MoE layers).
func (c *Config) PregateTarget(l int) int {
	if c.PregateDist <= 0 || !c.MoE[l] {
		return -1
	}
	ls := c.MoELayers()
	for i, x := range ls {
		if x == l && i+c.PregateDist < len(ls) {
			return ls[i+c.PregateDist]
		}
	}
	return -1
}
