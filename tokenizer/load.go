package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// File names of a Hugging Face model directory.
const (
	// FileName is the tokenizer file Load reads from a directory.
	FileName = "tokenizer.json"
	// ConfigFileName is the transformers tokenizer config Load reads, when
	// present beside the tokenizer file, for its eos_token.
	ConfigFileName = "tokenizer_config.json"
)

// maxDepth bounds the nesting of Sequence components: real files nest one
// level; untrusted ones must not recurse without limit.
const maxDepth = 16

// wellKnownEOS are names that end a generated sequence or turn in common
// vocabularies; the special tokens among them join EOS.
var wellKnownEOS = []string{
	"</s>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "<|eom_id|>",
	"<|im_end|>", "<|end|>", "<eos>", "<end_of_turn>",
}

// Load reads a Hugging Face tokenizer.json with a BPE model: path is the
// file or a directory holding FileName. If a tokenizer_config.json sits
// beside it, its eos_token comes first in EOS. The result is a *BPE, whose
// ID and Token methods look up vocabulary strings.
func Load(path string) (Tokenizer, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, FileName)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	t, err := parse(data)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer %s: %w", path, err)
	}
	cfgPath := filepath.Join(filepath.Dir(path), ConfigFileName)
	cfg, err := os.ReadFile(cfgPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("load tokenizer: %w", err)
	default:
		if err := t.applyConfig(cfg); err != nil {
			return nil, fmt.Errorf("load tokenizer %s: %w", cfgPath, err)
		}
	}
	return t, nil
}

// Parse builds a tokenizer from the contents of a tokenizer.json. The input
// is untrusted: Parse returns an error wrapping ErrFormat or ErrUnsupported
// for anything it cannot use, and never panics.
func Parse(data []byte) (Tokenizer, error) {
	t, err := parse(data)
	if err != nil {
		return nil, err
	}
	return t, nil
}

type fileJSON struct {
	Version       *string          `json:"version"`
	AddedTokens   []addedTokenJSON `json:"added_tokens"`
	Normalizer    json.RawMessage  `json:"normalizer"`
	PreTokenizer  json.RawMessage  `json:"pre_tokenizer"`
	PostProcessor json.RawMessage  `json:"post_processor"`
	Decoder       json.RawMessage  `json:"decoder"`
	Model         json.RawMessage  `json:"model"`
}

type addedTokenJSON struct {
	ID         int64  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized *bool  `json:"normalized"`
	Special    bool   `json:"special"`
}

type modelJSON struct {
	Type                    string           `json:"type"`
	Dropout                 *float64         `json:"dropout"`
	UnkToken                *string          `json:"unk_token"`
	ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string          `json:"end_of_word_suffix"`
	FuseUnk                 *bool            `json:"fuse_unk"`
	ByteFallback            *bool            `json:"byte_fallback"`
	IgnoreMerges            *bool            `json:"ignore_merges"`
	Vocab                   map[string]int64 `json:"vocab"`
	Merges                  json.RawMessage  `json:"merges"`
}

func parse(data []byte) (*BPE, error) {
	var f fileJSON
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFormat, err)
	}
	if f.Version != nil && *f.Version != "1.0" {
		return nil, fmt.Errorf("%w: tokenizer.json version %q (want 1.0)", ErrUnsupported, *f.Version)
	}
	t := &BPE{}
	if err := t.parseModel(f.Model); err != nil {
		return nil, err
	}
	var err error
	if t.norm, err = parseNormalizer(f.Normalizer, 0); err != nil {
		return nil, err
	}
	if t.pre, err = parsePreTokenizer(f.PreTokenizer, 0); err != nil {
		return nil, err
	}
	if t.detok, err = parseDetokenizer(f.Decoder, 0); err != nil {
		return nil, err
	}
	post, err := parsePostProcessor(f.PostProcessor, 0)
	if err != nil {
		return nil, err
	}
	t.prefix, t.suffix = post.prefix, post.suffix
	if err := t.addTokens(f.AddedTokens); err != nil {
		return nil, err
	}
	t.eos = append(t.eos, t.suffix...)
	for _, name := range wellKnownEOS {
		if a, ok := t.added[name]; ok && a.special && !slices.Contains(t.eos, a.id) {
			t.eos = append(t.eos, a.id)
		}
	}
	return t, nil
}

