package offload

import (
	"errors"
	"fmt"
	"strings"
)

// Policy is how the Scheduler moves experts between the slow tier and the
// slot pool: a configuration of the one scheduler, not a separate type.
// What each fetches ahead, while block N computes (DESIGN.md, "Inference
// with a memory budget"):
//
//	resident      nothing: every expert is read at open and kept
//	ondemand      nothing: block N's misses are read once N is routed
//	prefetch-all  every expert of the next MoE block (wrapping to the first)
//	ring          every expert of the next K-1 MoE blocks (K sections)
//	pregated      the experts the model's Prefetch hint names: block N's
//	              pre-gate routing of block N+1 (exact)
//	speculative   the experts the model's Prefetch hint names: block N+1's
//	              router applied to block N's input (a prediction)
//
// Whatever a policy fetched ahead and the layer then does not acquire is
// dropped at that layer's Acquire (it stays cached as the Cache says); what
// it did not fetch, Acquire reads on demand. So every policy computes with
// exactly the experts the routing chose, and only the timing differs.
type Policy string

const (
	// Auto is Pregated for a model with pre-gates (SchedulerConfig
	// .PregateDist > 0), else Speculative: resolved by NewPlan.
	Auto Policy = "auto"
	// Resident loads every expert at open and keeps it: the upper bound
	// ("GPU-only" in the Pre-gated paper), needing a slot per expert.
	Resident Policy = "resident"
	// OnDemand fetches a layer's missing experts once the layer is routed,
	// and computes when they have arrived (MoE-OnDemand); nothing is
	// fetched ahead. Slots beyond the layer's working set cache experts
	// for later tokens, as the Cache says.
	OnDemand Policy = "ondemand"
	// PrefetchAll fetches, as soon as block N acquires its experts (block
	// N is computing), every expert of the next MoE block, wrapping from
	// the last to the first for the next token (MoE-Prefetch, the
	// SE-MoE-style baseline of the Pre-gated paper). It needs slots for a
	// whole layer plus the current layer's working set.
	PrefetchAll Policy = "prefetch-all"
	// Ring is SE-MoE's ring memory: the budget is K = slots / (slots of a
	// layer) whole-layer sections (2 <= K <= MoE layers). While block N
	// computes, the K-1 MoE blocks after it are resident or loading; the
	// block N+K-1, wrapping around for the next token, is loaded into the
	// section block N-1 released (calculation-released-load), its reads
	// overlapping N's compute.
	Ring Policy = "ring"
	// Pregated serves a model with pre-gates: the model's Prefetch hint,
	// sent once block N has acquired its experts (its pre-gate has run),
	// starts the reads of exactly the experts block N+PregateDist will use,
	// overlapping block N's compute. The first PregateDist MoE blocks read
	// their own experts on demand (serially), as in the paper. Only the
	// activated experts of PregateDist+1 blocks need be resident.
	Pregated Policy = "pregated"
	// Speculative serves checkpoints without pre-gates: the model predicts
	// block N+1's experts by applying block N+1's router to block N's
	// input, and its Prefetch hint starts their reads; mispredicted experts
	// are read on demand by Acquire, so outputs equal the plain model's.
	// The scheduler asks for the prediction (moe.Speculator) and counts
	// its precision and recall in Stats.
	Speculative Policy = "speculative"
)

// Policies lists the policies, for flags and errors.
var Policies = []Policy{Auto, Resident, OnDemand, PrefetchAll, Ring, Pregated, Speculative}

