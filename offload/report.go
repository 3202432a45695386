package offload

import (
	"fmt"
	"strings"
	"time"
)

// ReportInput is what a Report is computed from: an interval of a run.
type ReportInput struct {
	Phase  string // what the interval covers: "prefill", "decode", ...
	Plan   Plan
	Counts Counts // over the interval: Sub of the snapshots at its ends
	// Tokens is the number of token positions the interval's forward
	// passes computed (a decode step: 1 per sequence).
	Tokens int64
	// Elapsed is the time of the interval's forward passes (waits for
	// experts included, sampling not).
	Elapsed time.Duration
	Probe   *ReadProbe // the slow tier's measured bandwidth; nil: not measured
}

// Report is the per-run offload report: what a policy achieved against
// what this machine allows. It is plain data computed from counters
// (NewReport); a nil pointer field is a figure that does not apply or was
// not measured (printed "n/a", JSON null).
type Report struct {
	Phase  string `json:"phase"`
	Policy Policy `json:"policy"`
	Cache  Cache  `json:"cache"`

	Tokens          int64    `json:"tokens"`
	Seconds         float64  `json:"seconds"`
	TokensPerSecond *float64 `json:"tokens_per_s"` // Tokens / Seconds

	// ReadBandwidth is the slow tier's measured read bandwidth at the
	// scheduler's queue depth, bytes/s (ReadProbe).
	ReadBandwidth *float64   `json:"read_bytes_per_s"`
	Probe         *ReadProbe `json:"read_probe,omitempty"`
	// Bound is the disk's limit on tokens/s for this policy on this
	// machine: ReadBandwidth / BytesPerToken, the rate at which the disk
	// can deliver the bytes the policy reads per token (its misses and
	// its fetches ahead, wasted ones included), were every read
	// overlapped with compute. nil when nothing was read (the disk does
	// not bound the run) or the bandwidth was not measured.
	Bound *float64 `json:"bound_tokens_per_s"`
	// BoundRatio is TokensPerSecond / Bound: how close the run came.
	BoundRatio *float64 `json:"bound_ratio"`

	BytesRead     int64    `json:"bytes_read"` // from the slow tier, whole padded blocks
	BytesPerToken *float64 `json:"bytes_read_per_token"`
	Reads         int64    `json:"reads"`
	ReadErrors    int64    `json:"read_errors"`

	Hits       int64 `json:"slot_hits"`
	Misses     int64 `json:"slot_misses"`
	Prefetches int64 `json:"prefetches"` // reads started ahead of an Acquire
	Evictions  int64 `json:"evictions"`
	// HitRate is Hits / (Hits + Misses): the share of acquired experts
	// found in a slot (cached, or fetched ahead) rather than read on
	// demand.
	HitRate *float64 `json:"slot_hit_rate"`

	// Precision is the share of the experts the predictor (pre-gate or
	// speculative hints) named that the layer then used: PredictedUsed /
	// Predicted. Recall is the share of a hinted layer's used experts that
	// the hint named: PredictedUsed / (PredictedUsed + Unpredicted). nil
	// without hints (policies that do not predict).
	Precision *float64 `json:"predictor_precision"`
	Recall    *float64 `json:"predictor_recall"`

	// StallSeconds is the time compute waited for experts (the
	// scheduler's Acquire waiting on reads); StallFraction is its share of
	// Seconds.
	StallSeconds  float64  `json:"stall_s"`
	StallFraction *float64 `json:"stall_fraction"`
	// Overlap is the share of the slow tier's work that compute hid:
	// 1 - StallSeconds / ReadSeconds, where ReadSeconds = BytesRead /
	// ReadBandwidth is the time the disk needs for the interval's reads at
	// the measured bandwidth; clamped to [0, 1]. 0: compute waited for
	// every read (ondemand); 1: no read was waited for. nil when nothing
	// was read or the bandwidth was not measured. It is only as good as
	// the probe: where the run's reads go faster than the probe's (a
	// caching virtual disk), even ondemand shows some overlap.
	Overlap     *float64 `json:"overlap"`
	ReadSeconds *float64 `json:"read_s"`

	// PeakExpertBytes is the expert memory: Slots x SlotBytes, allocated
	// whole when the scheduler opens, so it is also the peak.
	PeakExpertBytes int64 `json:"peak_expert_bytes"`
	Slots           int   `json:"slots"`
	SlotBytes       int64 `json:"slot_bytes"`
}

