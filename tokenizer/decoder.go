package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// maxPendingIDs bounds how many ids a Decoder holds back while their text
// ends in U+FFFD: a character is at most 4 bytes, so a longer run that still
// ends in one is invalid bytes, not a character split across tokens, and is
// emitted as U+FFFD rather than held (and re-decoded) forever.
const maxPendingIDs = 16

// Decoder turns a stream of ids, one at a time, into text as it becomes
// complete, for streaming generation. Byte-level and byte-fallback tokens can
// split a UTF-8 character across ids; Push holds such ids back until the
// character is complete, so what it returns is always valid UTF-8 and never
// breaks a character. The concatenation of everything Push and Flush return
// equals Decode of all ids (less skipped specials), except where more than
// maxPendingIDs ids in a row end inside a character: those are let out
// early, as U+FFFD.
//
// It keeps the ids of the last emitted chunk as context and returns
// Decode(context+new) minus Decode(context), the way HF's DecodeStream does,
// so decoders that treat the first token specially (SentencePiece's leading
// space) stream correctly. A Decoder is not safe for concurrent use.
type Decoder struct {
	tok         Tokenizer
	skipSpecial bool
	ids         []int32 // context ids, then pending ones
	ctx         int     // how many of ids are context (already emitted)
	prefix      string  // Decode(ids[:ctx])
}

// NewDecoder returns a Decoder over tok. With skipSpecial, special tokens
// produce no text.
func NewDecoder(tok Tokenizer, skipSpecial bool) *Decoder {
	return &Decoder{tok: tok, skipSpecial: skipSpecial}
}

// Push adds the next id and returns the text that became complete: "" while
// id only starts a character, or decodes to nothing.
func (d *Decoder) Push(id int32) string {
	if d.skipSpecial && d.tok.IsSpecial(id) {
		return ""
	}
	d.ids = append(d.ids, id)
	s := d.tok.Decode(d.ids)
	if len(s) <= len(d.prefix) {
		return ""
	}
	if strings.HasSuffix(s, replacement) && len(d.ids)-d.ctx < maxPendingIDs {
		return "" // perhaps the start of a character the next ids complete
	}
	return d.emit(s)
}

// Flush returns the text of the ids still held back (invalid bytes become
// U+FFFD) and resets the Decoder for a new sequence.
func (d *Decoder) Flush() string {
	var out string
	if len(d.ids) > d.ctx {
		if s := d.tok.Decode(d.ids); len(s) > len(d.prefix) {
			out = d.emit(s)
		}
	}
	d.Reset()
	return out
}

// Reset forgets all ids, for a new sequence.
func (d *Decoder) Reset() {
	d.ids, d.ctx, d.prefix = d.ids[:0], 0, ""
}

// emit returns the part of s, the decoding of all ids, after the context's
// text, and makes the ids just emitted the new context.
func (d *Decoder) emit(s string) string {
	k := len(d.prefix)
	if !strings.HasPrefix(s, d.prefix) {
		// The decoder rewrote earlier text (not seen with HF's decoders on
		// valid streams). Text already returned cannot be taken back: go on
		// from the same length, at a character boundary.
		for k < len(s) && !utf8.RuneStart(s[k]) {
			k++
		}
	}
	out := s[k:]
	d.ids = append(d.ids[:0], d.ids[d.ctx:]...)
	d.ctx = len(d.ids)
	d.prefix = d.tok.Decode(d.ids)
	return out
}
