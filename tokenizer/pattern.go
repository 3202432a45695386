package tokenizer

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/dlclark/regexp2"
)

// span is a byte range [start, end) of a string and whether a pattern
// matched it.
type span struct {
	start, end int
	match      bool
}

// pattern finds what a Split pre-tokenizer or a Replace normalizer/decoder
// looks for. find appends spans that tile s in order: matches, and the gaps
// between them as non-matches (HF's Pattern::find_matches). For an empty s
// it appends the one empty non-match.
type pattern interface {
	find(dst []span, s string) []span
}

// regexPattern is a regular expression in the syntax HF uses (Oniguruma),
// run by regexp2, a backtracking engine with the lookaround (`\s+(?!\S)`),
// Unicode classes (`\p{L}`) and scoped flags (`(?i:'s)`) the pre-tokenizer
// patterns need. Matching is leftmost-first, as in Oniguruma.
type regexPattern struct {
	re *regexp2.Regexp
}

// compileRegex compiles an HF regex pattern. Patterns come from untrusted
// files: a panic inside the regex parser is returned as an error.
func compileRegex(expr string) (p regexPattern, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = regexPattern{}, fmt.Errorf("%w: regex %q: %v", ErrUnsupported, expr, r)
		}
	}()
	re, err := regexp2.Compile(expr, regexp2.None)
	if err != nil {
		return regexPattern{}, fmt.Errorf("%w: regex %q: %v", ErrUnsupported, expr, err)
	}
	return regexPattern{re}, nil
}

func (p regexPattern) find(dst []span, s string) []span {
	if s == "" {
		return append(dst, span{})
	}
	// regexp2 works on runes; off maps rune index -> byte offset.
	runes := make([]rune, 0, len(s))
	off := make([]int, 0, len(s)+1)
	for i, r := range s {
		runes = append(runes, r)
		off = append(off, i)
	}
	off = append(off, len(s))

	prev := 0
	// regexp2 returns an error only for a timeout, and none is set.
	m, _ := p.re.FindRunesMatch(runes)
	for m != nil {
		start, end := off[m.Index], off[m.Index+m.Length]
		if start != prev {
			dst = append(dst, span{prev, start, false})
		}
		dst = append(dst, span{start, end, true})
		prev = end
		m, _ = p.re.FindNextMatch(m)
	}
	if prev != len(s) {
		dst = append(dst, span{prev, len(s), false})
	}
	return dst
}

// literalPattern matches a fixed string, leftmost and non-overlapping (HF
// escapes it into a regex). The empty string matches the empty string at
// every character boundary, as the empty regex does.
type literalPattern string

func (p literalPattern) find(dst []span, s string) []span {
	if s == "" {
		return append(dst, span{})
	}
	prev := 0
	if p == "" {
		for i := 0; i <= len(s); {
			if i != prev {
				dst = append(dst, span{prev, i, false})
			}
			dst = append(dst, span{i, i, true})
			prev = i
			if i == len(s) {
				break
			}
			_, n := utf8.DecodeRuneInString(s[i:])
			i += n
		}
		return dst
	}
	for i := 0; ; {
		k := strings.Index(s[i:], string(p))
		if k < 0 {
			break
		}
		start := i + k
		end := start + len(p)
		if start != prev {
			dst = append(dst, span{prev, start, false})
		}
		dst = append(dst, span{start, end, true})
		prev, i = end, end
	}
	if prev != len(s) {
		dst = append(dst, span{prev, len(s), false})
	}
	return dst
}

// runePattern matches single characters; each matching character is its own
// match.
type runePattern func(rune) bool

func (p runePattern) find(dst []span, s string) []span {
	if s == "" {
		return append(dst, span{})
	}
	prev := 0
	for i, r := range s {
		if p(r) {
			if i != prev {
				dst = append(dst, span{prev, i, false})
			}
			end := i + utf8.RuneLen(r)
			dst = append(dst, span{i, end, true})
			prev = end
		}
	}
	if prev != len(s) {
		dst = append(dst, span{prev, len(s), false})
	}
	return dst
}

// invertPattern swaps matches and non-matches (Split's "invert").
type invertPattern struct{ p pattern }

func (p invertPattern) find(dst []span, s string) []span {
	n := len(dst)
	dst = p.p.find(dst, s)
	for i := n; i < len(dst); i++ {
		dst[i].match = !dst[i].match
	}
	return dst
}

// behavior says what a split does with the matched delimiters (HF's
// SplitDelimiterBehavior). For "the-final--countdown" split on '-':
//
//	removed            the | final | countdown
//	isolated           the | - | final | - | - | countdown
//	mergedWithPrevious the- | final- | - | countdown
//	mergedWithNext     the | -final | - | -countdown
//	contiguous         the | - | final | -- | countdown
type behavior int

const (
	removed behavior = iota
	isolated
	mergedWithPrevious
	mergedWithNext
	contiguous
)

var behaviorNames = map[string]behavior{
	"Removed":            removed,
	"Isolated":           isolated,
	"MergedWithPrevious": mergedWithPrevious,
	"MergedWithNext":     mergedWithNext,
	"Contiguous":         contiguous,
}

// applyBehavior turns the spans find produced into the byte ranges to keep,
// in order. It may reuse spans' storage.
func applyBehavior(spans []span, b behavior) []span {
	out := spans[:0]
	switch b {
	case removed:
		for _, s := range spans {
			if !s.match {
				out = append(out, s)
			}
		}
	case isolated:
		out = spans
	case contiguous:
		prevMatch := false
		for i, s := range spans {
			if i > 0 && s.match == prevMatch {
				out[len(out)-1].end = s.end
			} else {
				out = append(out, s)
			}
			prevMatch = s.match
		}
	case mergedWithPrevious:
		prevMatch := false
		for i, s := range spans {
			if i > 0 && s.match && !prevMatch {
				out[len(out)-1].end = s.end
			} else {
				out = append(out, s)
			}
			prevMatch = s.match
		}
	case mergedWithNext:
		// HF folds from the end: a match glues onto the non-match after it.
		rev := make([]span, 0, len(spans))
		prevMatch := false
		for i := len(spans) - 1; i >= 0; i-- {
			s := spans[i]
			if len(rev) > 0 && s.match && !prevMatch {
				rev[len(rev)-1].start = s.start
			} else {
				rev = append(rev, s)
			}
			prevMatch = s.match
		}
		for i := len(rev) - 1; i >= 0; i-- {
			out = append(out, rev[i])
		}
	}
	return out
}

// patternJSON is {"String": "..."} or {"Regex": "..."}.
type patternJSON struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

func (p patternJSON) compile() (pattern, error) {
	switch {
	case p.String != nil:
		return literalPattern(*p.String), nil
	case p.Regex != nil:
		return compileRegex(*p.Regex)
	}
	return nil, fmt.Errorf("%w: pattern is neither String nor Regex", ErrFormat)
}