// NewReport computes the report of in's interval.
func NewReport(in ReportInput) Report {
	c, secs := in.Counts, in.Elapsed.Seconds()
	r := Report{
		Phase: in.Phase, Policy: in.Plan.Policy, Cache: in.Plan.Cache,
		Tokens: in.Tokens, Seconds: secs,
		Probe:     in.Probe,
		BytesRead: c.BytesRead, Reads: c.Reads, ReadErrors: c.ReadErrors,
		Hits: c.Hits, Misses: c.Misses, Prefetches: c.Prefetches, Evictions: c.Evictions,
		StallSeconds:    c.Stall.Seconds(),
		PeakExpertBytes: in.Plan.Bytes(), Slots: in.Plan.Slots, SlotBytes: in.Plan.SlotBytes,
	}
	if in.Tokens > 0 && secs > 0 {
		r.TokensPerSecond = ptr(float64(in.Tokens) / secs)
	}
	if in.Tokens > 0 {
		r.BytesPerToken = ptr(float64(c.BytesRead) / float64(in.Tokens))
	}
	if secs > 0 {
		r.StallFraction = ptr(r.StallSeconds / secs)
	}
	if bw := in.Probe.bandwidth(); bw > 0 {
		r.ReadBandwidth = ptr(bw)
		if c.BytesRead > 0 {
			rs := float64(c.BytesRead) / bw
			r.ReadSeconds = ptr(rs)
			r.Overlap = ptr(min(max(1-r.StallSeconds/rs, 0), 1))
		}
		if r.BytesPerToken != nil && *r.BytesPerToken > 0 {
			r.Bound = ptr(bw / *r.BytesPerToken)
			if r.TokensPerSecond != nil {
				r.BoundRatio = ptr(*r.TokensPerSecond / *r.Bound)
			}
		}
	}
	if v, ok := ratio(c.Hits, c.Hits+c.Misses); ok {
		r.HitRate = ptr(v)
	}
	if v, ok := ratio(c.PredictedUsed, c.Predicted); ok {
		r.Precision = ptr(v)
	}
	if v, ok := ratio(c.PredictedUsed, c.PredictedUsed+c.Unpredicted); ok {
		r.Recall = ptr(v)
	}
	return r
}

func (p *ReadProbe) bandwidth() float64 {
	if p == nil {
		return 0
	}
	return p.BytesPerSecond()
}

func ptr(v float64) *float64 { return &v }

// ratio is a / b, ok false when b is not positive.
func ratio(a, b int64) (v float64, ok bool) {
	if b <= 0 {
		return 0, false
	}
	return float64(a) / float64(b), true
}

// String prints the report for a terminal, one figure group a line.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "offload %s/%s, %s: %d tokens in %.3f s, %s tokens/s\n",
		r.Policy, r.Cache, r.Phase, r.Tokens, r.Seconds, opt(r.TokensPerSecond, "%.1f"))
	switch {
	case r.ReadBandwidth == nil:
		b.WriteString("  bound: n/a (disk bandwidth not measured)\n")
	case r.Bound == nil:
		fmt.Fprintf(&b, "  bound: none from the disk (nothing read; disk %.2f GB/s)\n", *r.ReadBandwidth/1e9)
	default:
		fmt.Fprintf(&b, "  bound: %.1f tokens/s (disk %.2f GB/s / %s read per token); achieved %s of it\n",
			*r.Bound, *r.ReadBandwidth/1e9, fmtBytes(int64(*r.BytesPerToken)), opt(r.BoundRatio, "%.0f%%", 100))
	}
	perTok := "n/a"
	if r.BytesPerToken != nil {
		perTok = fmtBytes(int64(*r.BytesPerToken))
	}
	fmt.Fprintf(&b, "  read: %s in %d reads (%d failed), %s per token\n", fmtBytes(r.BytesRead), r.Reads, r.ReadErrors, perTok)
	fmt.Fprintf(&b, "  slots: hit rate %s (%d hits, %d misses, %d fetched ahead, %d evictions)\n",
		opt(r.HitRate, "%.1f%%", 100), r.Hits, r.Misses, r.Prefetches, r.Evictions)
	fmt.Fprintf(&b, "  predictor: precision %s, recall %s\n", opt(r.Precision, "%.1f%%", 100), opt(r.Recall, "%.1f%%", 100))
	fmt.Fprintf(&b, "  stalled %.3f s waiting for experts (%s of the time); overlap %s\n",
		r.StallSeconds, opt(r.StallFraction, "%.0f%%", 100), opt(r.Overlap, "%.0f%%", 100))
	fmt.Fprintf(&b, "  peak expert memory: %d slots x %s = %s", r.Slots, fmtBytes(r.SlotBytes), fmtBytes(r.PeakExpertBytes))
	return b.String()
}

// opt formats *v (times scale[0], if given) or "n/a" for nil.
func opt(v *float64, format string, scale ...float64) string {
	if v == nil {
		return "n/a"
	}
	x := *v
	for _, s := range scale {
		x *= s
	}
	return fmt.Sprintf(format, x)
}
