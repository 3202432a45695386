package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"unsafe"

	"github.com/moesys/moesys/tensor"
)

// fixtures is the copy of the shared HF reference checkpoints.
const fixtures = "../testdata/hf"

// hfConfig holds the config.json fields the fixture tests need.
type hfConfig struct {
	ModelType          string `json:"model_type"`
	Vocab              int    `json:"vocab_size"`
	Hidden             int    `json:"hidden_size"`
	FFN                int    `json:"intermediate_size"`
	MoeFFN             int    `json:"moe_intermediate_size"`
	SharedFFN          int    `json:"shared_expert_intermediate_size"`
	Layers             int    `json:"num_hidden_layers"`
	Heads              int    `json:"num_attention_heads"`
	KVHeads            int    `json:"num_key_value_heads"`
	LocalExperts       int    `json:"num_local_experts"`
	Experts            int    `json:"num_experts"`
	QKVBias            bool   `json:"qkv_bias"`
	TieWordEmbeddings  bool   `json:"tie_word_embeddings"`
	DecoderSparseStep  int    `json:"decoder_sparse_step"`
	MLPOnlyLayers      []int  `json:"mlp_only_layers"`
	NumExpertsPerToken int    `json:"num_experts_per_tok"`
}

func readConfig(t testing.TB, dir string) hfConfig {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c hfConfig
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// expectedShapes derives every tensor name and shape of a Mixtral or
// Qwen2-MoE checkpoint from its config, independently of the file.
func expectedShapes(c hfConfig) map[string]tensor.Shape {
	D, V, L := c.Hidden, c.Vocab, c.Layers
	Dh := D / c.Heads
	HDh, GDh := c.Heads*Dh, c.KVHeads*Dh
	m := map[string]tensor.Shape{
		"model.embed_tokens.weight": {V, D},
		"model.norm.weight":         {D},
	}
	if !c.TieWordEmbeddings {
		m["lm_head.weight"] = tensor.Shape{V, D}
	}
	for l := range L {
		p := fmt.Sprintf("model.layers.%d.", l)
		m[p+"input_layernorm.weight"] = tensor.Shape{D}
		m[p+"post_attention_layernorm.weight"] = tensor.Shape{D}
		m[p+"self_attn.q_proj.weight"] = tensor.Shape{HDh, D}
		m[p+"self_attn.k_proj.weight"] = tensor.Shape{GDh, D}
		m[p+"self_attn.v_proj.weight"] = tensor.Shape{GDh, D}
		m[p+"self_attn.o_proj.weight"] = tensor.Shape{D, HDh}
		switch c.ModelType {
		case "mixtral":
			E, F := c.LocalExperts, c.FFN
			m[p+"block_sparse_moe.gate.weight"] = tensor.Shape{E, D}
			for e := range E {
				q := fmt.Sprintf("%sblock_sparse_moe.experts.%d.", p, e)
				m[q+"w1.weight"] = tensor.Shape{F, D}
				m[q+"w2.weight"] = tensor.Shape{D, F}
				m[q+"w3.weight"] = tensor.Shape{F, D}
			}
		case "qwen2_moe":
			if c.QKVBias {
				m[p+"self_attn.q_proj.bias"] = tensor.Shape{HDh}
				m[p+"self_attn.k_proj.bias"] = tensor.Shape{GDh}
				m[p+"self_attn.v_proj.bias"] = tensor.Shape{GDh}
			}
			E, F, S := c.Experts, c.MoeFFN, c.SharedFFN
			if slices.Contains(c.MLPOnlyLayers, l) || c.DecoderSparseStep <= 0 || (l+1)%c.DecoderSparseStep != 0 {
				panic("test bug: dense Qwen2-MoE layers are not covered by the fixtures")
			}
			m[p+"mlp.gate.weight"] = tensor.Shape{E, D}
			m[p+"mlp.shared_expert_gate.weight"] = tensor.Shape{1, D}
			m[p+"mlp.shared_expert.gate_proj.weight"] = tensor.Shape{S, D}
			m[p+"mlp.shared_expert.up_proj.weight"] = tensor.Shape{S, D}
			m[p+"mlp.shared_expert.down_proj.weight"] = tensor.Shape{D, S}
			for e := range E {
				q := fmt.Sprintf("%smlp.experts.%d.", p, e)
				m[q+"gate_proj.weight"] = tensor.Shape{F, D}
				m[q+"up_proj.weight"] = tensor.Shape{F, D}
				m[q+"down_proj.weight"] = tensor.Shape{D, F}
			}
		}
	}
	return m
}

func TestFixturesMatchConfig(t *testing.T) {
	for _, c := range []struct {
		dir   string
		dtype tensor.DType
	}{
		{"mixtral_f32", tensor.F32},
		{"mixtral_bf16", tensor.BF16},
		{"qwen2_moe", tensor.F32},
		{"train_tiny", tensor.F32},
	} {
		t.Run(c.dir, func(t *testing.T) {
			dir := filepath.Join(fixtures, c.dir)
			cfg := readConfig(t, dir)
			want := expectedShapes(cfg)
			f, err := Open(filepath.Join(dir, ModelFile))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			names := f.Names()
			if !slices.IsSorted(names) || len(names) != len(want) {
				t.Fatalf("got %d names (sorted %v), want %d", len(names), slices.IsSorted(names), len(want))
			}
			var total int64
			for _, name := range names {
				info, ok := f.Info(name)
				shape, known := want[name]
				if !ok || !known {
					t.Fatalf("unexpected tensor %q", name)
				}
				if info.DType != c.dtype || !info.Shape.Equal(shape) {
					t.Errorf("%s: %v %v, want %v %v", name, info.DType, info.Shape, c.dtype, shape)
				}
				if info.Size != int64(shape.NumElements()*c.dtype.Size()) {
					t.Errorf("%s: size %d", name, info.Size)
				}
				b, err := f.Bytes(name)
				if err != nil || int64(len(b)) != info.Size {
					t.Errorf("%s: Bytes: %d bytes, %v", name, len(b), err)
				}
				total += info.Size
			}
			st, _ := os.Stat(f.Path())
			if f.DataOffset()+total != st.Size() {
				t.Errorf("data offset %d + tensors %d != file size %d", f.DataOffset(), total, st.Size())
			}
			if md := f.Metadata(); md["format"] != "pt" {
				t.Errorf("metadata = %v", md)
			}
		})
	}
}

// TestBF16FixtureIsRoundedF32 checks how mixtral_bf16 was made: every value
// is the round-to-nearest-even bfloat16 of the mixtral_f32 value (checked
// independently in Python before writing this test), and truncation would
// not explain the file: about half of the values differ from it.
func TestBF16FixtureIsRoundedF32(t *testing.T) {
	f32, err := OpenModel(filepath.Join(fixtures, "mixtral_f32"))
	if err != nil {
		t.Fatal(err)
	}
	defer f32.Close()
	bf16, err := OpenModel(filepath.Join(fixtures, "mixtral_bf16"))
	if err != nil {
		t.Fatal(err)
	}
	defer bf16.Close()
	if !slices.Equal(f32.Names(), bf16.Names()) {
		t.Fatal("the two checkpoints hold different tensors")
	}
	var n, truncDiffers int
	for _, name := range f32.Names() {
		x, err := f32.F32(name)
		if err != nil {
			t.Fatal(err)
		}
		h, err := bf16.U16(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(x) != len(h) {
			t.Fatalf("%s: %d vs %d values", name, len(x), len(h))
		}
		for i := range x {
			if want := tensor.F32ToBF16(x[i]); h[i] != want {
				t.Fatalf("%s[%d]: bf16 %#04x, want F32ToBF16(%v) = %#04x", name, i, h[i], x[i], want)
			}
			if uint16(math.Float32bits(x[i])>>16) != h[i] {
				truncDiffers++
			}
			n++
		}
	}
	if truncDiffers == 0 {
		t.Errorf("no value distinguishes rounding from truncation in %d values", n)
	}
	t.Logf("%d values; %d of them differ from truncation", n, truncDiffers)
}

// TestRewriteFixturesByteIdentical checks that WriteFile reproduces the
// fixtures (written by HF safetensors) byte for byte.
func TestRewriteFixturesByteIdentical(t *testing.T) {
	for _, path := range []string{
		"mixtral_f32/model.safetensors",
		"mixtral_bf16/model.safetensors",
		"qwen2_moe/model.safetensors",
		"train_tiny/model.safetensors",
		"train_tiny/expected/grads.safetensors",
		"train_tiny/expected/adamw_step3.safetensors",
	} {
		t.Run(path, func(t *testing.T) {
			src := filepath.Join(fixtures, path)
			f, err := Open(src)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var ts []Tensor
			for _, name := range f.Names() {
				info, _ := f.Info(name)
				b, _ := f.Bytes(name)
				ts = append(ts, Tensor{Name: name, DType: info.DType, Shape: info.Shape, Data: b})
			}
			dst := filepath.Join(t.TempDir(), "out.safetensors")
			if err := WriteFile(dst, ts, f.Metadata()); err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(src)
			got, _ := os.ReadFile(dst)
			if !bytes.Equal(got, want) {
				n := 0
				for n < len(got) && n < len(want) && got[n] == want[n] {
					n++
				}
				t.Fatalf("rewritten file differs at byte %d (sizes %d, %d)", n, len(got), len(want))
			}
		})
	}
}

func TestFileLookupErrors(t *testing.T) {
	f, err := Open(filepath.Join(fixtures, "mixtral_bf16", ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	const name = "model.norm.weight"
	if _, err := f.F32(name); !errors.Is(err, ErrDType) {
		t.Errorf("F32 of a BF16 tensor: %v", err)
	}
	if _, err := f.Bytes("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Bytes of a missing tensor: %v", err)
	}
	if _, ok := f.Info("nope"); ok {
		t.Error("Info of a missing tensor succeeded")
	}
	if _, err := f.U16("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("U16 of a missing tensor: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := f.U16(name); !errors.Is(err, ErrClosed) {
		t.Errorf("U16 after Close: %v", err)
	}

	g, err := Open(filepath.Join(fixtures, "mixtral_f32", ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.U16(name); !errors.Is(err, ErrDType) {
		t.Errorf("U16 of an F32 tensor: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "missing.safetensors")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Open(dir); err == nil {
		t.Error("opening a directory succeeded")
	}
	// A file cut short anywhere must be rejected.
	full, err := os.ReadFile(filepath.Join(fixtures, "train_tiny", ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 7, 8, 100, 4536, 4537, len(full) / 2, len(full) - 1} {
		p := filepath.Join(dir, fmt.Sprintf("cut%d.safetensors", n))
		if err := os.WriteFile(p, full[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		if f, err := Open(p); !errors.Is(err, ErrTruncated) {
			if f != nil {
				f.Close()
			}
			t.Errorf("file cut to %d bytes: %v, want ErrTruncated", n, err)
		}
	}
}

// TestMisalignedViews builds a file whose header is not padded, so the data
// buffer starts at an odd address: F32 and U16 must fall back to copies
// with the right values, while aligned data must come back zero-copy.
func TestMisalignedViews(t *testing.T) {
	vals := []float32{1.5, -2, 3.25}
	hdr := `{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[12,16]}}`
	if (8+len(hdr))%2 == 0 {
		hdr += " "
	}
	file := rawFile(hdr, 0)
	for _, v := range vals {
		file = binary.LittleEndian.AppendUint32(file, math.Float32bits(v))
	}
	file = binary.LittleEndian.AppendUint16(file, 0x3f80)
	file = binary.LittleEndian.AppendUint16(file, 0xc000)
	path := filepath.Join(t.TempDir(), "odd.safetensors")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := f.F32("a")
	if err != nil || !slices.Equal(got, vals) {
		t.Fatalf("F32 = %v, %v; want %v", got, err, vals)
	}
	raw, _ := f.Bytes("a")
	if unsafe.Pointer(&got[0]) == unsafe.Pointer(&raw[0]) {
		t.Error("misaligned F32 returned a view")
	}
	h, err := f.U16("b")
	if err != nil || !slices.Equal(h, []uint16{0x3f80, 0xc000}) {
		t.Fatalf("U16 = %#04x, %v", h, err)
	}

	aligned, err := Open(filepath.Join(fixtures, "mixtral_f32", ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer aligned.Close()
	v, _ := aligned.F32("model.norm.weight")
	rawv, _ := aligned.Bytes("model.norm.weight")
	if nativeLittle && unsafe.Pointer(&v[0]) != unsafe.Pointer(&rawv[0]) {
		t.Error("aligned F32 was copied, want a view")
	}
}
