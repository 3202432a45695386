package model

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/moesys/moesys/kernel"
)

// fixture is one of testdata/hf's reference checkpoints with expected
// outputs computed in float64 by an independent implementation.
type fixture struct {
	dir    string
	inputs [][]int32
	greedy struct {
		Prompt int     `json:"prompt_sequence"`
		NNew   int     `json:"n_new"`
		Tokens []int32 `json:"tokens"`
	}
	tol float64
}

func loadFixture(t *testing.T, name string) fixture {
	t.Helper()
	f := fixture{dir: filepath.Join("..", "testdata", "hf", name)}
	var in struct{ Sequences [][]int32 }
	readJSON(t, filepath.Join(f.dir, "expected", "inputs.json"), &in)
	f.inputs = in.Sequences
	var exp struct {
		Greedy json.RawMessage `json:"greedy"`
		Tol    float64         `json:"recommended_rel_tol"`
	}
	readJSON(t, filepath.Join(f.dir, "expected", "expected.json"), &exp)
	if err := json.Unmarshal(exp.Greedy, &f.greedy); err != nil {
		t.Fatal(err)
	}
	f.tol = exp.Tol
	return f
}

// openFixture loads a fixture's expectations and its model, closed when the
// test ends.
func openFixture(t *testing.T, name string) (fixture, *Model) {
	t.Helper()
	f := loadFixture(t, name)
	m, err := Load(f.dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return f, m
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func readF32(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func relErr(a, b []float32) float64 {
	var num, den float64
	for i := range b {
		d := float64(a[i]) - float64(b[i])
		num += d * d
		den += float64(b[i]) * float64(b[i])
	}
	return math.Sqrt(num / den)
}

var fixtures = []string{"mixtral_f32", "mixtral_bf16", "qwen2_moe"}

func TestFixtureLogitsAndRouting(t *testing.T) {
	for _, name := range fixtures {
		t.Run(name, func(t *testing.T) {
			f, m := openFixture(t, name)
			for i, seq := range f.inputs {
				s := m.NewSession(64)
				s.RecordRouting = true
				got, err := s.Forward(seq)
				if err != nil {
					t.Fatal(err)
				}
				want := readF32(t, filepath.Join(f.dir, "expected", "logits_"+itoa(i)+".f32"))
				if len(want) != len(got) {
					t.Fatalf("seq %d: %d logits, want %d", i, len(got), len(want))
				}
				e := relErr(got, want)
				t.Logf("seq %d: logits rel err %.3g", i, e)
				if !(e < f.tol) {
					t.Fatalf("seq %d: logits rel err %g > %g", i, e, f.tol)
				}
				var routing struct{ Layers [][][]int32 }
				readJSON(t, filepath.Join(f.dir, "expected", "routing_"+itoa(i)+".json"), &routing)
				for l, layer := range routing.Layers {
					if layer == nil {
						if s.Routing[l] != nil {
							t.Fatalf("seq %d layer %d: routed a dense layer", i, l)
						}
						continue
					}
					K := m.Cfg.K
					for tok, ids := range layer {
						for k, id := range ids {
							if g := s.Routing[l][tok*K+k]; g != id {
								t.Fatalf("seq %d layer %d token %d: experts %v, want %v", i, l, tok, s.Routing[l][tok*K:(tok+1)*K], ids)
							}
						}
					}
				}
			}
		})
	}
}

func TestFixtureGreedyWithKVCache(t *testing.T) {
	for _, name := range fixtures {
		t.Run(name, func(t *testing.T) {
			f, m := openFixture(t, name)
			s := m.NewSession(64)
			logits, err := s.Forward(f.inputs[f.greedy.Prompt])
			if err != nil {
				t.Fatal(err)
			}
			V := m.Cfg.V
			last := logits[len(logits)-V:]
			var got []int32
			for len(got) < f.greedy.NNew {
				next := argmax(last)
				got = append(got, next)
				if logits, err = s.Forward([]int32{next}); err != nil {
					t.Fatal(err)
				}
				last = logits
			}
			for i := range got {
				if got[i] != f.greedy.Tokens[i] {
					t.Fatalf("greedy continuation %v, want %v", got, f.greedy.Tokens)
				}
			}
		})
	}
}

// TestKVCacheDecodeEqualsRecompute: decoding token by token over the cache
// gives the logits of running the whole sequence at once.
func TestKVCacheDecodeEqualsRecompute(t *testing.T) {
	for _, name := range fixtures {
		t.Run(name, func(t *testing.T) {
			f, m := openFixture(t, name)
			seq := f.inputs[0]
			V := m.Cfg.V
			full, err := m.NewSession(64).Forward(seq)
			if err != nil {
				t.Fatal(err)
			}
			full = append([]float32(nil), full...)
			s := m.NewSession(64)
			// A 5-token prefill chunk, then one token at a time.
			chunk, err := s.Forward(seq[:5])
			if err != nil {
				t.Fatal(err)
			}
			if e := relErr(chunk, full[:5*V]); !(e < 1e-5) {
				t.Fatalf("prefill chunk: rel err %g", e)
			}
			for i := 5; i < len(seq); i++ {
				step, err := s.Forward(seq[i : i+1])
				if err != nil {
					t.Fatal(err)
				}
				if e := relErr(step, full[i*V:(i+1)*V]); !(e < 1e-5) {
					t.Fatalf("decode position %d: rel err %g", i, e)
				}
			}
		})
	}
}

func argmax(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}

func itoa(i int) string { return string(rune('0' + i)) }

func TestFastPrecisionCloseToExact(t *testing.T) {
	// Fast (bf16 activations in multi-token products) stays within bf16
	// rounding of the reference and routes the same experts here.
	f, m := openFixture(t, "mixtral_bf16")
	m.SetPrecision(Fast)
	got, err := m.NewSession(64).Forward(f.inputs[0])
	if err != nil {
		t.Fatal(err)
	}
	want := readF32(t, filepath.Join(f.dir, "expected", "logits_0.f32"))
	e := relErr(got, want)
	t.Logf("fast precision: rel err %.3g", e)
	if !(e < 2e-2) {
		t.Fatalf("rel err %g: want within bf16 rounding (< 2e-2)", e)
	}
	if kernel.CurrentLevel() >= kernel.LevelAVX512BF16 && e < 1e-6 {
		t.Fatalf("rel err %g: the bf16 dot path did not run", e)
	}
}

func TestMakeResidentKeepsResults(t *testing.T) {
	for _, tc := range []struct {
		name string
		pack bool
	}{{"copy", false}, {"pack", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := loadFixture(t, "mixtral_bf16")
			m, err := Load(f.dir)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if tc.pack {
				m.SetPrecision(Fast)
			}
			s := m.NewSession(32)
			before, err := s.Forward(f.inputs[0])
			if err != nil {
				t.Fatal(err)
			}
			before = append([]float32(nil), before...)
			step, err := s.Forward([]int32{5})
			if err != nil {
				t.Fatal(err)
			}
			step = append([]float32(nil), step...)
			n, err := m.MakeResident(tc.pack)
			if err != nil || n <= 0 {
				t.Fatalf("MakeResident: %d bytes, %v", n, err)
			}
			s = m.NewSession(32)
			after, err := s.Forward(f.inputs[0])
			if err != nil {
				t.Fatal(err)
			}
			// Copies compute the same bits; packed panels sum in another
			// order (and prefill used bf16 dot products before and after).
			tol := 0.0
			if tc.pack {
				tol = 1e-5
			}
			if e := relErr(after, before); e > tol {
				t.Fatalf("prefill logits moved by %g after MakeResident", e)
			}
			// Decode (one token) over packed weights is exact f32 math.
			after, err = s.Forward([]int32{5})
			if err != nil {
				t.Fatal(err)
			}
			if e := relErr(after, step); e > tol+1e-6 {
				t.Fatalf("decode logits moved by %g after MakeResident", e)
			}
			if tc.pack && kernel.CurrentLevel() >= kernel.LevelAVX512BF16 && m.Layers[0].Experts[0].Gate.Packed == nil {
				t.Fatal("weights were not packed")
			}
		})
	}
}

// TestBatchEqualsAlone: several sessions in one pass (prefill of different
// lengths, then a decode step for all) give each sequence's own logits.
func TestBatchEqualsAlone(t *testing.T) {
	for _, name := range fixtures {
		t.Run(name, func(t *testing.T) {
			f, m := openFixture(t, name)
			V := m.Cfg.V
			next := []int32{7, 11, 13}
			var alone [][]float32
			for i, seq := range f.inputs {
				s := m.NewSession(32)
				if _, err := s.Forward(seq); err != nil {
					t.Fatal(err)
				}
				step, err := s.Forward(next[i : i+1])
				if err != nil {
					t.Fatal(err)
				}
				alone = append(alone, append([]float32(nil), step...))
			}
			seqs := []*Session{m.NewSession(32), m.NewSession(32), m.NewSession(32)}
			b := m.NewBatch()
			pre, err := b.Forward(seqs, f.inputs)
			if err != nil {
				t.Fatal(err)
			}
			for i := range seqs {
				want := readF32(t, filepath.Join(f.dir, "expected", "logits_"+itoa(i)+".f32"))
				if e := relErr(pre[i], want); !(e < f.tol) {
					t.Fatalf("batched prefill of sequence %d: rel err %g", i, e)
				}
			}
			steps, err := b.Forward(seqs, [][]int32{next[0:1], next[1:2], next[2:3]})
			if err != nil {
				t.Fatal(err)
			}
			for i := range seqs {
				if len(steps[i]) != V {
					t.Fatalf("sequence %d: %d logits", i, len(steps[i]))
				}
				if e := relErr(steps[i], alone[i]); !(e < 1e-5) {
					t.Fatalf("batched decode of sequence %d: rel err %g against running alone", i, e)
				}
				if seqs[i].Pos != len(f.inputs[i])+1 {
					t.Fatalf("sequence %d at position %d", i, seqs[i].Pos)
				}
			}
		})
	}
}
