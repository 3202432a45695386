package tokenizer

import (
	"fmt"
	"slices"
)

// ByteVocab is the number of byte ids: id b < ByteVocab is the byte b.
const ByteVocab = 256

// Byte is the byte-level tokenizer of moesys' own models: id b < 256 is the
// byte b, so any text, valid UTF-8 or not, encodes losslessly. Special
// tokens, if configured, take ids 256, 257, .... The zero value has none and
// is ready to use.
type Byte struct {
	specials []string
	matcher  *addedMatcher
	bos      int32
	hasBOS   bool
	eos      []int32
}

// ByteConfig configures the special tokens of a Byte tokenizer.
type ByteConfig struct {
	// Specials get ids 256, 257, ... in order. Encode finds them in text
	// (leftmost-longest) and Decode writes them back. They must be distinct
	// and non-empty.
	Specials []string
	// BOS, if not empty, is one of Specials; EncodeSpecial puts it first.
	BOS string
	// EOS are members of Specials that end a sequence.
	EOS []string
}

// NewByte returns a Byte tokenizer with the given special tokens.
func NewByte(c ByteConfig) (*Byte, error) {
	t := &Byte{specials: slices.Clone(c.Specials)}
	index := make(map[string]int32, len(c.Specials))
	toks := make([]*addedToken, len(c.Specials))
	for i, s := range c.Specials {
		if s == "" {
			return nil, fmt.Errorf("%w: byte special token %d is empty", ErrConfig, i)
		}
		if _, dup := index[s]; dup {
			return nil, fmt.Errorf("%w: byte special token %q given twice", ErrConfig, s)
		}
		id := int32(ByteVocab + i)
		index[s] = id
		toks[i] = &addedToken{id: id, content: s, match: s, special: true}
	}
	t.matcher = newAddedMatcher(toks)
	if c.BOS != "" {
		id, ok := index[c.BOS]
		if !ok {
			return nil, fmt.Errorf("%w: byte BOS %q is not a special token", ErrConfig, c.BOS)
		}
		t.bos, t.hasBOS = id, true
	}
	for _, s := range c.EOS {
		id, ok := index[s]
		if !ok {
			return nil, fmt.Errorf("%w: byte EOS %q is not a special token", ErrConfig, s)
		}
		t.eos = append(t.eos, id)
	}
	return t, nil
}

var _ Tokenizer = (*Byte)(nil)

// Encode implements Tokenizer: one id per byte, special tokens as theirs.
func (t *Byte) Encode(text string) []int32 { return t.encode(make([]int32, 0, len(text)), text) }

// EncodeSpecial implements Tokenizer: BOS, if configured, then Encode.
func (t *Byte) EncodeSpecial(text string) []int32 {
	ids := make([]int32, 0, len(text)+1)
	if t.hasBOS {
		ids = append(ids, t.bos)
	}
	return t.encode(ids, text)
}

func (t *Byte) encode(dst []int32, text string) []int32 {
	for _, seg := range t.matcher.split(nil, text) {
		if seg.tok != nil {
			dst = append(dst, seg.tok.id)
			continue
		}
		for i := seg.start; i < seg.end; i++ {
			dst = append(dst, int32(text[i]))
		}
	}
	return dst
}

// Decode implements Tokenizer.
func (t *Byte) Decode(ids []int32) string {
	b := make([]byte, 0, len(ids))
	for _, id := range ids {
		switch {
		case id >= 0 && id < ByteVocab:
			b = append(b, byte(id))
		case id >= ByteVocab && int(id-ByteVocab) < len(t.specials):
			b = append(b, t.specials[id-ByteVocab]...)
		}
	}
	return validUTF8(string(b))
}

// VocabSize implements Tokenizer: 256 plus the special tokens.
func (t *Byte) VocabSize() int { return ByteVocab + len(t.specials) }

// BOS implements Tokenizer.
func (t *Byte) BOS() (int32, bool) { return t.bos, t.hasBOS }

// EOS implements Tokenizer.
func (t *Byte) EOS() []int32 { return slices.Clone(t.eos) }

// IsSpecial implements Tokenizer: the configured special tokens.
func (t *Byte) IsSpecial(id int32) bool {
	return id >= ByteVocab && int(id-ByteVocab) < len(t.specials)
}
