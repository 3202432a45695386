package tokenizer

import "errors"

// Tokenizer turns text into token ids and back. It is the seam between the
// inference engine and a model's vocabulary: Byte and the tokenizers that
// Load builds implement it. Implementations are safe for concurrent use.
type Tokenizer interface {
	// Encode splits text into ids without adding anything around it. Added
	// and special tokens written in the text ("<|im_start|>", "</s>") are
	// recognised and become their single ids. The caller owns the slice.
	Encode(text string) []int32
	// EncodeSpecial is Encode plus the ids the tokenizer's post-processor
	// puts around a single sequence (e.g. BOS before the text), what HF
	// `encode(text, add_special_tokens=True)` returns.
	EncodeSpecial(text string) []int32
	// Decode turns ids back into text, special tokens included (filter
	// them with IsSpecial to skip them). Ids outside the vocabulary are
	// dropped. The result is always valid UTF-8: byte sequences that do not
	// form characters become U+FFFD.
	Decode(ids []int32) string
	// VocabSize is one more than the largest id the tokenizer can produce;
	// some ids below it may be unused.
	VocabSize() int
	// BOS is the id EncodeSpecial puts first, before the text; ok is false
	// when it adds none.
	BOS() (id int32, ok bool)
	// EOS lists the ids that end a generated sequence, most important
	// first; it may be empty. The caller owns the slice.
	EOS() []int32
	// IsSpecial reports whether id is a special token (control tokens such
	// as BOS, EOS or chat-turn markers, as opposed to text).
	IsSpecial(id int32) bool
}

// Sentinel errors. Every error returned by this package wraps one of them,
// or an *fs.PathError from reading a file, so callers can test with
// errors.Is while the message keeps the details.
var (
	// ErrFormat: tokenizer.json is malformed or inconsistent (bad JSON,
	// missing vocab, merges naming unknown tokens, ids out of range, ...).
	ErrFormat = errors.New("tokenizer: invalid tokenizer.json")
	// ErrUnsupported: the file is well formed but uses a model, normalizer,
	// pre-tokenizer, post-processor, decoder or option this package does not
	// implement (e.g. a WordPiece or Unigram model).
	ErrUnsupported = errors.New("tokenizer: unsupported")
	// ErrConfig: a tokenizer was configured inconsistently (e.g. a Byte BOS
	// that is not one of its special tokens).
	ErrConfig = errors.New("tokenizer: invalid configuration")
)

// maxID bounds the ids a tokenizer.json may use: 2^21 is 8x the largest
// vocabularies in use (~256k), and keeps the dense id -> token table of an
// untrusted file small.
const maxID = 1 << 21
