package train

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/offload"
)

// ErrStorage is wrapped by a hierarchical-storage plan that cannot fit.
var ErrStorage = errors.New("train: storage plan does not fit")

// StorageOptions puts the sparse (routed expert) parameters' optimizer
// state on an SSD tier with a RAM cache (hierarchical storage, SE-MoE).
type StorageOptions struct {
	Dir       string `json:"dir"`                 // directory of the SSD tier's state file
	SparseMem int64  `json:"sparse_mem"`          // bytes of RAM caching sparse state
	DenseMem  int64  `json:"dense_mem,omitempty"` // bytes of RAM for dense state and the compute tier; 0: not checked
	// LFU decay: hit counts are multiplied by Beta every Every optimizer
	// steps (0: DefaultLFUBeta, DefaultLFUEvery).
	Beta  float64 `json:"beta,omitempty"`
	Every int     `json:"every,omitempty"`
	// Wrap, when set, wraps the state file's I/O (tests inject faults).
	Wrap func(offload.RecordIO) offload.RecordIO `json:"-"`
}

// LFU decay defaults: halve the hit counts every 10 steps, so an expert
// the router stopped choosing loses its place within a few tens of steps.
const (
	DefaultLFUBeta  = 0.5
	DefaultLFUEvery = 10
)

// StoragePlan is where every parameter's state lives under
// StorageOptions: the capacity rules of SE-MoE with this implementation's
// byte counts.
type StoragePlan struct {
	DenseParams, SparseParams int64
	Ranks                     int   // the plan is one rank's of Ranks (expert parallelism)
	MoELayers, Experts        int   // routed experts of a layer this rank keeps (E/Ranks), records = MoELayers*Experts
	Records                   int   // expert states on the SSD tier
	RecordBytes               int64 // state of one expert (fp32 master, AdamW m and v)
	GradRecordBytes           int64 // its deferred gradient (fp32)
	StateBytesPerParam        int   // 12: fp32 master + m + v (the paper's figure)
	DenseBytesPerParam        int   // weights, gradients, moments (+ bf16 copy and master)
	ComputeBytesPerParam      int   // working copies: weights, gradient (+ bf16 copy)
	DenseBytes                int64 // dense state in RAM
	ComputeBytes              int64 // the compute tier: two MoE layers' experts' working copies (current, next)
	StateBytes                int64 // all sparse state (on the SSD tier)
	CacheRecords              int   // expert states the RAM cache holds
	CacheBytes                int64
	GradCacheRecords          int   // deferred gradients held in RAM: one layer's
	GradCacheBytes            int64 // (taken from SparseMem first)
	SSDBytes                  int64 // the state and gradient files: two slots per record (atomic updates)
	SSDFree                   int64 // free bytes at Dir (0: unknown)
}

// PlanStorage plans hierarchical storage for c trained in bf16 (or f32)
// under so in one process, or returns an error wrapping ErrStorage that
// says what does not fit and what would.
func PlanStorage(c *model.Config, bf16 bool, so StorageOptions) (StoragePlan, error) {
	return PlanStorageRanks(c, bf16, so, 1)
}

