package model

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/moesys/moesys/kernel"
)

// smallPresetJSON is the train preset `small` as moesys bench serve writes
// it (d_model 256, 4 layers, 4 heads / 2 KV, 8 experts top-2 of ffn 512,
// byte vocabulary).
const smallPresetJSON = `{"architectures": ["MixtralForCausalLM"], "hidden_act": "silu", "hidden_size": 256,
 "intermediate_size": 512, "max_position_embeddings": 4096, "model_type": "mixtral", "num_attention_heads": 4,
 "num_experts_per_tok": 2, "num_hidden_layers": 4, "num_key_value_heads": 2, "num_local_experts": 8,
 "rms_norm_eps": 0.00001, "rope_theta": 10000, "sliding_window": null, "tie_word_embeddings": false,
 "torch_dtype": "bfloat16", "vocab_size": 256}`

// openSmallPreset writes the small preset with random bf16 weights and
// loads it as moesys serve does: fast precision, resident and packed.
func openSmallPreset(tb testing.TB) *Model {
	tb.Helper()
	return openRandomPacked(tb, []byte(smallPresetJSON))
}

// BenchmarkBatchDecode times one decode pass of n sessions, each 48 to 80
// positions deep, as in moesys bench serve (48-byte prompts, 32 tokens);
// the passes of 1 and of 8 sessions give the serving benchmark's ratio
// without the engine and the HTTP layer: 8*t(1)/t(8).
func BenchmarkBatchDecode(b *testing.B) {
	m := openSmallPreset(b)
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("seqs=%d", n), func(b *testing.B) {
			const prompt, gen = 48, 32
			seqs := make([]*Session, n)
			toks := make([][]int32, n)
			for i := range seqs {
				seqs[i] = m.NewSession(128)
				p := make([]int32, prompt)
				for j := range p {
					p[j] = int32(32 + (i*31+j*7)%90)
				}
				if _, err := seqs[i].Forward(p); err != nil {
					b.Fatal(err)
				}
				seqs[i].Pos += i * gen / n // staggered, as clients are
				toks[i] = make([]int32, 1)
			}
			bt := m.NewBatch()
			b.ResetTimer()
			for it := 0; it < b.N; it++ {
				for i, s := range seqs {
					if s.Pos >= prompt+gen {
						s.Pos = prompt // rewind: the prompt's keys stay cached
					}
					toks[i][0] = int32(32 + (it*13+i*57)%90)
				}
				if _, err := bt.Forward(seqs, toks); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestBatchBitIdenticalPacked: with packed weights (moesys serve's default:
// fast precision, resident), a sequence's logits in a batch are its logits
// alone bit for bit, in prefill passes (a one-token prompt among longer
// ones), mixed passes (decode steps beside a prefill) and decode passes;
// on models whose weights stay unpacked, within rounding.
func TestBatchBitIdenticalPacked(t *testing.T) {
	qwen, err := os.ReadFile(filepath.Join("..", "testdata", "hf", "qwen2_moe", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		open func(t *testing.T) *Model
	}{
		{"small-preset", func(t *testing.T) *Model { return openSmallPreset(t) }},
		{"qwen2_moe-bf16-random", func(t *testing.T) *Model { return openRandomPacked(t, qwen) }},
		{"mixtral_bf16", func(t *testing.T) *Model {
			_, m := openFixture(t, "mixtral_bf16")
			m.SetPrecision(Fast)
			if _, err := m.MakeResident(true); err != nil {
				t.Fatal(err)
			}
			return m
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tc.open(t)
			packed := m.Layers[0].Q.Packed != nil
			prompts := [][]int32{{5, 9, 200, 7, 31}, {77}, {1, 2, 3, 4, 5, 6, 7, 8, 9}, {100, 3, 250}}
			steps := [][]int32{{11, 12, 13}, {21, 22, 23}, {31, 32, 33}, {41, 42}}
			// Alone: the prompt, then the steps one by one.
			var alone [][][]float32
			for i, p := range prompts {
				s := m.NewSession(32)
				var outs [][]float32
				for _, toks := range append([][]int32{p}, split(steps[i])...) {
					out, err := s.Forward(toks)
					if err != nil {
						t.Fatal(err)
					}
					outs = append(outs, append([]float32(nil), out...))
				}
				alone = append(alone, outs)
			}
			seqs := make([]*Session, len(prompts))
			for i := range seqs {
				seqs[i] = m.NewSession(32)
			}
			b := m.NewBatch()
			done := make([]int, len(prompts)) // results checked per session
			pass := func(name string, idx []int, toks [][]int32) {
				t.Helper()
				ss := make([]*Session, len(idx))
				for j, i := range idx {
					ss[j] = seqs[i]
				}
				outs, err := b.Forward(ss, toks)
				if err != nil {
					t.Fatal(err)
				}
				for j, i := range idx {
					want := alone[i][done[i]]
					if packed {
						for k := range want {
							if math.Float32bits(outs[j][k]) != math.Float32bits(want[k]) {
								t.Fatalf("%s: sequence %d, result %d: logit %d = %g, alone %g", name, i, done[i], k, outs[j][k], want[k])
							}
						}
					} else if e := relErr(outs[j], want); !(e < 1e-5) {
						t.Fatalf("%s: sequence %d, result %d: rel err %g against alone", name, i, done[i], e)
					}
					done[i]++
				}
			}
			pass("prefill", []int{0, 1, 2}, prompts[:3])
			pass("mixed", []int{0, 1, 3, 2}, [][]int32{steps[0][:1], steps[1][:1], prompts[3], steps[2][:1]})
			pass("decode", []int{0, 1, 2, 3}, [][]int32{steps[0][1:2], steps[1][1:2], steps[2][1:2], steps[3][:1]})
			pass("decode 2", []int{3, 2, 1, 0}, [][]int32{steps[3][1:2], steps[2][2:3], steps[1][2:3], steps[0][2:3]})
			if !packed {
				t.Logf("weights not packed (%s): checked within rounding", kernel.CurrentLevel())
			}
		})
	}
}

func split(toks []int32) [][]int32 {
	out := make([][]int32, len(toks))
	for i := range toks {
		out[i] = toks[i : i+1]
	}
	return out
}

// openRandomPacked writes random bf16 weights for configJSON and loads them
// as openSmallPreset does.
func openRandomPacked(tb testing.TB, configJSON []byte) *Model {
	tb.Helper()
	dir := tb.TempDir()
	if err := WriteRandom(dir, configJSON, RandomOptions{Seed: 3}); err != nil {
		tb.Fatal(err)
	}
	m, err := Load(dir)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	m.SetPrecision(Fast)
	if _, err := m.MakeResident(true); err != nil {
		tb.Fatal(err)
	}
	return m
}
