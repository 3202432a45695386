package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/offload"
	"github.com/moesys/moesys/tensor"
)

// offloadTestConfig is a tiny Mixtral with moesys' byte vocabulary (so the
// byte tokenizer serves it): 3 MoE layers of 8 experts, top-2; an expert's
// three bf16 tensors take 4.5 KiB, one 8 KiB slot.
const offloadTestConfig = `{"model_type":"mixtral","vocab_size":256,"hidden_size":32,"intermediate_size":24,
	"num_hidden_layers":3,"num_attention_heads":4,"num_key_value_heads":2,"num_local_experts":8,
	"num_experts_per_tok":2}`

// offloadTestModel writes the tiny model's plain checkpoint and its
// offload layout (a few hundred KiB) into temporary directories.
func offloadTestModel(t *testing.T) (plain, layout string) {
	t.Helper()
	plain, layout = t.TempDir(), filepath.Join(t.TempDir(), "offload")
	// A wide deviation spreads the routing over the experts.
	if err := model.WriteRandom(plain, []byte(offloadTestConfig), model.RandomOptions{DType: tensor.BF16, Seed: 5, Std: 0.3}); err != nil {
		t.Fatal(err)
	}
	if err := model.ConvertToOffload(plain, layout); err != nil {
		t.Fatal(err)
	}
	return plain, layout
}

// runGenerateJSON runs generate with args and --json and decodes the result.
func runGenerateJSON(t *testing.T, args ...string) generateResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	args = append([]string{"generate", "--prompt", "offload me", "--temperature", "0", "--max-tokens", "12", "--json"}, args...)
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("%v: exit %d: %s", args, code, stderr.String())
	}
	var res generateResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	return res
}

// Greedy generation with the experts on disk gives the resident model's
// text, for every policy at its minimum budget, one slot more, and no
// limit, and the report counts what the run did.
func TestGenerateOffloadedMatchesResident(t *testing.T) {
	plain, layout := offloadTestModel(t)
	want := runGenerateJSON(t, "--model", plain)
	if want.Offload != nil || want.Tokens != 12 {
		t.Fatalf("resident run: %+v", want)
	}
	lay, err := offload.OpenLayout(layout)
	if err != nil {
		t.Fatal(err)
	}
	for _, policy := range offload.Policies {
		all, err := offload.NewPlan(lay, offload.SchedulerConfig{Policy: policy, TopK: 2, Batch: 1})
		if err != nil {
			t.Logf("policy %s does not plan for this model: %v", policy, err)
			continue
		}
		minBytes := int64(all.MinSlots) * all.SlotBytes
		for _, budget := range []int64{minBytes, minBytes + all.SlotBytes, 0} {
			t.Run(fmt.Sprintf("%s/%d", policy, budget), func(t *testing.T) {
				got := runGenerateJSON(t, "--model", layout, "--offload", string(policy), "--expert-mem", fmt.Sprint(budget), "--no-measure")
				if got.Text != want.Text || got.Tokens != want.Tokens || got.StopReason != want.StopReason {
					t.Fatalf("offloaded: %q (%d tokens, %s), resident: %q (%d tokens, %s)",
						got.Text, got.Tokens, got.StopReason, want.Text, want.Tokens, want.StopReason)
				}
				off := got.Offload
				if off == nil {
					t.Fatal("no offload report in --json")
				}
				plan, err := offload.NewPlan(lay, offload.SchedulerConfig{Policy: policy, TopK: 2, Batch: 1, Budget: budget})
				if err != nil {
					t.Fatal(err)
				}
				d := off.Decode
				if off.Plan.Text != plan.String() || d.Slots != plan.Slots || d.PeakExpertBytes != plan.Bytes() ||
					d.Policy != plan.Policy || d.Tokens != int64(got.Tokens-1) || off.Prefill.Tokens != int64(got.PromptTokens) {
					t.Fatalf("plan %s, report %+v, want plan %s", off.Plan.Text, d, plan)
				}
				// Every read is a miss's or a fetch ahead's, of one whole slot
				// (over the run: a fetch ahead bound in one phase may finish
				// in the next).
				p := off.Prefill
				if reads := p.Reads + d.Reads; reads > p.Misses+p.Prefetches+d.Misses+d.Prefetches ||
					p.BytesRead+d.BytesRead != reads*plan.SlotBytes || p.HitRate == nil || d.HitRate == nil {
					t.Fatalf("reports:\n%s\n%s", p, d)
				}
				if d.ReadBandwidth != nil || d.Bound != nil || d.Overlap != nil {
					t.Fatalf("--no-measure, yet a bandwidth, bound or overlap: %+v", d)
				}
				if d.BytesPerToken == nil || *d.BytesPerToken != float64(d.BytesRead)/float64(d.Tokens) {
					t.Fatalf("bytes per token: %+v", d)
				}
				if fills := off.Prefill.Misses + off.Prefill.Prefetches + d.Misses + d.Prefetches; plan.Slots < plan.Experts && fills <= int64(plan.Slots) {
					t.Fatalf("%d slots for %d experts, and only %d fills: %+v", plan.Slots, plan.Experts, fills, off)
				}
			})
		}
	}
}

