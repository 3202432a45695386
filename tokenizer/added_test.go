package tokenizer

import (
	"slices"
	"testing"
)

// withAdded returns the gpt2 fixture with more added tokens, given as
// (id, content, options) where options are HF's flags.
func withAdded(t *testing.T, toks ...map[string]any) *BPE {
	t.Helper()
	data := edit(t, "gpt2", func(f map[string]any) {
		list := f["added_tokens"].([]any)
		for _, tok := range toks {
			list = append(list, tok)
		}
		f["added_tokens"] = list
	})
	tok, err := parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func addedJSON(id int, content string, special bool, opts ...string) map[string]any {
	m := map[string]any{"id": id, "content": content, "special": special,
		"normalized": false, "lstrip": false, "rstrip": false, "single_word": false}
	for _, o := range opts {
		m[o] = true
	}
	return m
}

func TestAddedTokens(t *testing.T) {
	tok := withAdded(t,
		addedJSON(282, "<mask>", true, "lstrip"),
		addedJSON(283, "<r>", true, "rstrip"),
		addedJSON(284, "cat", false, "single_word"),
		addedJSON(285, "[A]", true),
		addedJSON(286, "[A][B]", true),
		addedJSON(287, "hello", false), // also in the vocabulary: keeps 259
	)
	cases := []struct {
		name    string
		text    string
		ids     []int32
		decoded string // "" means text
	}{
		// lstrip: the match takes the spaces before it; " world" stays.
		{"lstrip", "hello  <mask> world", ints(259, 282, 264), "hello<mask> world"},
		{"lstrip at start", "  <mask>", ints(282), "<mask>"},
		// rstrip: the match takes the spaces after it.
		{"rstrip", "a<r>  b", ints(97, 283, 98), "a<r>b"},
		// single_word: not inside "concat", but before "." (not \w).
		{"single word", "cat concat cat.", ints(284, 32, 99, 111, 110, 99, 97, 116, 32, 284, 46), ""},
		{"single word inside a word", "cats", ints(99, 97, 116, 115), ""},
		// Leftmost-longest: "[A][B]" beats "[A]" at the same start.
		{"longest match", "[A][B][A]x", ints(286, 285, 120), ""},
		{"vocabulary id kept", "say hello", ints(115, 97, 121, 32, 259), ""},
		{"adjacent specials", "<|endoftext|><|endoftext|>", ints(281, 281), ""},
		{"special only", "<|endoftext|>", ints(281), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := tok.Encode(c.text); !slices.Equal(got, c.ids) {
				t.Errorf("Encode(%q) = %v, want %v", c.text, got, c.ids)
			}
			want := c.decoded
			if want == "" {
				want = c.text
			}
			if got := tok.Decode(c.ids); got != want {
				t.Errorf("Decode(%v) = %q, want %q", c.ids, got, want)
			}
		})
	}
	if !tok.IsSpecial(282) || tok.IsSpecial(284) || tok.IsSpecial(259) {
		t.Error("special flags wrong")
	}
}

func TestAddedTokenNormalized(t *testing.T) {
	// A normalized added token is matched after normalization, against its
	// own normalized form: with the SentencePiece normalizer "hi there"
	// becomes "▁hi▁there", found in "▁say▁hi▁there" only because the
	// space was replaced too. Decode gives back the normalized form, as
	// HF does (the decoder turns its ▁ into spaces).
	data := edit(t, "llama2", func(f map[string]any) {
		f["added_tokens"] = append(f["added_tokens"].([]any),
			map[string]any{"id": 291, "content": "hi there", "special": false, "normalized": true,
				"lstrip": false, "rstrip": false, "single_word": false})
	})
	tok, err := parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := tok.Token(291); got != "▁hi▁there" {
		t.Errorf("Token(291) = %q", got)
	}
	// "say hi there" -> "▁say▁hi▁there": the token takes "▁hi▁there";
	// "▁say" is ▁ s a y with y by byte fallback (3+0x79 = 124).
	got := tok.Encode("say hi there")
	if want := ints(259, 272, 267, 124, 291); !slices.Equal(got, want) {
		t.Errorf("Encode = %v, want %v", got, want)
	}
	if d := tok.Decode(got); d != "say hi there" {
		t.Errorf("Decode = %q", d)
	}
}

func TestMatcherSplit(t *testing.T) {
	toks := []*addedToken{
		{id: 1, match: "ab"},
		{id: 2, match: "abc"},
		{id: 3, match: "b"},
	}
	m := newAddedMatcher(toks)
	var got []string
	for _, s := range m.split(nil, "xabcab bx") {
		name := "xabcab bx"[s.start:s.end]
		if s.tok != nil {
			name = "<" + name + ">"
		}
		got = append(got, name)
	}
	want := []string{"x", "<abc>", "<ab>", " ", "<b>", "x"}
	if !slices.Equal(got, want) {
		t.Errorf("split = %q, want %q", got, want)
	}
	if segs := (*addedMatcher)(nil).split(nil, "abc"); len(segs) != 1 || segs[0].end != 3 {
		t.Errorf("nil matcher: %v", segs)
	}
}
