package model

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/moesys/moesys/offload"
	"github.com/moesys/moesys/safetensors"
)

func TestConvertRoundTripBitExact(t *testing.T) {
	for _, name := range []string{"mixtral_bf16", "qwen2_moe"} {
		t.Run(name, func(t *testing.T) {
			src := filepath.Join("..", "testdata", "hf", name)
			mid, back := t.TempDir(), t.TempDir()
			if err := ConvertToOffload(src, mid); err != nil {
				t.Fatal(err)
			}
			lay, err := offload.OpenLayout(mid)
			if err != nil {
				t.Fatal(err)
			}
			cfg, _ := LoadConfig(src)
			if want := cfg.L * cfg.E; len(lay.Blocks) != want {
				t.Fatalf("%d expert blocks, want %d", len(lay.Blocks), want)
			}
			for _, b := range lay.Blocks {
				if b.Offset%offload.Align != 0 || len(b.Tensors) != 3 {
					t.Fatalf("block %+v: not aligned or not 3 tensors", b)
				}
			}
			if err := ConvertFromOffload(mid, back); err != nil {
				t.Fatal(err)
			}
			// Every tensor bit for bit.
			a, err := safetensors.OpenModel(src)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := safetensors.OpenModel(back)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if len(a.Names()) != len(b.Names()) {
				t.Fatalf("%d tensors back, want %d", len(b.Names()), len(a.Names()))
			}
			for _, n := range a.Names() {
				x, _ := a.Bytes(n)
				y, err := b.Bytes(n)
				if err != nil || !bytes.Equal(x, y) {
					t.Fatalf("tensor %s differs after the round trip (%v)", n, err)
				}
			}
			// And the converted-back checkpoint runs to the same logits.
			m, err := Load(back)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			f := loadFixture(t, name)
			got, err := m.NewSession(32).Forward(f.inputs[1])
			if err != nil {
				t.Fatal(err)
			}
			want := readF32(t, filepath.Join(src, "expected", "logits_1.f32"))
			if e := relErr(got, want); !(e < 1e-4) {
				t.Fatalf("logits after the round trip: rel err %g", e)
			}
			x, _ := os.ReadFile(filepath.Join(src, "model.safetensors"))
			y, _ := os.ReadFile(filepath.Join(back, "model.safetensors"))
			// The fixtures were written in the standard order, so even the
			// file comes back byte for byte.
			if !bytes.Equal(x, y) {
				t.Fatal("model.safetensors differs from the original after the round trip")
			}
		})
	}
}
