package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/moesys/moesys/tokenizer"
)

// TestGenerateGreedyMatchesFixture: the fixture's prompt ids are all bytes,
// so moesys' byte tokenizer turns them into the same ids, and the greedy
// continuation must be the reference's.
func TestGenerateGreedyMatchesFixture(t *testing.T) {
	fx := filepath.Join("..", "..", "testdata", "hf", "mixtral_f32")
	var in struct{ Sequences [][]int32 }
	var exp struct {
		Greedy struct{ Tokens []int32 }
	}
	for p, v := range map[string]any{filepath.Join(fx, "expected", "inputs.json"): &in, filepath.Join(fx, "expected", "expected.json"): &exp} {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	prompt := make([]byte, len(in.Sequences[0]))
	for i, id := range in.Sequences[0] {
		prompt[i] = byte(id)
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"generate", "--model", fx, "--prompt", string(prompt), "--temperature", "0",
		"--max-tokens", "8", "--precision", "exact", "--json"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var res generateResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	want := (&tokenizer.Byte{}).Decode(exp.Greedy.Tokens)
	if res.Text != want || res.Tokens != 8 || res.PromptTokens != 16 || res.StopReason != "max_tokens" {
		t.Fatalf("got %+v, want text %q", res, want)
	}
}

func TestGenerateErrors(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"generate", "--prompt", "x"}, &stdout, &stderr); code != 2 {
		t.Fatalf("no --model: exit %d, want 2", code)
	}
	fx := filepath.Join("..", "..", "testdata", "hf", "mixtral_f32")
	if code := run([]string{"generate", "--model", fx, "--prompt", "x", "--top-p", "2"}, &stdout, &stderr); code != 1 {
		t.Fatalf("bad top-p: exit %d, want 1", code)
	}
	if code := run([]string{"generate", "--model", fx, "--prompt", "", "--no-special"}, &stdout, &stderr); code != 1 {
		t.Fatalf("empty prompt: exit %d, want 1", code)
	}
}
