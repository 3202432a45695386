package tokenizer

import (
	"errors"
	"slices"
	"testing"

	"golang.org/x/text/unicode/norm"
)

// llama3Split is the Llama-3 / Qwen2 pre-tokenizer pattern (Qwen2 has \p{N}
// where Llama-3 has \p{N}{1,3}).
const llama3Split = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// pieces returns the texts p splits s into.
func pieces(p preTokenizer, s string) []string {
	var out []string
	for _, w := range p.split(nil, word{text: s, first: true}) {
		out = append(out, w.text)
	}
	return out
}

func TestRegexSplit(t *testing.T) {
	llama3, err := compileRegex(llama3Split)
	if err != nil {
		t.Fatal(err)
	}
	gpt2 := splitPre{gpt2Regex, isolated}
	l3 := splitPre{llama3, isolated}
	cases := []struct {
		name string
		pre  preTokenizer
		text string
		want []string
	}{
		// \s+(?!\S) stops one space short of a word: that space starts it.
		{"gpt2 multiple spaces", gpt2, "Hello   world", []string{"Hello", "  ", " world"}},
		{"gpt2 trailing spaces", gpt2, "Hello  ", []string{"Hello", "  "}},
		{"gpt2 newlines", gpt2, "a\n\nb", []string{"a", "\n", "\n", "b"}},
		{"gpt2 contractions", gpt2, "I'm don't", []string{"I", "'m", " don", "'t"}},
		{"gpt2 uppercase contraction", gpt2, "I'M", []string{"I", "'", "M"}},
		{"gpt2 numbers", gpt2, "2024 is 1234567", []string{"2024", " is", " 1234567"}},
		{"gpt2 punctuation", gpt2, "hi!!! ok?", []string{"hi", "!!!", " ok", "?"}},
		{"gpt2 non-ASCII", gpt2, "héllo 世界 🙂", []string{"héllo", " 世界", " 🙂"}},
		// NBSP is \s but not the ' ' that ` ?\p{L}+` takes.
		{"gpt2 no-break space", gpt2, "a\u00a0b", []string{"a", "\u00a0", "b"}},

		{"llama3 multiple spaces", l3, "Hello   world", []string{"Hello", "  ", " world"}},
		{"llama3 digits by three", l3, "1234567", []string{"123", "456", "7"}},
		{"llama3 digits after a word", l3, "x 12345", []string{"x", " ", "123", "45"}},
		{"llama3 case-insensitive contraction", l3, "I'M don'T", []string{"I", "'M", " don", "'T"}},
		{"llama3 one non-letter joins a word", l3, "hello,world", []string{"hello", ",world"}},
		// \s*[\r\n]+ takes the newlines; the spaces then split as usual.
		{"llama3 newlines", l3, "a\n\n  b", []string{"a", "\n\n", " ", " b"}},
		{"llama3 symbols take newlines", l3, " 🙂\n\nx", []string{" 🙂\n\n", "x"}},
		{"llama3 CJK", l3, "héllo 世界", []string{"héllo", " 世界"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := pieces(c.pre, c.text); !slices.Equal(got, c.want) {
				t.Errorf("split(%q) = %q, want %q", c.text, got, c.want)
			}
		})
	}
}

func TestPreTokenizers(t *testing.T) {
	cases := []struct {
		name string
		pre  preTokenizer
		text string
		want []string
	}{
		{"byte-level maps bytes", byteLevelPre{useRegex: true}, "hi there\n", []string{"hi", "Ġthere", "Ċ"}},
		{"byte-level prefix space", byteLevelPre{addPrefixSpace: true, useRegex: true}, "hi", []string{"Ġhi"}},
		{"byte-level no regex", byteLevelPre{}, "a b é", []string{"aĠbĠÃ©"}},
		{"metaspace always", metaspacePre{repl: "▁", scheme: prependAlways, splits: true}, "a  b", []string{"▁a", "▁", "▁b"}},
		{"metaspace never", metaspacePre{repl: "▁", scheme: prependNever, splits: true}, "a b", []string{"a", "▁b"}},
		{"metaspace no split", metaspacePre{repl: "▁", scheme: prependFirst}, "a b", []string{"▁a▁b"}},
		{"digits individual", digitsPre{individual: true}, "a12b", []string{"a", "1", "2", "b"}},
		{"digits contiguous", digitsPre{}, "a12b", []string{"a", "12", "b"}},
		{"whitespace", whitespacePre{}, "Hey, you! ok", []string{"Hey", ",", "you", "!", "ok"}},
		{"bert", bertPre{}, "Hey, you!", []string{"Hey", ",", "you", "!"}},
		{"sequence", preTokenizers{digitsPre{true}, byteLevelPre{}}, "a12", []string{"a", "1", "2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := pieces(c.pre, c.text); !slices.Equal(got, c.want) {
				t.Errorf("split(%q) = %q, want %q", c.text, got, c.want)
			}
		})
	}
}

