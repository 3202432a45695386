package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// normalizer rewrites text before pre-tokenization (HF's normalizers). Input
// and output are valid UTF-8.
type normalizer interface {
	normalize(s string) string
}

// unicodeNorm is NFC, NFD, NFKC or NFKD.
type unicodeNorm struct{ form norm.Form }

func (n unicodeNorm) normalize(s string) string { return n.form.String(s) }

// lowercase maps each character to its lowercase form. Rust's
// char::to_lowercase, which HF uses, differs from unicode.ToLower only for
// U+0130 (capital I with dot above), which becomes "i\u0307".
type lowercase struct{}

func (lowercase) normalize(s string) string {
	return strings.Map(unicode.ToLower, strings.ReplaceAll(s, "\u0130", "i\u0307"))
}

// strip removes whitespace from the left and/or right end.
type strip struct{ left, right bool }

func (n strip) normalize(s string) string {
	if n.left {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
	}
	if n.right {
		s = strings.TrimRightFunc(s, unicode.IsSpace)
	}
	return s
}

// stripAccents removes combining marks (general category M), meant to follow
// NFD or NFKD.
type stripAccents struct{}

func (stripAccents) normalize(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.Is(unicode.M, r) {
			return -1
		}
		return r
	}, s)
}

// replace replaces every match of a pattern with a fixed string (no group
// references, as in HF).
type replace struct {
	pat     pattern
	content string
}

func (n replace) normalize(s string) string { return replaceAll(n.pat, s, n.content) }

// replaceAll replaces the matches of p in s with content.
func replaceAll(p pattern, s, content string) string {
	spans := p.find(nil, s)
	if len(spans) == 1 && !spans[0].match {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, sp := range spans {
		if sp.match {
			b.WriteString(content)
		} else {
			b.WriteString(s[sp.start:sp.end])
		}
	}
	return b.String()
}

// prepend puts a string before any non-empty text (Llama/Mistral's "▁").
type prepend string

func (n prepend) normalize(s string) string {
	if s == "" {
		return s
	}
	return string(n) + s
}

// byteLevelNorm maps every byte to its GPT-2 character (the ByteLevel
// normalizer, an alternative to the ByteLevel pre-tokenizer).
type byteLevelNorm struct{}

func (byteLevelNorm) normalize(s string) string {
	return string(appendByteLevel(make([]byte, 0, 2*len(s)), s))
}

// normalizers applies several normalizers in order.
type normalizers []normalizer

func (ns normalizers) normalize(s string) string {
	for _, n := range ns {
		s = n.normalize(s)
	}
	return s
}

func parseNormalizer(raw json.RawMessage, depth int) (normalizer, error) {
	const what = "normalizer"
	typ, err := typeOf(raw, what)
	if err != nil || typ == "" {
		return nil, err
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: %s nested deeper than %d", ErrFormat, what, maxDepth)
	}
	switch typ {
	case "NFC":
		return unicodeNorm{norm.NFC}, nil
	case "NFD":
		return unicodeNorm{norm.NFD}, nil
	case "NFKC":
		return unicodeNorm{norm.NFKC}, nil
	case "NFKD":
		return unicodeNorm{norm.NFKD}, nil
	case "Lowercase":
		return lowercase{}, nil
	case "StripAccents":
		return stripAccents{}, nil
	case "ByteLevel":
		return byteLevelNorm{}, nil
	case "Strip":
		var j struct {
			Left  bool `json:"strip_left"`
			Right bool `json:"strip_right"`
		}
		if err := decodeComponent(raw, what, typ, &j); err != nil {
			return nil, err
		}
		return strip{j.Left, j.Right}, nil
	case "Prepend":
		var j struct {
			Prepend string `json:"prepend"`
		}
		if err := decodeComponent(raw, what, typ, &j); err != nil {
			return nil, err
		}
		return prepend(j.Prepend), nil
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
		return replace{p, j.Content}, nil
	case "Sequence":
		list, err := parseSequence(raw, what, "normalizers", depth, parseNormalizer)
		if err != nil {
			return nil, err
		}
		return normalizers(list), nil
	}
	// BertNormalizer, Precompiled (SentencePiece's charsmap), Nmt, ...
	return nil, fmt.Errorf("%w: normalizer type %q", ErrUnsupported, typ)
}
