package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func readF32File(t *testing.T, path string) []float64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float64, len(b)/4)
	for i := range v {
		v[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
	}
	return v
}

func TestInspectLogitsMatchesFixture(t *testing.T) {
	fx := filepath.Join("..", "..", "testdata", "hf", "mixtral_bf16")
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run([]string{"inspect", "logits", "--model", fx, "--inputs", filepath.Join(fx, "expected", "inputs.json"), "--out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for i := 0; i < 3; i++ {
		got := readF32File(t, filepath.Join(out, "logits_"+string(rune('0'+i))+".f32"))
		want := readF32File(t, filepath.Join(fx, "expected", "logits_"+string(rune('0'+i))+".f32"))
		if len(got) != len(want) {
			t.Fatalf("seq %d: %d values, want %d", i, len(got), len(want))
		}
		var num, den float64
		for j := range want {
			num += (got[j] - want[j]) * (got[j] - want[j])
			den += want[j] * want[j]
		}
		if e := math.Sqrt(num / den); !(e < 1e-4) {
			t.Fatalf("seq %d: rel err %g", i, e)
		}
		var g, w struct{ Layers any }
		for p, v := range map[string]*struct{ Layers any }{filepath.Join(out, "routing_"+string(rune('0'+i))+".json"): &g,
			filepath.Join(fx, "expected", "routing_"+string(rune('0'+i))+".json"): &w} {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, v); err != nil {
				t.Fatal(err)
			}
		}
		if !reflect.DeepEqual(g.Layers, w.Layers) {
			t.Fatalf("seq %d: routing differs", i)
		}
	}
}

func TestInspectLogitsUsageErrors(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"inspect", "logits", "--model", "x"}, &stdout, &stderr); code != 2 {
		t.Fatalf("missing flags: exit %d, want 2", code)
	}
	if code := run([]string{"inspect", "logits", "--model", "/nonexistent", "--inputs", "/nonexistent", "--out", t.TempDir()}, &stdout, &stderr); code != 1 {
		t.Fatalf("missing inputs file: exit %d, want 1", code)
	}
}