// parseModel reads the BPE model and fills the id -> token table.
func (t *BPE) parseModel(raw json.RawMessage) error {
	if isNull(raw) {
		return fmt.Errorf("%w: no model", ErrFormat)
	}
	var j modelJSON
	if err := json.Unmarshal(raw, &j); err != nil {
		return fmt.Errorf("%w: model: %v", ErrFormat, err)
	}
	switch {
	case j.Type == "BPE":
	case j.Type == "" && !isNull(j.Merges): // legacy files without a type
	case j.Type == "":
		return fmt.Errorf("%w: model without type", ErrFormat)
	default:
		return fmt.Errorf("%w: model type %q (only BPE)", ErrUnsupported, j.Type)
	}
	if j.Dropout != nil && *j.Dropout != 0 {
		return fmt.Errorf("%w: BPE dropout %g (a training-time option)", ErrUnsupported, *j.Dropout)
	}
	if j.Vocab == nil || isNull(j.Merges) {
		return fmt.Errorf("%w: BPE model without vocab or merges", ErrFormat)
	}
	m := &t.model
	m.vocab = make(map[string]int32, len(j.Vocab))
	maxTok := int64(-1)
	for tok, id := range j.Vocab {
		if id < 0 || id >= maxID {
			return fmt.Errorf("%w: vocab %q: id %d out of range [0, %d)", ErrFormat, tok, id, maxID)
		}
		m.vocab[tok] = int32(id)
		maxTok = max(maxTok, id)
	}
	t.tokens = make([]string, maxTok+1)
	t.known = make([]bool, maxTok+1)
	// Several strings with one id: keep the smallest, so decoding does not
	// depend on map order.
	for tok, id := range m.vocab {
		if !t.known[id] || tok < t.tokens[id] {
			t.tokens[id], t.known[id] = tok, true
		}
	}

	m.unk = -1
	if j.UnkToken != nil {
		if id, ok := m.vocab[*j.UnkToken]; ok {
			m.unk = id
		}
	}
	m.fuseUnk = j.FuseUnk != nil && *j.FuseUnk
	m.byteFallback = j.ByteFallback != nil && *j.ByteFallback
	m.ignoreMerges = j.IgnoreMerges != nil && *j.IgnoreMerges
	if j.ContinuingSubwordPrefix != nil {
		m.prefix = *j.ContinuingSubwordPrefix
	}
	if j.EndOfWordSuffix != nil {
		m.suffix = *j.EndOfWordSuffix
	}
	for b := range m.byteIDs {
		m.byteIDs[b] = -1
		if id, ok := m.vocab[fmt.Sprintf("<0x%02X>", b)]; ok {
			m.byteIDs[b] = id
		}
	}

	pairs, err := parseMerges(j.Merges)
	if err != nil {
		return err
	}
	m.merges = make(map[uint64]merge, len(pairs))
	for rank, p := range pairs {
		a, okA := m.vocab[p[0]]
		b, okB := m.vocab[p[1]]
		if !okA || !okB {
			return fmt.Errorf("%w: merge %d (%q %q): token not in vocab", ErrFormat, rank, p[0], p[1])
		}
		merged := p[0] + strings.TrimPrefix(p[1], m.prefix)
		id, ok := m.vocab[merged]
		if !ok {
			return fmt.Errorf("%w: merge %d (%q %q): result %q not in vocab", ErrFormat, rank, p[0], p[1], merged)
		}
		m.merges[pairKey(a, b)] = merge{rank: int32(rank), id: id}
	}
	return nil
}

// parseMerges reads merges as ["a b", ...] (the older format, with an
// optional "#version" line) or [["a", "b"], ...].
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	var lines []string
	if err := json.Unmarshal(raw, &lines); err == nil {
		pairs := make([][2]string, 0, len(lines))
		for _, l := range lines {
			if strings.HasPrefix(l, "#version") {
				continue
			}
			a, b, ok := strings.Cut(l, " ")
			if !ok || strings.Contains(b, " ") {
				return nil, fmt.Errorf("%w: merge %d %q is not two tokens separated by a space", ErrFormat, len(pairs), l)
			}
			pairs = append(pairs, [2]string{a, b})
		}
		return pairs, nil
	}
	var lists [][]string
	if err := json.Unmarshal(raw, &lists); err != nil {
		return nil, fmt.Errorf("%w: merges are neither strings nor pairs: %v", ErrFormat, err)
	}
	pairs := make([][2]string, len(lists))
	for i, l := range lists {
		if len(l) != 2 {
			return nil, fmt.Errorf("%w: merge %d has %d tokens, want 2", ErrFormat, i, len(l))
		}
		pairs[i] = [2]string{l[0], l[1]}
	}
	return pairs, nil
}