// ParsePolicy returns the policy named s.
func ParsePolicy(s string) (Policy, error) {
	for _, p := range Policies {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("offload: unknown policy %q (implemented: %s)", s, joinNames(Policies))
}

// fetchesAhead reports whether the policy reads experts before they are
// acquired.
func (p Policy) fetchesAhead() bool {
	return p == PrefetchAll || p == Ring || p == Pregated || p == Speculative
}

// takesHints reports whether the policy follows the model's Prefetch hints.
func (p Policy) takesHints() bool { return p == Pregated || p == Speculative }

// Cache names the policy for the slots beyond the working set: which
// unused expert to evict when a miss needs a slot.
type Cache string

// Cache policies (evict.go).
const (
	CacheLRU  Cache = "lru"  // the least recently used goes first
	CacheLFU  Cache = "lfu"  // the least often demanded goes first; counts decay (LFUHalfLife)
	CacheLIFO Cache = "lifo" // the most recently used goes first
	CacheNone Cache = "none" // nothing is kept beyond the working set
)

// Caches lists the cache policies.
var Caches = []Cache{CacheLRU, CacheLFU, CacheLIFO, CacheNone}

// ParseCache returns the cache policy named s ("" is LRU).
func ParseCache(s string) (Cache, error) {
	if s == "" {
		return CacheLRU, nil
	}
	for _, c := range Caches {
		if string(c) == s {
			return c, nil
		}
	}
	return "", fmt.Errorf("offload: unknown cache policy %q (implemented: %s)", s, joinNames(Caches))
}

// evictor returns a fresh Evictor for c; lfuHalfLife is LFU's decay in
// demands (0: DefaultLFUHalfLife, < 0: none).
func (c Cache) evictor(lfuHalfLife int) Evictor {
	switch c {
	case CacheLRU, "":
		return NewLRU()
	case CacheLFU:
		if lfuHalfLife == 0 {
			lfuHalfLife = DefaultLFUHalfLife
		}
		return NewLFU(lfuHalfLife)
	case CacheLIFO:
		return NewLIFO()
	case CacheNone:
		return NoCache{}
	}
	panic(fmt.Sprintf("offload: cache policy %q has no Evictor", string(c)))
}

func joinNames[T ~string](xs []T) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = string(x)
	}
	return strings.Join(s, ", ")
}

// ErrBudget is wrapped by the error for a budget too small for the policy.
var ErrBudget = errors.New("offload: expert memory budget too small")

// Plan is how a budget is spent: the slot count and size the Scheduler
// allocates for a layout under a policy. NewPlan computes it without I/O;
// its String is what a run prints before it starts (--dry-run).
type Plan struct {
	Policy    Policy // as resolved: never Auto
	Cache     Cache
	Budget    int64 // bytes asked for; 0: no limit
	Slots     int   // slots allocated
	SlotBytes int64 // bytes per slot: the largest expert block, 4 KiB aligned
	Experts   int   // expert blocks in the layout
	Layers    int   // MoE layers in the layout (layers with blocks)
	// LayerSlots is the slots a whole layer takes: its most experts.
	LayerSlots int
	// Working is the experts one pass's layer uses at once, as planned:
	// min(Batch * TopK, LayerSlots).
	Working  int
	MinSlots int // fewest slots the policy runs with
	// Sections is Ring's K: whole-layer sections of LayerSlots slots each
	// (0 for the other policies).
	Sections int
}

// Bytes is the expert memory the plan allocates.
func (p Plan) Bytes() int64 { return int64(p.Slots) * p.SlotBytes }

func (p Plan) String() string {
	s := fmt.Sprintf("%s/%s: %d slots x %s = %s for %d experts (%.0f%%; minimum %d slots, %s)",
		p.Policy, p.Cache, p.Slots, fmtBytes(p.SlotBytes), fmtBytes(p.Bytes()), p.Experts,
		100*float64(p.Slots)/float64(max(p.Experts, 1)), p.MinSlots, fmtBytes(int64(p.MinSlots)*p.SlotBytes))
	if p.Policy == Ring {
		s += fmt.Sprintf("; ring of K=%d sections of %d slots for %d MoE layers", p.Sections, p.LayerSlots, p.Layers)
	}
	return s
}

