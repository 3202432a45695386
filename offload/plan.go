package offload

import (
	"errors"
	"fmt"
	"strings"
)

// Policy is how the Scheduler moves experts between the slow tier and the
// slot pool: a configuration of the one scheduler, not a separate type.
type Policy string

// Policies implemented so far. The design's others (prefetch-all, ring,
// pregated, speculative) are further values of this type: they fetch ahead
// from Acquire, Release or a Prefetch hint, behind the same ExpertSource.
const (
	// Resident loads every expert at open and keeps it: the upper bound
	// ("GPU-only" in the Pre-gated paper), needing a slot per expert.
	Resident Policy = "resident"
	// OnDemand fetches a layer's missing experts once the layer is routed,
	// and computes when they have arrived (MoE-OnDemand); nothing is
	// fetched ahead. Slots beyond the layer's working set cache experts
	// for later tokens, as the Cache says.
	OnDemand Policy = "ondemand"
)

// Policies lists the implemented policies, for flags and errors.
var Policies = []Policy{Resident, OnDemand}

// ParsePolicy returns the policy named s.
func ParsePolicy(s string) (Policy, error) {
	for _, p := range Policies {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("offload: unknown policy %q (implemented: %s)", s, joinNames(Policies))
}

// Cache names the policy for the slots beyond the working set: which
// unused expert to evict when a miss needs a slot.
type Cache string

// Cache policies implemented so far; LFU, LIFO and none are further
// Evictors (evict.go).
const (
	CacheLRU Cache = "lru"
)

// Caches lists the implemented cache policies.
var Caches = []Cache{CacheLRU}

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

// evictor returns a fresh Evictor for c.
func (c Cache) evictor() Evictor {
	switch c {
	case CacheLRU, "":
		return NewLRU()
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
	Policy    Policy
	Cache     Cache
	Budget    int64 // bytes asked for; 0: no limit
	Slots     int   // slots allocated
	SlotBytes int64 // bytes per slot: the largest expert block, 4 KiB aligned
	Experts   int   // expert blocks in the layout
	MinSlots  int   // fewest slots the policy runs with
}

// Bytes is the expert memory the plan allocates.
func (p Plan) Bytes() int64 { return int64(p.Slots) * p.SlotBytes }

func (p Plan) String() string {
	return fmt.Sprintf("%s/%s: %d slots x %s = %s for %d experts (%.0f%%; minimum %d slots, %s)",
		p.Policy, p.Cache, p.Slots, fmtBytes(p.SlotBytes), fmtBytes(p.Bytes()), p.Experts,
		100*float64(p.Slots)/float64(max(p.Experts, 1)), p.MinSlots, fmtBytes(int64(p.MinSlots)*p.SlotBytes))
}

// NewPlan turns cfg's budget into slots for lay: Budget / SlotBytes slots
// (a Budget of 0 means one per expert), at most one per expert block (more
// could never be used). It fails, wrapping ErrBudget and naming the
// minimum, when the budget holds fewer slots than the policy needs at once:
// every expert for Resident, cfg.TopK (the experts one token's layer
// uses, so that batch-1 decoding never waits for its own slots) for
// OnDemand.
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
	switch cfg.Policy {
	case Resident:
		p.MinSlots = p.Experts
	case OnDemand:
		p.MinSlots = min(max(cfg.TopK, 1), p.Experts)
	default:
		_, err := ParsePolicy(string(cfg.Policy))
		return Plan{}, err
	}
	p.Slots = p.Experts
	if cfg.Budget > 0 {
		p.Slots = int(min(cfg.Budget/p.SlotBytes, int64(p.Experts)))
	}
	if p.Slots < p.MinSlots {
		return Plan{}, fmt.Errorf("%w: %s holds %d slots of %s; policy %s needs at least %d slots, %s (%d bytes)",
			ErrBudget, fmtBytes(cfg.Budget), p.Slots, fmtBytes(p.SlotBytes), p.Policy, p.MinSlots,
			fmtBytes(int64(p.MinSlots)*p.SlotBytes), int64(p.MinSlots)*p.SlotBytes)
	}
	if p.Policy == Resident {
		p.Slots = p.Experts
	}
	return p, nil
}

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
