package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// trainData writes a small text file to train on.
func trainData(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data.txt")
	text := strings.Repeat("package main\n\nfunc main() { println(\"hello, world\") }\n", 400)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTrainCommand: train, resume, convert to pre-gates, generate from the
// result; JSON summaries, the log and the report are well-formed.
func TestTrainCommand(t *testing.T) {
	data, out := trainData(t), t.TempDir()
	cfg := filepath.Join(t.TempDir(), "cfg.json")
	if err := os.WriteFile(cfg, []byte(`{"preset": "tiny", "seq": 32, "batch": 2, "steps": 4, "eval_every": 2, "eval_batches": 2,
		"model": {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "num_key_value_heads": 1,
		"num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 48, "vocab_size": 256,
		"router_aux_loss_coef": 0.01, "max_position_embeddings": 512}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(t.TempDir(), "log.jsonl")
	code, stdout, stderr := runCmd("train", "--config", cfg, "--data", data, "--out", out, "--log", log, "--json")
	if code != 0 {
		t.Fatalf("train: exit %d\n%s", code, stderr)
	}
	var s struct {
		Steps      int     `json:"steps"`
		FirstLoss  float64 `json:"first_loss"`
		LastLoss   float64 `json:"last_loss"`
		Checkpoint string  `json:"checkpoint"`
	}
	if err := json.Unmarshal([]byte(stdout), &s); err != nil || s.Steps != 4 || s.Checkpoint == "" {
		t.Fatalf("summary %q: %v", stdout, err)
	}
	lines := strings.Split(strings.TrimSpace(readFile(t, log)), "\n")
	if len(lines) < 5 {
		t.Fatalf("log has %d lines, want 4 steps and evaluations", len(lines))
	}
	// Resume for 2 more steps.
	code, stdout, stderr = runCmd("train", "--resume", out, "--steps", "6", "--data", data, "--json")
	if code != 0 || !strings.Contains(stderr, "resuming") {
		t.Fatalf("resume: exit %d\n%s", code, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), &s); err != nil || s.Steps != 6 {
		t.Fatalf("resumed summary %q: %v", stdout, err)
	}
	// Convert to pre-gates and fine-tune.
	pre := t.TempDir()
	code, stdout, stderr = runCmd("train", "--from", out, "--convert-pregate", "--steps", "2", "--data", data, "--out", pre, "--json")
	if code != 0 {
		t.Fatalf("convert: exit %d\n%s", code, stderr)
	}
	var rep struct {
		Pregate struct {
			Before struct {
				ExactSet float64 `json:"exact_set"`
				Layers   int     `json:"layers"`
			} `json:"before_fine_tuning"`
		} `json:"pregate"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || rep.Pregate.Before.Layers != 2 {
		t.Fatalf("convert summary %q: %v", stdout, err)
	}
	if _, err := os.Stat(filepath.Join(pre, "pregate_report.json")); err != nil {
		t.Fatal(err)
	}
	// The pre-gated checkpoint generates.
	code, want, stderr := runCmd("generate", "--model", filepath.Join(pre, "step-00000002"), "--prompt", "func", "--max-tokens", "5", "--temperature", "0")
	if code != 0 {
		t.Fatalf("generate from the pre-gated checkpoint: exit %d\n%s", code, stderr)
	}
	// The run's directory, and its latest file, name that checkpoint.
	for _, m := range []string{pre, filepath.Join(pre, "latest")} {
		code, got, stderr := runCmd("generate", "--model", m, "--prompt", "func", "--max-tokens", "5", "--temperature", "0")
		if code != 0 || got != want || !strings.Contains(stderr, "step-00000002 (the run's latest checkpoint)") {
			t.Fatalf("generate --model %s: exit %d, text %q (want %q)\n%s", m, code, got, want, stderr)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTrainCommandErrors: bad configurations fail before any work with a
// message naming the problem, never a panic.
func TestTrainCommandErrors(t *testing.T) {
	data := trainData(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	blocked := write("file", "x") // a file where the output directory should go
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"preset", []string{"--preset", "huge"}, "unknown preset"},
		{"k>e", []string{"--config", write("k.json", `{"model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_local_experts": 2, "num_experts_per_tok": 3, "intermediate_size": 8, "vocab_size": 256}}`)}, "num_experts_per_tok 3"},
		{"heads", []string{"--config", write("h.json", `{"model": {"hidden_size": 30, "num_hidden_layers": 2, "num_attention_heads": 4, "num_local_experts": 2, "num_experts_per_tok": 1, "intermediate_size": 8, "vocab_size": 256}}`)}, "not divisible"},
		{"unknown-field", []string{"--config", write("u.json", `{"stepz": 3}`)}, "unknown field"},
		{"missing-data", []string{"--data", filepath.Join(dir, "nope")}, "nope"},
		{"unwritable-out", []string{"--out", filepath.Join(blocked, "sub")}, "output directory"},
		{"bad-resume", []string{"--resume", dir}, "neither a checkpoint"},
		{"convert-no-from", []string{"--convert-pregate"}, "needs --from"},
		{"ranks-zero", []string{"--ranks", "0"}, "at least 1"},
		{"ranks-experts", []string{"--ranks", "3", "--batch", "3"}, "experts must divide"},
		{"ranks-batch", []string{"--ranks", "2", "--batch", "3"}, "global batch must divide"},
		{"shard-one-rank", []string{"--shard-dense"}, "add --ranks N"},
		{"embed-one-rank", []string{"--embed-partition"}, "one process has nothing to split over"},
		{"embed-shard", []string{"--embed-partition", "--ranks", "2", "--shard-dense"}, "--embed-partition with --shard-dense"},
		{"embed-tied", []string{"--embed-partition", "--ranks", "2", "--config", write("t.json", `{"model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_local_experts": 2, "num_experts_per_tok": 1, "intermediate_size": 8, "vocab_size": 256, "tie_word_embeddings": true}}`)}, "tied embeddings"},
		{"embed-indivisible", []string{"--embed-partition", "--ranks", "3", "--batch", "3", "--seq", "16", "--config", write("d.json", `{"model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_local_experts": 3, "num_experts_per_tok": 1, "intermediate_size": 8, "vocab_size": 256}}`)}, "hidden size 32 does not split over 3 ranks"},
		{"vocab", []string{"--config", write("v.json", `{"model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_local_experts": 2, "num_experts_per_tok": 1, "intermediate_size": 8, "vocab_size": 64}}`)}, "vocab_size 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"train", "--data", data, "--steps", "1", "--out", filepath.Join(dir, "out-"+tc.name)}, tc.args...)
			code, _, stderr := runCmd(args...)
			if code == 0 || !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "goroutine") {
				t.Fatalf("exit %d, stderr %q; want a failure mentioning %q", code, stderr, tc.want)
			}
		})
	}
	// --help prints usage with examples and succeeds.
	code, stdout, _ := runCmd("train", "--help")
	if code != 0 || !strings.Contains(stdout, "Examples:") || !strings.Contains(stdout, "switch-base-8") {
		t.Fatalf("help: exit %d\n%s", code, stdout)
	}
}

// TestTrainRanks: --ranks 2 trains a sharded run, which resumes in one
// process and generates.
func TestTrainRanks(t *testing.T) {
	data, out := trainData(t), t.TempDir()
	args := []string{"--preset", "tiny", "--seq", "32", "--batch", "2", "--data", data, "--out", out}
	code, stdout, stderr := runCmd(append([]string{"train", "--ranks", "2", "--steps", "2", "--json"}, args...)...)
	if code != 0 || !strings.Contains(stderr, "over 2 ranks") {
		t.Fatalf("train --ranks 2: exit %d\n%s", code, stderr)
	}
	var s struct {
		Steps      int    `json:"steps"`
		Checkpoint string `json:"checkpoint"`
	}
	if err := json.Unmarshal([]byte(stdout), &s); err != nil || s.Steps != 2 {
		t.Fatalf("summary %q: %v", stdout, err)
	}
	if _, err := os.Stat(filepath.Join(s.Checkpoint, "model-00002-of-00002.safetensors")); err != nil {
		t.Fatalf("no rank-1 shard: %v", err)
	}
	code, _, stderr = runCmd("train", "--resume", out, "--steps", "3", "--data", data)
	if code != 0 || !strings.Contains(stderr, "done: 3 steps") {
		t.Fatalf("resume in one process: exit %d\n%s", code, stderr)
	}
	// The dense parameters sharded over the ranks, resuming that checkpoint.
	code, _, stderr = runCmd("train", "--resume", out, "--steps", "4", "--data", data, "--ranks", "2", "--shard-dense")
	if code != 0 || !strings.Contains(stderr, "dense parameters sharded over 2 ranks") || !strings.Contains(stderr, "done: 4 steps") {
		t.Fatalf("resume with --ranks 2 --shard-dense: exit %d\n%s", code, stderr)
	}
	// Its checkpoint (sharding recorded in its options) resumes in one
	// process, unsharded.
	code, _, stderr = runCmd("train", "--resume", out, "--steps", "5", "--data", data)
	if code != 0 || !strings.Contains(stderr, "done: 5 steps") {
		t.Fatalf("sharded run resumed in one process: exit %d\n%s", code, stderr)
	}
	// The embedding partitioned over the ranks, resuming that checkpoint;
	// its checkpoint (the whole table) resumes in one process.
	code, _, stderr = runCmd("train", "--resume", out, "--steps", "6", "--data", data, "--ranks", "2", "--embed-partition")
	if code != 0 || !strings.Contains(stderr, "embedding partitioned over 2 ranks: [256, 64] per rank") || !strings.Contains(stderr, "done: 6 steps") {
		t.Fatalf("resume with --ranks 2 --embed-partition: exit %d\n%s", code, stderr)
	}
	code, _, stderr = runCmd("train", "--resume", out, "--steps", "7", "--data", data)
	if code != 0 || !strings.Contains(stderr, "done: 7 steps") {
		t.Fatalf("partitioned run resumed in one process: exit %d\n%s", code, stderr)
	}
	// Both paths of 2D prefetch: the dense parameters sharded and each
	// rank's experts on the storage tiers (files of its own).
	st := t.TempDir()
	code, _, stderr = runCmd("train", "--resume", out, "--steps", "8", "--data", data, "--ranks", "2", "--shard-dense", "--storage", st, "--sparse-mem", "16MiB")
	if code != 0 || !strings.Contains(stderr, "this rank's of 2 ranks") || !strings.Contains(stderr, "done: 8 steps") {
		t.Fatalf("resume with --ranks 2 --shard-dense --storage: exit %d\n%s", code, stderr)
	}
	for r := range 2 {
		if _, err := os.Stat(filepath.Join(st, fmt.Sprintf("sparse-state.rank-%d-of-2.bin", r))); err != nil {
			t.Fatalf("rank %d's state file: %v", r, err)
		}
	}
}

// TestExampleConfigs: the shipped example configs parse and validate.
func TestExampleConfigs(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join("..", "..", "examples", "train-*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no example configs: %v", err)
	}
	for _, p := range paths {
		o, err := readTrainFile(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if err := o.Validate(); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
}