// NewPlan turns cfg's budget into slots for lay: Budget / SlotBytes slots
// (a Budget of 0 means one per expert), at most one per expert block (more
// could never be used). It fails, wrapping ErrBudget and naming the
// minimum, when the budget holds fewer slots than the policy needs at once.
// With W = min(Batch * TopK, E) the experts one layer of a pass uses (E: a
// layer's most experts; Batch and TopK at least 1), the minimums are:
//
//	resident      every expert
//	ondemand      TopK: batch-1 decoding never waits for its own slots
//	              (larger batches take turns)
//	prefetch-all  E + W: the next layer whole, and the current one's W
//	ring          2E: K >= 2 whole-layer sections (E with one MoE layer);
//	              Slots is then K*E, K = min(budget slots / E, MoE layers)
//	pregated      (PregateDist + 1) * W: the blocks from the computing one
//	              to the one its pre-gate routes
//	speculative   2W: the computing block's and the predicted next's
//
// each capped at the experts in the layout. Auto resolves to pregated when
// cfg.PregateDist > 0, else speculative; pregated without pre-gates is an
// error. Below a prefetching policy's minimum nothing would be wrong
// (fetches ahead never wait for slots, and Acquire takes turns), but the
// overlap the policy stands for could not happen.
func NewPlan(lay *Layout, cfg SchedulerConfig) (Plan, error) {
	p := Plan{Policy: cfg.Policy, Budget: cfg.Budget, SlotBytes: lay.SlotBytes(), Experts: len(lay.Blocks)}
	var err error
	if p.Cache, err = ParseCache(string(cfg.Cache)); err != nil {
		return Plan{}, err
	}
	if p.Experts == 0 || p.SlotBytes == 0 {
		return Plan{}, fmt.Errorf("%w: no expert blocks to offload", ErrLayout)
	}
	if cfg.Budget < 0 {
		return Plan{}, fmt.Errorf("%w: negative budget %d", ErrBudget, cfg.Budget)
	}
	perLayer := map[int]int{}
	for _, b := range lay.Blocks {
		perLayer[b.Layer]++
	}
	p.Layers = len(perLayer)
	for _, n := range perLayer {
		p.LayerSlots = max(p.LayerSlots, n)
	}
	p.Working = min(max(cfg.Batch, 1)*max(cfg.TopK, 1), p.LayerSlots)
	if p.Policy == Auto {
		p.Policy = Speculative
		if cfg.PregateDist > 0 {
			p.Policy = Pregated
		}
	}
	switch p.Policy {
	case Resident:
		p.MinSlots = p.Experts
	case OnDemand:
		p.MinSlots = max(cfg.TopK, 1)
	case PrefetchAll:
		p.MinSlots = p.LayerSlots + p.Working
	case Ring:
		p.MinSlots = min(2, p.Layers) * p.LayerSlots
	case Pregated:
		if cfg.PregateDist <= 0 {
			return Plan{}, fmt.Errorf("offload: policy pregated needs a model with pre-gates (SchedulerConfig.PregateDist > 0); use speculative, or auto")
		}
		p.MinSlots = (cfg.PregateDist + 1) * p.Working
	case Speculative:
		p.MinSlots = 2 * p.Working
	default:
		_, err := ParsePolicy(string(cfg.Policy))
		return Plan{}, err
	}
	p.MinSlots = min(p.MinSlots, p.Experts)
	p.Slots = p.Experts
	if cfg.Budget > 0 {
		p.Slots = int(min(cfg.Budget/p.SlotBytes, int64(p.Experts)))
	}
	if p.Slots < p.MinSlots {
		return Plan{}, fmt.Errorf("%w: %s holds %d slots of %s; policy %s needs at least %d slots, %s (%d bytes)",
			ErrBudget, fmtBytes(cfg.Budget), p.Slots, fmtBytes(p.SlotBytes), p.Policy, p.MinSlots,
			fmtBytes(int64(p.MinSlots)*p.SlotBytes), int64(p.MinSlots)*p.SlotBytes)
	}
	switch p.Policy {
	case Resident:
		p.Slots = p.Experts
	case Ring:
		p.Sections = min(p.Slots/p.LayerSlots, p.Layers)
		p.Slots = min(p.Sections*p.LayerSlots, p.Experts)
	}
	return p, nil
}

// FormatBytes prints n with a binary unit: "12 KiB", "1.5 GiB".
func FormatBytes(n int64) string { return fmtBytes(n) }

// fmtBytes prints n with a binary unit: "12 KiB", "1.5 GiB".
func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n), -1
	for v >= unit && u < 3 {
		v /= unit
		u++
	}
	s := fmt.Sprintf("%.1f", v)
	s = strings.TrimSuffix(s, ".0")
	return s + " " + [...]string{"KiB", "MiB", "GiB", "TiB"}[u]
}
