package tokenizer

import "strings"

// BPE is a byte-pair-encoding tokenizer read from a Hugging Face
// tokenizer.json by Load or Parse: byte-level BPE (GPT-2, Llama-3, Qwen2,
// OLMoE) or SentencePiece-style BPE with byte fallback (Llama-2, Mistral,
// Mixtral). It runs HF's pipeline:
//
//  1. added tokens that match the raw text are cut out (leftmost-longest);
//  2. each remaining piece is normalized, and added tokens marked
//     "normalized" are cut out of the result;
//  3. the pre-tokenizer splits pieces into words;
//  4. the BPE model turns each word into ids;
//  5. EncodeSpecial adds the post-processor's ids around the text.
//
// A BPE is immutable after loading and safe for concurrent use.
type BPE struct {
	model model
	norm  normalizer   // nil: none
	pre   preTokenizer // nil: each piece is one word
	detok detokenizer  // nil: tokens are joined with spaces

	rawAdded  *addedMatcher // added tokens matched before normalization
	normAdded *addedMatcher // added tokens matched after it
	added     map[string]*addedToken

	tokens  []string // id -> token string (added tokens' matched form)
	known   []bool   // id -> has a token
	special []bool   // id -> special added token

	prefix, suffix []int32 // post-processor ids around a single sequence
	eos            []int32
}

var _ Tokenizer = (*BPE)(nil)

// Encode implements Tokenizer.
func (t *BPE) Encode(text string) []int32 { return t.encode(nil, text) }

// EncodeSpecial implements Tokenizer.
func (t *BPE) EncodeSpecial(text string) []int32 {
	ids := append([]int32(nil), t.prefix...)
	ids = t.encode(ids, text)
	return append(ids, t.suffix...)
}

// encode appends the ids of text to dst.
func (t *BPE) encode(dst []int32, text string) []int32 {
	text = validUTF8(text)
	var words []word
	for _, raw := range t.rawAdded.split(nil, text) {
		if raw.tok != nil {
			dst = append(dst, raw.tok.id)
			continue
		}
		s := text[raw.start:raw.end]
		if s == "" {
			continue
		}
		if t.norm != nil {
			s = t.norm.normalize(s)
		}
		for _, seg := range t.normAdded.split(nil, s) {
			if seg.tok != nil {
				dst = append(dst, seg.tok.id)
				continue
			}
			if seg.end == seg.start {
				continue
			}
			w := word{text: s[seg.start:seg.end], first: raw.start == 0 && seg.start == 0}
			words = words[:0]
			if t.pre != nil {
				words = t.pre.split(words, w)
			} else {
				words = append(words, w)
			}
			for _, w := range words {
				dst = t.model.tokenize(dst, w.text)
			}
		}
	}
	return dst
}

// Decode implements Tokenizer: token strings go through the tokenizer's
// decoder (byte-level mapping, "▁" to space, byte fallback, ...).
func (t *BPE) Decode(ids []int32) string {
	toks := make([]string, 0, len(ids))
	for _, id := range ids {
		if id >= 0 && int(id) < len(t.known) && t.known[id] {
			toks = append(toks, t.tokens[id])
		}
	}
	if t.detok == nil {
		return validUTF8(strings.Join(toks, " "))
	}
	return strings.Join(t.detok.decode(toks), "")
}

// VocabSize implements Tokenizer.
func (t *BPE) VocabSize() int { return len(t.tokens) }

// BOS implements Tokenizer: the first id the post-processor puts before the
// text.
func (t *BPE) BOS() (int32, bool) {
	if len(t.prefix) == 0 {
		return 0, false
	}
	return t.prefix[0], true
}

// EOS implements Tokenizer: the eos_token of a tokenizer_config.json beside
// the file (Load only), the ids the post-processor puts after the text, and
// the special tokens with a well-known end-of-text or end-of-turn name
// ("</s>", "<|endoftext|>", "<|eot_id|>", "<|im_end|>", ...).
func (t *BPE) EOS() []int32 { return append([]int32(nil), t.eos...) }

// IsSpecial implements Tokenizer.
func (t *BPE) IsSpecial(id int32) bool {
	return id >= 0 && int(id) < len(t.special) && t.special[id]
}

// ID returns the id of a token string as it appears in the vocabulary
// ("Ġthe", "▁the", "<|im_start|>"); added tokens are looked up first.
func (t *BPE) ID(token string) (int32, bool) {
	if a, ok := t.added[token]; ok {
		return a.id, true
	}
	id, ok := t.model.vocab[token]
	return id, ok
}

// Token returns the vocabulary string of id, before any decoding.
func (t *BPE) Token(id int32) (string, bool) {
	if id < 0 || int(id) >= len(t.known) || !t.known[id] {
		return "", false
	}
	return t.tokens[id], true
}
