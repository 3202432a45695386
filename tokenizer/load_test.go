package tokenizer

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadErrors(t *testing.T) {
	set := func(path string, v any) func(map[string]any) {
		return func(f map[string]any) {
			keys := strings.Split(path, ".")
			m := f
			for _, k := range keys[:len(keys)-1] {
				m = m[k].(map[string]any)
			}
			m[keys[len(keys)-1]] = v
		}
	}
	typed := func(typ string) map[string]any { return map[string]any{"type": typ} }
	cases := []struct {
		name    string
		fixture string
		edit    func(map[string]any)
		err     error
		msg     string // part of the message
	}{
		{"WordPiece model", "gpt2", set("model.type", "WordPiece"), ErrUnsupported, `"WordPiece"`},
		{"Unigram model", "gpt2", set("model.type", "Unigram"), ErrUnsupported, `"Unigram"`},
		{"no model", "gpt2", set("model", nil), ErrFormat, "no model"},
		{"Precompiled normalizer", "llama2", set("normalizer", typed("Precompiled")), ErrUnsupported, `"Precompiled"`},
		{"nested unsupported normalizer", "llama2", set("normalizer.normalizers", []any{typed("BertNormalizer")}), ErrUnsupported, `"BertNormalizer"`},
		{"UnicodeScripts pre-tokenizer", "gpt2", set("pre_tokenizer", typed("UnicodeScripts")), ErrUnsupported, `"UnicodeScripts"`},
		{"WordPiece decoder", "gpt2", set("decoder", typed("WordPiece")), ErrUnsupported, `"WordPiece"`},
		{"unknown post-processor", "gpt2", set("post_processor", typed("Magic")), ErrUnsupported, `"Magic"`},
		{"component without type", "gpt2", set("decoder", map[string]any{}), ErrFormat, "without type"},
		{"bad regex", "llama3", set("pre_tokenizer.pretokenizers", []any{map[string]any{
			"type": "Split", "pattern": map[string]any{"Regex": "(?<"}, "behavior": "Isolated", "invert": false}}),
			ErrUnsupported, "regex"},
		{"bad behavior", "llama3", set("pre_tokenizer.pretokenizers", []any{map[string]any{
			"type": "Split", "pattern": map[string]any{"String": " "}, "behavior": "Sideways", "invert": false}}),
			ErrFormat, "Sideways"},
		{"merge of unknown token", "gpt2", set("model.merges", []any{"q z"}), ErrFormat, "not in vocab"},
		{"merge result unknown", "gpt2", set("model.merges", []any{"x y"}), ErrFormat, `"xy" not in vocab`},
		{"merge not a pair", "gpt2", set("model.merges", []any{"a b c"}), ErrFormat, "two tokens"},
		{"merge pair of three", "llama3", set("model.merges", []any{[]any{"a", "b", "c"}}), ErrFormat, "3 tokens"},
		{"merges neither form", "gpt2", set("model.merges", 7), ErrFormat, "merges"},
		{"no merges", "gpt2", set("model.merges", nil), ErrFormat, "vocab or merges"},
		{"negative id", "gpt2", set("model.vocab", map[string]any{"a": -1}), ErrFormat, "out of range"},
		{"huge id", "gpt2", set("model.vocab", map[string]any{"a": 1 << 40}), ErrFormat, "out of range"},
		{"dropout", "gpt2", set("model.dropout", 0.1), ErrUnsupported, "dropout"},
		{"version", "gpt2", set("version", "2.0"), ErrUnsupported, "version"},
		{"metaspace replacement", "metaspace", set("pre_tokenizer.replacement", "ab"), ErrFormat, "replacement"},
		{"metaspace scheme", "metaspace", set("pre_tokenizer.prepend_scheme", "sometimes"), ErrFormat, "sometimes"},
		{"template special missing", "llama2", set("post_processor.special_tokens", map[string]any{}), ErrFormat, `"<s>"`},
		{"added token id", "llama3", set("added_tokens", []any{map[string]any{"id": -5, "content": "<x>"}}), ErrFormat, "out of range"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(edit(t, c.fixture, c.edit))
			if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("err = %v, want %v containing %s", err, c.err, c.msg)
			}
		})
	}
	for _, bad := range []string{"", "{", "[]", `{"model": []}`, `{"model": {"type": "BPE", "vocab": {}, "merges": []}, "added_tokens": 3}`} {
		if _, err := Parse([]byte(bad)); !errors.Is(err, ErrFormat) {
			t.Errorf("Parse(%q) err = %v, want ErrFormat", bad, err)
		}
	}
}

func TestLoad(t *testing.T) {
	for _, f := range fixtures {
		if _, err := Load(fixturePath(f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}

	// A model directory: tokenizer.json, and tokenizer_config.json whose
	// eos_token (<|im_end|> = 290, as in chat fine-tunes) comes first.
	dir := t.TempDir()
	data, err := os.ReadFile(fixturePath("llama2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), data, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := `{"bos_token": "<s>", "eos_token": {"content": "<|im_end|>", "special": true}}`
	if err := os.WriteFile(filepath.Join(dir, ConfigFileName), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.EOS(); !slices.Equal(got, ints(290, 2)) {
		t.Errorf("EOS = %v, want [290 2]", got)
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigFileName), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); !errors.Is(err, ErrFormat) {
		t.Errorf("bad config: err = %v", err)
	}
}

func TestLegacyForms(t *testing.T) {
	// Older files: a model without "type", merges with a "#version" line,
	// Metaspace with add_prefix_space instead of prepend_scheme, template
	// pieces as strings.
	data := edit(t, "metaspace", func(f map[string]any) {
		m := f["model"].(map[string]any)
		delete(m, "type")
		m["merges"] = append([]any{"#version: 0.2"}, m["merges"].([]any)...)
		f["pre_tokenizer"] = map[string]any{"type": "Metaspace", "replacement": "▁", "add_prefix_space": true}
		f["decoder"] = map[string]any{"type": "Metaspace", "replacement": "▁", "add_prefix_space": true}
		pp := f["post_processor"].(map[string]any)
		pp["single"] = []any{"<s>:0", "$A:0"}
	})
	tok, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.EncodeSpecial("hello world"); !slices.Equal(got, ints(1, 279, 284)) {
		t.Errorf("EncodeSpecial = %v", got)
	}
}