func TestMetaspaceFirst(t *testing.T) {
	// prepend_scheme "first" prepends only to the piece that starts the text.
	p := metaspacePre{repl: "▁", scheme: prependFirst, splits: true}
	if got := p.split(nil, word{text: "hi", first: false}); got[0].text != "hi" {
		t.Errorf("not first: %q", got[0].text)
	}
	if got := p.split(nil, word{text: "hi", first: true}); got[0].text != "▁hi" {
		t.Errorf("first: %q", got[0].text)
	}
}

func TestBehaviors(t *testing.T) {
	// The example of HF's SplitDelimiterBehavior docs.
	const text = "the-final--countdown"
	cases := []struct {
		b    behavior
		want []string
	}{
		{removed, []string{"the", "final", "countdown"}},
		{isolated, []string{"the", "-", "final", "-", "-", "countdown"}},
		{mergedWithPrevious, []string{"the-", "final-", "-", "countdown"}},
		{mergedWithNext, []string{"the", "-final", "-", "-countdown"}},
		{contiguous, []string{"the", "-", "final", "--", "countdown"}},
	}
	for _, c := range cases {
		got := pieces(splitPre{literalPattern("-"), c.b}, text)
		if !slices.Equal(got, c.want) {
			t.Errorf("behavior %d: %q, want %q", c.b, got, c.want)
		}
		got = pieces(splitPre{runePattern(func(r rune) bool { return r == '-' }), c.b}, text)
		if !slices.Equal(got, c.want) {
			t.Errorf("behavior %d (rune): %q, want %q", c.b, got, c.want)
		}
	}
	// invert: the matches are what is kept apart.
	got := pieces(splitPre{invertPattern{literalPattern("-")}, removed}, text)
	if want := []string{"-", "-", "-"}; !slices.Equal(got, want) {
		t.Errorf("inverted: %q, want %q", got, want)
	}
}

func TestNormalizers(t *testing.T) {
	re, err := compileRegex(`\s+`)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		n    normalizer
		in   string
		want string
	}{
		{"NFC", unicodeNorm{norm.NFC}, "e\u0301", "é"},
		{"NFKC", unicodeNorm{norm.NFKC}, "ﬁ①", "fi1"},
		{"lowercase", lowercase{}, "HÉLLO Σ İ", "héllo σ i\u0307"},
		{"strip", strip{true, true}, "  hi \n", "hi"},
		{"strip left", strip{left: true}, "  hi ", "hi "},
		{"strip accents", normalizers{mustNorm(t, "NFD"), stripAccents{}}, "café", "cafe"},
		{"replace literal", replace{literalPattern(" "), "▁"}, "a b  c", "a▁b▁▁c"},
		{"replace regex", replace{re, " "}, "a \t b\n\nc", "a b c"},
		{"replace empty", replace{literalPattern(""), "-"}, "ab", "-a-b-"},
		{"prepend", prepend("▁"), "a", "▁a"},
		{"prepend empty", prepend("▁"), "", ""},
		{"byte-level", byteLevelNorm{}, "a b", "aĠb"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.n.normalize(c.in); got != c.want {
				t.Errorf("normalize(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
}

func mustNorm(t *testing.T, typ string) normalizer {
	t.Helper()
	n, err := parseNormalizer([]byte(`{"type":"`+typ+`"}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRegexCompile(t *testing.T) {
	// Patterns of real tokenizer.json files compile; Oniguruma-only syntax
	// that regexp2 lacks (possessive quantifiers) is a clear error.
	for _, ok := range []string{
		gpt2Split,
		llama3Split,
		`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,                                                           // Qwen2
		`[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`, // o200k-style
		`\p{N}{1,3}`, `[一-龥぀-ゟ゠-ヿ]+`,
	} {
		if _, err := compileRegex(ok); err != nil {
			t.Errorf("compile %q: %v", ok, err)
		}
	}
	for _, bad := range []string{`[^\r\n\p{L}\p{N}]?+\p{L}+`, `a++`, `(`} {
		if _, err := compileRegex(bad); !errors.Is(err, ErrUnsupported) {
			t.Errorf("compile %q: err = %v, want ErrUnsupported", bad, err)
		}
	}
}
