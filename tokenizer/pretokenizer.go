package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// word is a piece of text on its way to the model.
type word struct {
	text string
	// first: the piece starts at the beginning of the input text (what
	// Metaspace's prepend_scheme "first" looks at).
	first bool
}

// preTokenizer splits text into the pieces the model tokenizes one by one
// (HF's pre-tokenizers); merges never cross a piece boundary.
type preTokenizer interface {
	// split appends the non-empty pieces of w to dst.
	split(dst []word, w word) []word
}

// splitWord splits w at the spans p finds, keeping pieces as b says.
func splitWord(dst []word, w word, p pattern, b behavior) []word {
	for _, s := range applyBehavior(p.find(nil, w.text), b) {
		if s.end > s.start {
			dst = append(dst, word{w.text[s.start:s.end], w.first && s.start == 0})
		}
	}
	return dst
}

// gpt2Split is the pattern of the ByteLevel pre-tokenizer (GPT-2's):
// contractions, letters, digits and other runs each with at most one leading
// space, and whitespace where `\s+(?!\S)` leaves the last space of a run to
// the word after it.
const gpt2Split = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

var gpt2Regex = func() regexPattern {
	p, err := compileRegex(gpt2Split)
	if err != nil {
		panic(err) // a constant pattern: a bug if it does not compile
	}
	return p
}()

// byteLevelPre optionally puts a space before each piece, optionally splits
// it with the GPT-2 pattern, then maps every byte to its GPT-2 character.
type byteLevelPre struct {
	addPrefixSpace bool
	useRegex       bool
}

func (p byteLevelPre) split(dst []word, w word) []word {
	if p.addPrefixSpace && !strings.HasPrefix(w.text, " ") {
		w.text = " " + w.text
	}
	n := len(dst)
	if p.useRegex {
		dst = splitWord(dst, w, gpt2Regex, isolated)
	} else if w.text != "" {
		dst = append(dst, w)
	}
	for i := n; i < len(dst); i++ {
		dst[i].text = string(appendByteLevel(make([]byte, 0, 2*len(dst[i].text)), dst[i].text))
	}
	return dst
}

// prependScheme says when Metaspace puts the replacement before a piece.
type prependScheme int

const (
	prependAlways prependScheme = iota
	prependFirst                // only before the piece at the start of the text
	prependNever
)

// metaspacePre replaces spaces with the replacement ("▁"), prepends one as
// the scheme says, and optionally splits before each replacement.
type metaspacePre struct {
	repl   string
	scheme prependScheme
	splits bool
}

func (p metaspacePre) split(dst []word, w word) []word {
	w.text = strings.ReplaceAll(w.text, " ", p.repl)
	if !strings.HasPrefix(w.text, p.repl) &&
		(p.scheme == prependAlways || p.scheme == prependFirst && w.first) {
		w.text = p.repl + w.text
	}
	if !p.splits {
		if w.text != "" {
			dst = append(dst, w)
		}
		return dst
	}
	return splitWord(dst, w, literalRune(p.repl), mergedWithNext)
}

// literalRune matches each occurrence of the single character r.
func literalRune(r string) runePattern {
	c := []rune(r)[0]
	return func(x rune) bool { return x == c }
}

// splitPre is the Split pre-tokenizer: a pattern and a behavior.
type splitPre struct {
	pat pattern
	b   behavior
}

func (p splitPre) split(dst []word, w word) []word { return splitWord(dst, w, p.pat, p.b) }

// digitsPre isolates digits, each one or runs of them.
type digitsPre struct{ individual bool }

func (p digitsPre) split(dst []word, w word) []word {
	if p.individual {
		return splitWord(dst, w, runePattern(unicode.IsNumber), isolated)
	}
	return splitWord(dst, w, runePattern(unicode.IsNumber), contiguous)
}

// whitespacePre keeps the matches of `\w+|[^\w\s]+`: runs of word
// characters and runs of other non-space characters.
type whitespacePre struct{}

func (whitespacePre) split(dst []word, w word) []word {
	const (
		space = iota
		wordChar
		other
	)
	class := func(r rune) int {
		switch {
		case isWordChar(r):
			return wordChar
		case unicode.IsSpace(r):
			return space
		}
		return other
	}
	start, cur := 0, space
	for i, r := range w.text {
		c := class(r)
		if c == cur {
			continue
		}
		if cur != space && i > start {
			dst = append(dst, word{w.text[start:i], w.first && start == 0})
		}
		start, cur = i, c
	}
	if cur != space && len(w.text) > start {
		dst = append(dst, word{w.text[start:], w.first && start == 0})
	}
	return dst
}

// isWordChar is Rust regex's Unicode \w: Alphabetic, marks, decimal digits,
// connector punctuation and join controls.
func isWordChar(r rune) bool {
	return unicode.IsLetter(r) || unicode.In(r, unicode.Other_Alphabetic, unicode.Nl,
		unicode.M, unicode.Nd, unicode.Pc, unicode.Join_Control)
}

// isPunct is Rust's is_ascii_punctuation || is_punctuation (category P).
func isPunct(r rune) bool {
	if r < 0x80 {
		return unicode.IsPunct(r) || unicode.IsSymbol(r)
	}
	return unicode.IsPunct(r)
}

// bertPre splits on whitespace (removed) and isolates punctuation.
type bertPre struct{}

func (bertPre) split(dst []word, w word) []word {
	for _, x := range splitWord(nil, w, runePattern(unicode.IsSpace), removed) {
		dst = splitWord(dst, x, runePattern(isPunct), isolated)
	}
	return dst
}