// PlanStorageRanks is PlanStorage for one rank of W under expert
// parallelism: the rank keeps its E/W experts of every MoE layer, and the
// budgets are its own. The dense figures are the replicated (unsharded)
// state's.
func PlanStorageRanks(c *model.Config, bf16 bool, so StorageOptions, W int) (StoragePlan, error) {
	p := StoragePlan{Ranks: W}
	if so.Dir == "" {
		return p, fmt.Errorf("%w: no --storage directory", ErrStorage)
	}
	moeL := len(c.MoELayers())
	if moeL == 0 || c.E == 0 {
		return p, fmt.Errorf("%w: the model has no routed experts: there is no sparse state to store", ErrStorage)
	}
	if W < 1 || c.E%W != 0 {
		return p, fmt.Errorf("%w: %d experts do not split over %d ranks", ErrStorage, c.E, W)
	}
	El := c.E / W
	var total int64
	for _, ts := range model.SpecFor(c.Arch).Tensors(c) {
		n := int64(1)
		for _, d := range ts.Shape {
			n *= int64(d)
		}
		total += n
	}
	FD := int64(c.ExpertFFN) * int64(c.D)
	p.MoELayers, p.Experts, p.Records = moeL, El, moeL*El
	p.SparseParams = int64(p.Records) * 3 * FD
	p.DenseParams = total - int64(moeL*c.E)*3*FD
	p.StateBytesPerParam, p.DenseBytesPerParam, p.ComputeBytesPerParam = 12, 16, 8
	if bf16 { // fp32 masters; bf16 copies where the CPU has bf16 products (model.Net.SetBF16Products)
		p.DenseBytesPerParam = 20
		if kernel.CurrentLevel() >= kernel.LevelAVX512BF16 {
			p.DenseBytesPerParam, p.ComputeBytesPerParam = 22, 10
		}
	}
	p.RecordBytes = 3 * FD * int64(p.StateBytesPerParam)
	p.GradRecordBytes = 3 * FD * 4
	p.DenseBytes = p.DenseParams * int64(p.DenseBytesPerParam)
	// Two slots of one layer's experts: the current layer and the next.
	p.ComputeBytes = int64(min(moeL, 2)) * int64(El) * 3 * FD * int64(p.ComputeBytesPerParam)
	p.StateBytes = int64(p.Records) * p.RecordBytes
	slot, gslot := offload.StateSlotBytes(int(p.RecordBytes)), offload.StateSlotBytes(int(p.GradRecordBytes))
	p.SSDBytes = 2 * int64(p.Records) * (slot + gslot)
	p.GradCacheRecords = El
	p.GradCacheBytes = int64(El) * gslot
	p.CacheRecords = int(min(max(so.SparseMem-p.GradCacheBytes, 0)/slot, int64(p.Records)))
	p.CacheBytes = int64(p.CacheRecords) * slot
	var st unix.Statfs_t
	if unix.Statfs(so.Dir, &st) == nil {
		p.SSDFree = int64(st.Bavail) * int64(st.Bsize)
	}
	switch {
	case p.CacheRecords < El:
		return p, fmt.Errorf("%w: --sparse-mem %s holds %d expert states of %s (after %s for one layer's deferred gradients); one MoE layer's update needs its %d experts' states in RAM at once: give --sparse-mem at least %s (of %s sparse state in all)",
			ErrStorage, fmtBytes(so.SparseMem), p.CacheRecords, fmtBytes(slot), fmtBytes(p.GradCacheBytes), El, fmtBytes(int64(El)*slot+p.GradCacheBytes), fmtBytes(p.StateBytes))
	case so.DenseMem > 0 && p.DenseBytes+p.ComputeBytes > so.DenseMem:
		return p, fmt.Errorf("%w: --dense-mem %s: dense state %s (%d params x %d B) + compute tier %s (working copies of %d expert params x %d B) = %s do not fit",
			ErrStorage, fmtBytes(so.DenseMem), fmtBytes(p.DenseBytes), p.DenseParams, p.DenseBytesPerParam,
			fmtBytes(p.ComputeBytes), p.SparseParams, p.ComputeBytesPerParam, fmtBytes(p.DenseBytes+p.ComputeBytes))
	case p.SSDFree > 0 && p.SSDBytes > p.SSDFree:
		return p, fmt.Errorf("%w: the SSD tier needs %s at %s (two slots per expert state), %s free", ErrStorage, fmtBytes(p.SSDBytes), so.Dir, fmtBytes(p.SSDFree))
	}
	return p, nil
}

// String prints the plan: where everything lives.
func (p StoragePlan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "hierarchical storage plan\n")
	fmt.Fprintf(&b, "  dense params   %12d  RAM: %s (%d B/param: weights, gradients, AdamW moments)\n", p.DenseParams, fmtBytes(p.DenseBytes), p.DenseBytesPerParam)
	if p.Ranks > 1 {
		fmt.Fprintf(&b, "  sparse params  %12d  %d MoE layers x %d experts (this rank's of %d ranks; every budget is per rank)\n", p.SparseParams, p.MoELayers, p.Experts, p.Ranks)
	} else {
		fmt.Fprintf(&b, "  sparse params  %12d  %d MoE layers x %d experts\n", p.SparseParams, p.MoELayers, p.Experts)
	}
	fmt.Fprintf(&b, "    compute tier  RAM: %s (%d B/param: working weights and gradients of two MoE layers: the current and the next)\n", fmtBytes(p.ComputeBytes), p.ComputeBytesPerParam)
	fmt.Fprintf(&b, "    state         %s (%d B/param: fp32 master, AdamW m, v), %s per expert; deferred gradients 4 B/param\n", fmtBytes(p.StateBytes), p.StateBytesPerParam, fmtBytes(p.RecordBytes))
	fmt.Fprintf(&b, "    RAM cache     %s: %d of %d expert states (%.0f%%), LFU with decay, write-back; %s: one layer's deferred gradients\n", fmtBytes(p.CacheBytes), p.CacheRecords, p.Records, 100*float64(p.CacheRecords)/float64(p.Records), fmtBytes(p.GradCacheBytes))
	fmt.Fprintf(&b, "    SSD tier      %s (states and gradients, two slots per record, O_DIRECT)", fmtBytes(p.SSDBytes))
	if p.SSDFree > 0 {
		fmt.Fprintf(&b, ", %s free", fmtBytes(p.SSDFree))
	}
	b.WriteString("\n  2D prefetch path 2: the next layer's expert records SSD -> RAM cache -> compute tier while a layer computes\n")
	b.WriteString("  2D prefetch path 1: with --ranks N (or mpirun) and --shard-dense, the next layer's dense parameters gathered from their ZeRO-3 shards; else the dense state is whole on every rank\n")
	return b.String()
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
