package offload

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// reportFigures prints a report's computed figures, "n/a" for nil.
func reportFigures(r Report) string {
	f := func(v *float64) string {
		if v == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.6g", *v)
	}
	return fmt.Sprintf("tps=%s bw=%s bound=%s ratio=%s bpt=%s hit=%s prec=%s rec=%s stall=%s overlap=%s peak=%d",
		f(r.TokensPerSecond), f(r.ReadBandwidth), f(r.Bound), f(r.BoundRatio), f(r.BytesPerToken), f(r.HitRate),
		f(r.Precision), f(r.Recall), f(r.StallFraction), f(r.Overlap), r.PeakExpertBytes)
}

// predicted returns c with a predictor's counts.
func predicted(c Counts, predicted, used, unpredicted int64) Counts {
	c.Predicted, c.PredictedUsed, c.Unpredicted = predicted, used, unpredicted
	return c
}

func TestNewReport(t *testing.T) {
	plan := Plan{Policy: OnDemand, Cache: CacheLRU, Slots: 4, SlotBytes: 8192, Experts: 12, MinSlots: 2}
	disk := &ReadProbe{Bytes: 1e9, Seconds: 0.5, Reads: 250, Chunk: 4 << 20, Depth: 8, Direct: true} // 2 GB/s
	// 10 tokens in 0.5 s, 400 MB read (0.2 s of disk), 0.05 s stalled.
	counts := Counts{Reads: 40, BytesRead: 4e8, Hits: 60, Misses: 40, Evictions: 30, Stall: 50 * time.Millisecond}
	for _, tc := range []struct {
		name string
		in   ReportInput
		want string
	}{
		{"ondemand measured", ReportInput{Plan: plan, Counts: counts, Tokens: 10, Elapsed: 500 * time.Millisecond, Probe: disk},
			"tps=20 bw=2e+09 bound=50 ratio=0.4 bpt=4e+07 hit=0.6 prec=n/a rec=n/a stall=0.1 overlap=0.75 peak=32768"},
		{"not measured", ReportInput{Plan: plan, Counts: counts, Tokens: 10, Elapsed: 500 * time.Millisecond},
			"tps=20 bw=n/a bound=n/a ratio=n/a bpt=4e+07 hit=0.6 prec=n/a rec=n/a stall=0.1 overlap=n/a peak=32768"},
		{"stall beyond the read time", ReportInput{Plan: plan, Counts: Counts{BytesRead: 1e8, Misses: 10, Stall: 400 * time.Millisecond},
			Tokens: 10, Elapsed: 500 * time.Millisecond, Probe: disk},
			"tps=20 bw=2e+09 bound=200 ratio=0.1 bpt=1e+07 hit=0 prec=n/a rec=n/a stall=0.8 overlap=0 peak=32768"},
		{"nothing read", ReportInput{Plan: plan, Counts: Counts{Hits: 20}, Tokens: 10, Elapsed: time.Second, Probe: disk},
			"tps=10 bw=2e+09 bound=n/a ratio=n/a bpt=0 hit=1 prec=n/a rec=n/a stall=0 overlap=n/a peak=32768"},
		{"no tokens", ReportInput{Plan: plan, Probe: disk},
			"tps=n/a bw=2e+09 bound=n/a ratio=n/a bpt=n/a hit=n/a prec=n/a rec=n/a stall=n/a overlap=n/a peak=32768"},
		{"predictor", ReportInput{Plan: plan, Counts: predicted(counts, 10, 8, 8), Tokens: 10, Elapsed: 500 * time.Millisecond, Probe: disk},
			"tps=20 bw=2e+09 bound=50 ratio=0.4 bpt=4e+07 hit=0.6 prec=0.8 rec=0.5 stall=0.1 overlap=0.75 peak=32768"},
		{"predictor exact", ReportInput{Plan: plan, Counts: predicted(counts, 10, 10, 0), Tokens: 10, Elapsed: 500 * time.Millisecond, Probe: disk},
			"tps=20 bw=2e+09 bound=50 ratio=0.4 bpt=4e+07 hit=0.6 prec=1 rec=1 stall=0.1 overlap=0.75 peak=32768"},
		{"predictor always wrong", ReportInput{Plan: plan, Counts: predicted(counts, 4, 0, 6), Tokens: 10, Elapsed: 500 * time.Millisecond, Probe: disk},
			"tps=20 bw=2e+09 bound=50 ratio=0.4 bpt=4e+07 hit=0.6 prec=0 rec=0 stall=0.1 overlap=0.75 peak=32768"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := reportFigures(NewReport(tc.in)); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

// Figures that do not apply are JSON nulls, never NaN or Inf (which
// encoding/json rejects).
func TestReportJSON(t *testing.T) {
	r := NewReport(ReportInput{Phase: "decode", Plan: Plan{Policy: Resident, Cache: CacheLRU, Slots: 2, SlotBytes: 4096}})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"tokens_per_s", "bound_tokens_per_s", "read_bytes_per_s", "bytes_read_per_token",
		"slot_hit_rate", "predictor_precision", "predictor_recall", "overlap"} {
		if v, ok := m[k]; !ok || v != nil {
			t.Errorf("%s = %v (present %v), want null", k, v, ok)
		}
	}
	if m["policy"] != "resident" || m["peak_expert_bytes"] != 8192.0 || m["phase"] != "decode" {
		t.Errorf("got %s", b)
	}
	if strings.Contains(r.String(), "NaN") || strings.Contains(r.String(), "Inf") {
		t.Errorf("String prints a non-number:\n%s", r)
	}
}

// A report prints one figure group a line; figures that do not apply say
// n/a.
func ExampleReport() {
	r := NewReport(ReportInput{
		Phase:   "decode",
		Plan:    Plan{Policy: OnDemand, Cache: CacheLRU, Slots: 16, SlotBytes: 12 << 20, Experts: 64, MinSlots: 2},
		Counts:  Counts{Reads: 40, BytesRead: 40 * 12 << 20, Hits: 60, Misses: 40, Evictions: 24, Stall: 150 * time.Millisecond},
		Tokens:  20,
		Elapsed: time.Second,
		Probe:   &ReadProbe{Bytes: 64 << 20, Reads: 16, Chunk: 4 << 20, Depth: 8, Seconds: 0.032, Direct: true},
	})
	fmt.Println(r)
	// Output:
	// offload ondemand/lru, decode: 20 tokens in 1.000 s, 20.0 tokens/s
	//   bound: 83.3 tokens/s (disk 2.10 GB/s / 24 MiB read per token); achieved 24% of it
	//   read: 480 MiB in 40 reads (0 failed), 24 MiB per token
	//   slots: hit rate 60.0% (60 hits, 40 misses, 0 fetched ahead, 24 evictions)
	//   predictor: precision n/a, recall n/a
	//   stalled 0.150 s waiting for experts (15% of the time); overlap 38%
	//   peak expert memory: 16 slots x 12 MiB = 192 MiB
}