// addTokens registers added_tokens as HF does: a token already in the
// vocabulary keeps its vocabulary id, others take the id the file gives; a
// later entry with the same content replaces the earlier one's options.
func (t *BPE) addTokens(list []addedTokenJSON) error {
	t.added = make(map[string]*addedToken)
	var order []*addedToken
	for i, j := range list {
		if j.Content == "" {
			continue
		}
		id, ok := t.model.vocab[j.Content]
		if !ok {
			if j.ID < 0 || j.ID >= maxID {
				return fmt.Errorf("%w: added_tokens[%d] %q: id %d out of range [0, %d)", ErrFormat, i, j.Content, j.ID, maxID)
			}
			id = int32(j.ID)
		}
		a := &addedToken{
			id: id, content: j.Content, match: j.Content, special: j.Special,
			singleWord: j.SingleWord, lstrip: j.LStrip, rstrip: j.RStrip,
			normalized: !j.Special, // HF's default when the field is absent
		}
		if j.Normalized != nil {
			a.normalized = *j.Normalized
		}
		if a.normalized && t.norm != nil {
			a.match = t.norm.normalize(a.content)
		}
		if old, ok := t.added[a.content]; ok {
			*old = *a
			continue
		}
		t.added[a.content] = a
		order = append(order, a)
	}

	// Size the id tables to every id in use, the post-processor's too.
	n := len(t.tokens)
	for _, a := range order {
		n = max(n, int(a.id)+1)
	}
	for _, id := range slices.Concat(t.prefix, t.suffix) {
		n = max(n, int(id)+1)
	}
	t.tokens = slices.Grow(t.tokens, n-len(t.tokens))[:n]
	t.known = slices.Grow(t.known, n-len(t.known))[:n]
	t.special = make([]bool, n)
	var raw, normed []*addedToken
	for _, a := range order {
		t.tokens[a.id], t.known[a.id] = a.match, true
		t.special[a.id] = a.special
		if a.normalized {
			normed = append(normed, a)
		} else {
			raw = append(raw, a)
		}
	}
	t.rawAdded = newAddedMatcher(raw)
	t.normAdded = newAddedMatcher(normed)
	return nil
}

// applyConfig puts the eos_token of a tokenizer_config.json first in EOS.
func (t *BPE) applyConfig(data []byte) error {
	var cfg struct {
		EOS json.RawMessage `json:"eos_token"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return fmt.Errorf("%w: %v", ErrFormat, err)
	}
	name, err := tokenName(cfg.EOS)
	if err != nil {
		return fmt.Errorf("%w: eos_token: %v", ErrFormat, err)
	}
	if id, ok := t.ID(name); ok && name != "" {
		t.eos = slices.DeleteFunc(t.eos, func(x int32) bool { return x == id })
		t.eos = slices.Insert(t.eos, 0, id)
	}
	return nil
}

// tokenName reads a token given as "</s>", {"content": "</s>", ...} or null.
func tokenName(raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var obj struct {
		Content string `json:"content"`
	}
	err := json.Unmarshal(raw, &obj)
	return obj.Content, err
}

// component is the "type" of a normalizer, pre-tokenizer or decoder.
type component struct {
	Type string `json:"type"`
}

// typeOf returns the type of a component; "" for null or absent.
func typeOf(raw json.RawMessage, what string) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrFormat, what, err)
	}
	if c.Type == "" {
		return "", fmt.Errorf("%w: %s without type", ErrFormat, what)
	}
	return c.Type, nil
}

func isNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

// decodeComponent unmarshals a component's fields.
func decodeComponent(raw json.RawMessage, what, typ string, v any) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrFormat, what, typ, err)
	}
	return nil
}

// parseSequence parses the component list under key of a "Sequence"
// normalizer, pre-tokenizer or decoder, each element with parse one level
// deeper; elements that parse to nil (no-op components) are dropped.
func parseSequence[T any](raw json.RawMessage, what, key string, depth int, parse func(json.RawMessage, int) (T, error)) ([]T, error) {
	var fields map[string]json.RawMessage
	if err := decodeComponent(raw, what, "Sequence", &fields); err != nil {
		return nil, err
	}
	var list []json.RawMessage
	if r, ok := fields[key]; ok {
		if err := decodeComponent(r, what, "Sequence", &list); err != nil {
			return nil, err
		}
	}
	var out []T
	for i, sub := range list {
		v, err := parse(sub, depth+1)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", key, i, err)
		}
		if any(v) != nil {
			out = append(out, v)
		}
	}
	return out, nil
}