// A layout directory offloads without --offload (policy auto: speculative
// for a model without pre-gates); the measured disk gives the report a
// bound and an overlap whenever the decode steps read.
func TestGenerateOffloadAutoMeasured(t *testing.T) {
	plain, layout := offloadTestModel(t)
	want := runGenerateJSON(t, "--model", plain)
	got := runGenerateJSON(t, "--model", layout, "--expert-mem", "40KiB")
	if got.Text != want.Text {
		t.Fatalf("offloaded %q, resident %q", got.Text, want.Text)
	}
	if got.Offload == nil || got.Offload.Plan.Auto != "auto: speculative (the model has no pre-gates)" ||
		got.Offload.Plan.Policy != "speculative" || got.Offload.Plan.Slots != 5 {
		t.Fatalf("offload %+v", got.Offload)
	}
	d := got.Offload.Decode
	if d.ReadBandwidth == nil || d.Probe == nil || *d.ReadBandwidth <= 0 {
		t.Fatalf("bandwidth not measured: %+v", d)
	}
	if (d.BytesRead > 0) != (d.Bound != nil && d.Overlap != nil && d.BoundRatio != nil) {
		t.Fatalf("%d bytes read, bound %v, overlap %v", d.BytesRead, d.Bound, d.Overlap)
	}
}

// The text output streams the same continuation and prints the plan and
// the report on stderr.
func TestGenerateOffloadText(t *testing.T) {
	plain, layout := offloadTestModel(t)
	want := runGenerateJSON(t, "--model", plain)
	var stdout, stderr bytes.Buffer
	args := []string{"generate", "--model", layout, "--offload", "ondemand", "--expert-mem", "16KiB", "--prompt", "offload me",
		"--temperature", "0", "--max-tokens", "12"}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got := strings.TrimSuffix(stdout.String(), "\n"); got != want.Text {
		t.Fatalf("streamed %q, want %q", got, want.Text)
	}
	for _, s := range []string{"offload plan: ondemand/lru: 2 slots x 8 KiB", "offload: disk read ", "offload prefill: 10 tokens",
		"offload ondemand/lru, decode: 11 tokens", "  bound: ", "slots: hit rate ", "predictor: precision n/a, recall n/a",
		"overlap ", "peak expert memory: 2 slots x 8 KiB = 16 KiB"} {
		if !strings.Contains(stderr.String(), s) {
			t.Errorf("stderr lacks %q:\n%s", s, stderr.String())
		}
	}
	// --report=false drops the report, not the plan.
	stderr.Reset()
	if code := run(append(args, "--report=false", "--no-measure"), &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if strings.Contains(stderr.String(), "decode:") || !strings.Contains(stderr.String(), "offload plan:") {
		t.Fatalf("--report=false:\n%s", stderr.String())
	}
}

func TestGenerateOffloadDryRun(t *testing.T) {
	_, layout := offloadTestModel(t)
	lay, err := offload.OpenLayout(layout)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := offload.NewPlan(lay, offload.SchedulerConfig{Policy: offload.OnDemand, TopK: 2, Budget: 40 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"generate", "--model", layout, "--offload", "ondemand", "--expert-mem", "40KiB", "--dry-run"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got := stdout.String(); got != plan.String()+"\n" || !strings.HasPrefix(got, "ondemand/lru: 5 slots x 8 KiB = 40 KiB for 24 experts") {
		t.Fatalf("dry run printed %q, want %q", got, plan.String())
	}
	stdout.Reset()
	if code := run([]string{"generate", "--model", layout, "--offload", "ondemand", "--expert-mem", "40KiB", "--dry-run", "--json"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var res struct{ Plan planResult }
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	want := planResult{Text: plan.String(), Policy: "ondemand", Cache: "lru", Budget: 40 << 10, Slots: 5, SlotBytes: 8192, Bytes: 40 << 10,
		Experts: 24, MinSlots: 2, MinBytes: 16 << 10, Depth: offload.DefaultDepth}
	if res.Plan != want {
		t.Fatalf("dry run JSON %+v, want %+v", res.Plan, want)
	}
}

func TestGenerateOffloadErrors(t *testing.T) {
	plain, layout := offloadTestModel(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"budget below the minimum", []string{"--model", layout, "--offload", "ondemand", "--expert-mem", "12KiB"}, 1,
			"expert memory budget too small: 12 KiB holds 1 slots of 8 KiB; policy ondemand needs at least 2 slots, 16 KiB (16384 bytes)"},
		{"budget below the minimum, dry run", []string{"--model", layout, "--offload", "ondemand", "--expert-mem", "1000", "--dry-run"}, 1,
			"needs at least 2 slots, 16 KiB"},
		{"resident needs every expert", []string{"--model", layout, "--offload", "resident", "--expert-mem", "64KiB"}, 1,
			"policy resident needs at least 24 slots, 192 KiB"},
		{"bad size", []string{"--model", layout, "--offload", "ondemand", "--expert-mem", "2 gigs"}, 2, `unknown unit "gigs"`},
		{"unknown policy", []string{"--model", layout, "--offload", "telepathy"}, 1, `unknown policy "telepathy"`},
		{"unknown cache", []string{"--model", layout, "--offload", "ondemand", "--cache", "mru"}, 1, `unknown cache policy "mru"`},
		{"plain checkpoint", []string{"--model", plain, "--offload", "ondemand"}, 1, "not in the offload layout (no experts.json); convert it first"},
		{"offload flag on a resident run", []string{"--model", plain, "--expert-mem", "1GiB"}, 1, "--expert-mem needs --offload"},
		{"read depth", []string{"--model", layout, "--read-depth", "0"}, 1, "--read-depth 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"generate", "--prompt", "x", "--max-tokens", "2"}, tc.args...), &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d (want %d), stderr:\n%s\nwant %q", code, tc.code, stderr.String(), tc.want)
			}
		})
	}
}

func TestGenerateHelpListsOffload(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"generate", "--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, s := range []string{"--offload", "--expert-mem", "--cache", "--dry-run", "--no-measure", "--report", "--read-depth",
		string(offload.OnDemand), "--expert-mem 2GiB --dry-run"} {
		if !strings.Contains(stdout.String(), s) {
			t.Errorf("help lacks %q", s)
		}
	}
}
