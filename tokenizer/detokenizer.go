package tokenizer

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// detokenizer turns token strings back into text pieces (HF's decoders);
// Decode joins what the last one returns. Input and output are valid UTF-8.
type detokenizer interface {
	decode(tokens []string) []string
}

// byteLevelDetok maps GPT-2 characters back to bytes and all tokens to one
// string, invalid UTF-8 repaired.
type byteLevelDetok struct{}

func (byteLevelDetok) decode(tokens []string) []string {
	var b []byte
	for _, t := range tokens {
		b = byteLevelBytes(b, t)
	}
	return []string{validUTF8(string(b))}
}

// metaspaceDetok turns the replacement back into spaces, except in the first
// token, where HF drops every replacement unless prepend_scheme is "never".
type metaspaceDetok struct {
	repl         rune
	prependNever bool
}

func (d metaspaceDetok) decode(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		drop := i == 0 && !d.prependNever
		out[i] = strings.Map(func(r rune) rune {
			switch {
			case r != d.repl:
				return r
			case drop:
				return -1
			}
			return ' '
		}, t)
	}
	return out
}

// replaceDetok replaces a pattern in each token.
type replaceDetok struct {
	pat     pattern
	content string
}

func (d replaceDetok) decode(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		out[i] = replaceAll(d.pat, t, d.content)
	}
	return out
}

// byteFallbackDetok turns runs of "<0xXX>" tokens into the text their bytes
// spell; a run that is not valid UTF-8 becomes one U+FFFD per byte.
type byteFallbackDetok struct{}

func (byteFallbackDetok) decode(tokens []string) []string {
	out := make([]string, 0, len(tokens))
	var run []byte
	flush := func() {
		if len(run) == 0 {
			return
		}
		if utf8.Valid(run) {
			out = append(out, string(run))
		} else {
			out = append(out, strings.Repeat(replacement, len(run)))
		}
		run = run[:0]
	}
	for _, t := range tokens {
		if b, ok := byteToken(t); ok {
			run = append(run, b)
			continue
		}
		flush()
		out = append(out, t)
	}
	flush()
	return out
}

// byteToken parses "<0xXX>".
func byteToken(t string) (byte, bool) {
	if len(t) != 6 || !strings.HasPrefix(t, "<0x") || t[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(t[3:5], 16, 8)
	return byte(v), err == nil
}

// fuseDetok joins all tokens into one.
type fuseDetok struct{}

func (fuseDetok) decode(tokens []string) []string {
	return []string{strings.Join(tokens, "")}
}

// stripDetok removes up to start leading and stop trailing copies of a
// character from each token (after Fuse: from the text).
type stripDetok struct {
	content     rune
	start, stop int
}

func (d stripDetok) decode(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		for k := 0; k < d.start; k++ {
			r, n := utf8.DecodeRuneInString(t)
			if n == 0 || r != d.content {
				break
			}
			t = t[n:]
		}
		for k := 0; k < d.stop; k++ {
			r, n := utf8.DecodeLastRuneInString(t)
			if n == 0 || r != d.content {
				break
			}
			t = t[:len(t)-n]
		}
		out[i] = t
	}
	return out
}

// bpeDetok replaces the end-of-word suffix with a space, or nothing in the
// last token.
type bpeDetok struct{ suffix string }

func (d bpeDetok) decode(tokens []string) []string {
	out := make([]string, len(tokens))
	for i, t := range tokens {
		sep := " "
		if i == len(tokens)-1 {
			sep = ""
		}
		out[i] = strings.ReplaceAll(t, d.suffix, sep)
	}
	return out
}

// detokenizers applies several detokenizers in order.
type detokenizers []detokenizer

func (ds detokenizers) decode(tokens []string) []string {
	for _, d := range ds {
		tokens = d.decode(tokens)
	}
	return tokens
}

func parseDetokenizer(raw json.RawMessage, depth int) (detokenizer, error) {
	const what = "decoder"
	typ, err := typeOf(raw, what)
	if err != nil || typ == "" {
		return nil, err
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: %s nested deeper than %d", ErrFormat, what, maxDepth)
	}
	switch typ {
	case "ByteLevel":
		return byteLevelDetok{}, nil
	case "ByteFallback":
		return byteFallbackDetok{}, nil
	case "Fuse":
		return fuseDetok{}, nil
	case "Metaspace":
		var j metaspaceJSON
		if err := decodeComponent(raw, what, typ, &j); err != nil {
			return nil, err
		}
		repl, scheme, _, err := j.parse()
		if err != nil {
			return nil, err
		}
		r, _ := utf8.DecodeRuneInString(repl)
		return metaspaceDetok{repl: r, prependNever: scheme == prependNever}, nil
	case "Replace":
		var j struct {
			Pattern patternJSON `json:"pattern"`
			Content string      `json:"content"`
		}
		if err := decodeComponent(raw, what, typ, &j); err != nil {
			return nil, err
		}
		p, err := j.Pattern.compile()
		if err != nil {
			return nil, fmt.Errorf("%s Replace: %w", what, err)
		}
		return replaceDetok{p, j.Content}, nil
	case "Strip":
		var j struct {
			Content string `json:"content"`
			Start   int    `json:"start"`
			Stop    int    `json:"stop"`
		}
		if err := decodeComponent(raw, what, typ, &j); err != nil {
			return nil, err
		}
		if utf8.RuneCountInString(j.Content) != 1 {
			return nil, fmt.Errorf("%w: %s Strip content %q is not one character", ErrFormat, what, j.Content)
		}
		r, _ := utf8.DecodeRuneInString(j.Content)
		return stripDetok{content: r, start: j.Start, stop: j.Stop}, nil
	case "BPEDecoder":
		var j struct {
			Suffix *string `json:"suffix"`
		}
		if err := decodeComponent(raw, what, typ, &j); err != nil {
			return nil, err
		}
		d := bpeDetok{suffix: "</w>"}
		if j.Suffix != nil {
			d.suffix = *j.Suffix
		}
		return d, nil
	case "Sequence":
		list, err := parseSequence(raw, what, "decoders", depth, parseDetokenizer)
		if err != nil {
			return nil, err
		}
		return detokenizers(list), nil
	}
	// WordPiece, CTC, ...
	return nil, fmt.Errorf("%w: decoder type %q", ErrUnsupported, typ)
}