// preTokenizers applies several pre-tokenizers in order, each to every piece
// the previous one produced.
type preTokenizers []preTokenizer

func (ps preTokenizers) split(dst []word, w word) []word {
	cur := []word{w}
	var next []word
	for _, p := range ps {
		next = next[:0]
		for _, x := range cur {
			next = p.split(next, x)
		}
		cur, next = next, cur
	}
	return append(dst, cur...)
}

// metaspaceJSON holds the fields of Metaspace, a pre-tokenizer and decoder.
type metaspaceJSON struct {
	Replacement    string  `json:"replacement"`
	AddPrefixSpace *bool   `json:"add_prefix_space"`
	PrependScheme  *string `json:"prepend_scheme"`
	Split          *bool   `json:"split"`
}

// parse returns the replacement, prepend scheme and split flag. As in HF, an
// absent prepend_scheme means "always" unless add_prefix_space is false.
func (j metaspaceJSON) parse() (string, prependScheme, bool, error) {
	if utf8.RuneCountInString(j.Replacement) != 1 {
		return "", 0, false, fmt.Errorf("%w: Metaspace replacement %q is not one character", ErrFormat, j.Replacement)
	}
	scheme := prependAlways
	if j.PrependScheme != nil {
		switch *j.PrependScheme {
		case "always":
		case "first":
			scheme = prependFirst
		case "never":
			scheme = prependNever
		default:
			return "", 0, false, fmt.Errorf("%w: Metaspace prepend_scheme %q", ErrFormat, *j.PrependScheme)
		}
	}
	if j.AddPrefixSpace != nil && !*j.AddPrefixSpace {
		if j.PrependScheme != nil && scheme != prependNever {
			return "", 0, false, fmt.Errorf("%w: Metaspace add_prefix_space false but prepend_scheme %q", ErrFormat, *j.PrependScheme)
		}
		scheme = prependNever
	}
	return j.Replacement, scheme, j.Split == nil || *j.Split, nil
}

func parsePreTokenizer(raw json.RawMessage, depth int) (preTokenizer, error) {
	const what = "pre_tokenizer"
	typ, err := typeOf(raw, what)
	if err != nil || typ == "" {
		return nil, err
	}
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: %s nested deeper than %d", ErrFormat, what, maxDepth)
	}
	switch typ {
	case "ByteLevel":
		var j struct {
			AddPrefixSpace *bool `json:"add_prefix_space"`
			UseRegex       *bool `json:"use_regex"`
		}
		if err := decodeComponent(raw, what, typ, &j); err != nil {
			return nil, err
		}
		return byteLevelPre{
			addPrefixSpace: j.AddPrefixSpace == nil || *j.AddPrefixSpace,
			useRegex:       j.UseRegex == nil || *j.UseRegex,
		}, nil
	case "Split":
		var j struct {
			Pattern  patternJSON `json:"pattern"`
			Behavior string      `json:"behavior"`
			Invert   bool        `json:"invert"`
		}
		if err := decodeComponent(raw, what, typ, &j); err != nil {
			return nil, err
		}
		p, err := j.Pattern.compile()
		if err != nil {
			return nil, fmt.Errorf("%s Split: %w", what, err)
		}
		b, ok := behaviorNames[j.Behavior]
		if !ok {
			return nil, fmt.Errorf("%w: %s Split behavior %q", ErrFormat, what, j.Behavior)
		}
		if j.Invert {
			p = invertPattern{p}
		}
		return splitPre{p, b}, nil
	case "Metaspace":
		var j metaspaceJSON
		if err := decodeComponent(raw, what, typ, &j); err != nil {
			return nil, err
		}
		repl, scheme, split, err := j.parse()
		if err != nil {
			return nil, err
		}
		return metaspacePre{repl: repl, scheme: scheme, splits: split}, nil
	case "Digits":
		var j struct {
			Individual bool `json:"individual_digits"`
		}
		if err := decodeComponent(raw, what, typ, &j); err != nil {
			return nil, err
		}
		return digitsPre{j.Individual}, nil
	case "Whitespace":
		return whitespacePre{}, nil
	case "WhitespaceSplit":
		return splitPre{runePattern(unicode.IsSpace), removed}, nil
	case "BertPreTokenizer":
		return bertPre{}, nil
	case "Punctuation":
		var j struct {
			Behavior *string `json:"behavior"`
		}
		if err := decodeComponent(raw, what, typ, &j); err != nil {
			return nil, err
		}
		b := isolated
		if j.Behavior != nil {
			var ok bool
			if b, ok = behaviorNames[*j.Behavior]; !ok {
				return nil, fmt.Errorf("%w: %s Punctuation behavior %q", ErrFormat, what, *j.Behavior)
			}
		}
		return splitPre{runePattern(isPunct), b}, nil
	case "CharDelimiterSplit":
		var j struct {
			Delimiter string `json:"delimiter"`
		}
		if err := decodeComponent(raw, what, typ, &j); err != nil {
			return nil, err
		}
		if utf8.RuneCountInString(j.Delimiter) != 1 {
			return nil, fmt.Errorf("%w: %s CharDelimiterSplit delimiter %q is not one character", ErrFormat, what, j.Delimiter)
		}
		return splitPre{literalRune(j.Delimiter), removed}, nil
	case "Sequence":
		list, err := parseSequence(raw, what, "pretokenizers", depth, parsePreTokenizer)
		if err != nil {
			return nil, err
		}
		return preTokenizers(list), nil
	}
	// UnicodeScripts, FixedLength, ...
	return nil, fmt.Errorf("%w: pre_tokenizer type %q", ErrUnsupported, typ)
}
