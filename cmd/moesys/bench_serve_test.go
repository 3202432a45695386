package main

import (
	"bytes"
	"encoding/json"
	"testing"
)

// `moesys bench serve --quick --duration 2s` runs end to end against a
// real server process on a small checkpoint and reports every result,
// with no failure under load.
func TestBenchServeShort(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server and loads it for several seconds")
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"bench", "serve", "--quick", "--duration", "2s", "--json", "--model", "../../testdata/hf/mixtral_f32"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	var rep benchReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	got := map[string]benchResult{}
	for _, r := range rep.Results {
		got[r.Name] = r
	}
	for _, name := range []string{"serve_batched_vs_single_throughput", "serve_errors_under_load", "serve_load_latency_p50", "serve_load_latency_p99",
		"serve_load_ttft_p50", "serve_load_ttft_p99", "serve_load_tokens_per_s", "serve_peak_rss"} {
		if _, ok := got[name]; !ok {
			t.Errorf("no %s in %s", name, stdout.String())
		}
	}
	if r := got["serve_batched_vs_single_throughput"]; !(r.Value > 0 && r.Bound > 0) {
		t.Errorf("throughput %+v", r)
	}
	if r := got["serve_errors_under_load"]; r.Value != 0 {
		t.Errorf("failures under load: %+v\n%s", r, stderr.String())
	}
	if r := got["serve_peak_rss"]; r.Value <= 0 {
		t.Errorf("peak RSS %+v", r)
	}
}
