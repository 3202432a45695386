package tokenizer

import (
	"slices"
	"testing"
)

// encodeCase is one encoding, worked out by hand from the fixture tables in
// helpers_test.go, and what decoding it gives back.
type encodeCase struct {
	name string
	text string
	ids  []int32
	// decoded is Decode(ids); "" means text itself (a round trip).
	decoded string
}

func runEncodeCases(t *testing.T, fixture string, cases []encodeCase) {
	t.Helper()
	tok := load(t, fixture)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := tok.Encode(c.text)
			if !slices.Equal(got, c.ids) {
				t.Errorf("Encode(%q) = %v, want %v", c.text, got, c.ids)
			}
			want := c.decoded
			if want == "" {
				want = c.text
			}
			if d := tok.Decode(c.ids); d != want {
				t.Errorf("Decode(%v) = %q, want %q", c.ids, d, want)
			}
		})
	}
}

func TestEncodeGPT2(t *testing.T) {
	runEncodeCases(t, "gpt2", []encodeCase{
		// "hello": h e l l o -> (h e) rank 0 -> he, (l l) 1 -> ll, (he ll) 2,
		// (hell o) 3 -> hello. "Ġworld": (Ġ w) 4, (o r) 5, (Ġw or) 6,
		// (l d) 7, (Ġwor ld) 8.
		{"merges by rank", "hello world", ints(259, 264), ""},
		// (b c) has rank 10, (a b) 11: bc merges first and leaves a alone.
		{"lower rank merges first", "abc", ints(97, 266), ""},
		{"pair merges when alone", "abd", ints(267, 100), ""},
		// The heap still holds (Ġ h) rank 20 when hello has formed; it is
		// stale (the pair is now Ġ hello) and skipped, then (Ġ hello) 21.
		{"stale heap entry skipped", " hello", ints(277), ""},
		// é = C3 A9 = "Ã©" merges (rank 12); h and the l l o merge as usual.
		{"two-byte character", "héllo", ints(104, 268, 257, 111), ""},
		// " 世界": 世 = "ä¸ĸ" (ranks 13, 14), then Ġ 世 (23); 界 = E7 95 8C
		// has no merges and stays three byte tokens.
		{"CJK merged and not", " 世界", ints(279, 231, 149, 140), ""},
		{"emoji is four bytes", "🙂", ints(240, 159, 153, 130), ""},
		// \s+(?!\S) takes two of three spaces; the last goes with "b".
		{"lookahead leaves a space to the word", "a   b", ints(97, 265, 32, 98), ""},
		{"trailing spaces", "hello  ", ints(259, 265), ""},
		// "\n\n" before a letter: \s+(?!\S) backs off to one "\n", then \s+
		// takes the other, so ĊĊ (rank 22) never applies.
		{"newlines split one by one", "hello\n\nworld", ints(259, 10, 10, 119, 261, 263), ""},
		{"contraction", "it's", ints(105, 116, 271), ""},
		// GPT-2's contractions are lowercase only: "'" and "S" split.
		{"uppercase contraction", "IT'S", ints(73, 84, 39, 83), ""},
		// One digit run: 1 2 -> 12 (18), 12 3 -> 123 (19), 4 and 5 stay.
		{"digits are one piece", "12345", ints(275, 52, 53), ""},
		{"digit run before merge", "4123", ints(52, 275), ""},
		{"special token in the middle", "hello<|endoftext|> world", ints(259, 281, 264), ""},
		// Without ignore_merges, Ġxyz (280) is unreachable.
		{"vocab word not made by merges", " xyz", ints(32, 120, 121, 122), ""},
		{"empty", "", nil, ""},
	})
}

func TestEncodeLlama3(t *testing.T) {
	runEncodeCases(t, "llama3", []encodeCase{
		{"merges by rank", "hello world", ints(259, 264), ""},
		// \p{N}{1,3}: "412" then "3"; in "412", (1 2) merges to 12.
		{"digits in groups of three", "4123", ints(52, 274, 51), ""},
		{"seven digits", "1234567", ints(275, 52, 53, 54, 55), ""},
		// \s*[\r\n]+ keeps "\n\n" together: ĊĊ = 278.
		{"newlines together", "hello\n\nworld", ints(259, 278, 119, 261, 263), ""},
		// ignore_merges: " xyz" is in the vocabulary as Ġxyz.
		{"ignore_merges", " xyz", ints(280), ""},
		// NFC composes e + U+0301 into é before byte-level mapping.
		{"NFC", "he\u0301llo", ints(104, 268, 257, 111), "héllo"},
		{"chat template", "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
			ints(284, 117, 115, 101, 114, 285, 278, 104, 105, 283), ""},
		// "moesys" is a normalized, non-special added token: found after
		// NFC in "I like moesys!" ("I", " like", " " before it, "!" after).
		{"normalized added token", "I like moesys!", ints(73, 32, 108, 105, 107, 101, 32, 286, 33), ""},
		{"no such special token", "<|endoftext|>", ints(60, 124, 101, 110, 100, 111, 102, 116, 101, 120, 116, 124, 62), ""},
	})
}

func TestEncodeSentencePiece(t *testing.T) {
	runEncodeCases(t, "llama2", []encodeCase{
		// "▁hello▁world" is one word (no pre-tokenizer): ▁h (0), el (1),
		// ▁hel (2), lo (3), ▁hello (4), ▁w (5), or (6), ▁wor (7), ld (8),
		// ▁world (9).
		{"merges by rank", "hello world", ints(279, 284), ""},
		// "▁▁hello": (▁ h) rank 0 beats (▁ ▁) rank 10, so the first ▁ is
		// left alone; the decoder's Strip removes only the prepended space.
		{"leading space kept", " hello", ints(259, 279), ""},
		{"two spaces", "hello  world", ints(279, 259, 284), ""},
		// "▁abc": (b c) 11 before (a b) 12; then (▁ a) 13.
		{"lower rank merges first", "abc", ints(288, 286), ""},
		{"character in the vocab", "é", ints(259, 270), ""},
		// i is not in the vocabulary: <0x69> = 3+0x69; 世 = E4 B8 96.
		{"byte fallback", "hi 世", ints(275, 108, 259, 231, 187, 153), ""},
		{"emoji byte fallback", "🙂", ints(259, 243, 162, 156, 133), ""},
		// Pieces after an added token are normalized on their own, so
		// "hello" and "world" get their own ▁ and decode with a space: HF's
		// (legacy) behaviour, and why such text does not round-trip.
		{"chat markers", "<|im_start|>hello<|im_end|>", ints(289, 279, 290), "<|im_start|> hello<|im_end|>"},
		{"text after a special token", "hello</s>world", ints(279, 2, 284), "hello</s> world"},
		{"empty", "", nil, ""},
	})
}

func TestEncodeMetaspace(t *testing.T) {
	runEncodeCases(t, "metaspace", []encodeCase{
		{"merges by rank", "hello world", ints(279, 284), ""},
		// No byte fallback: 世界 is two unknown characters, fused to one.
		{"fused unk", "hello 世界", ints(279, 259, 0), "hello <unk>"},
		// The text starts with ▁ already, so none is prepended, and the
		// Metaspace decoder drops ▁ in the first token: the space is lost.
		{"leading space lost", " hello", ints(279), "hello"},
		// prepend_scheme "first": "hello" does not start the text.
		{"no prepend after a special token", "<s>hello", ints(1, 261, 276, 278), ""},
		// split: "▁a", "▁", "▁b" (each ▁ starts a piece).
		{"split before each ▁", "a  b", ints(288, 259, 259, 268), ""},
	})
}

func TestMergeFormats(t *testing.T) {
	// gpt2.json has merges as "a b" strings, llama3.json as ["a", "b"]
	// pairs, over the same vocabulary: the merge tables must be equal.
	a, b := load(t, "gpt2"), load(t, "llama3")
	if len(a.model.merges) != 24 || len(a.model.merges) != len(b.model.merges) {
		t.Fatalf("merges: %d and %d, want 24", len(a.model.merges), len(b.model.merges))
	}
	for k, m := range a.model.merges {
		if b.model.merges[k] != m {
			t.Errorf("merge %x: %v vs %v", k, m, b.model.merges[k])
		}
	}
}

func TestSpecialTokens(t *testing.T) {
	cases := []struct {
		fixture string
		bos     int32
		hasBOS  bool
		eos     []int32
		special []int32
		vocab   int
		text    string
		withBOS []int32
	}{
		{"gpt2", 0, false, ints(281), ints(281), 282, "hello", ints(259)},
		{"llama3", 281, true, ints(282, 283), ints(281, 282, 283, 284, 285), 287, "hello", ints(281, 259)},
		{"llama2", 1, true, ints(2, 290), ints(0, 1, 2, 289, 290), 291, "hello", ints(1, 279)},
		{"metaspace", 1, true, ints(2), ints(0, 1, 2), 289, "", ints(1)},
	}
	for _, c := range cases {
		t.Run(c.fixture, func(t *testing.T) {
			tok := load(t, c.fixture)
			if bos, ok := tok.BOS(); bos != c.bos || ok != c.hasBOS {
				t.Errorf("BOS() = %d, %v; want %d, %v", bos, ok, c.bos, c.hasBOS)
			}
			if got := tok.EOS(); !slices.Equal(got, c.eos) {
				t.Errorf("EOS() = %v, want %v", got, c.eos)
			}
			if got := tok.VocabSize(); got != c.vocab {
				t.Errorf("VocabSize() = %d, want %d", got, c.vocab)
			}
			var special []int32
			for id := range int32(tok.VocabSize()) {
				if tok.IsSpecial(id) {
					special = append(special, id)
				}
			}
			if !slices.Equal(special, c.special) {
				t.Errorf("special ids %v, want %v", special, c.special)
			}
			if tok.IsSpecial(-1) || tok.IsSpecial(1<<30) {
				t.Error("IsSpecial true outside the vocabulary")
			}
			if got := tok.EncodeSpecial(c.text); !slices.Equal(got, c.withBOS) {
				t.Errorf("EncodeSpecial(%q) = %v, want %v", c.text, got, c.withBOS)
			}
		})
	}
}

func TestTokenLookup(t *testing.T) {
	tok := load(t, "gpt2")
	for _, c := range []struct {
		token string
		id    int32
	}{{"Ġworld", 264}, {"hello", 259}, {"<|endoftext|>", 281}, {"Ā", 0}} {
		if id, ok := tok.ID(c.token); !ok || id != c.id {
			t.Errorf("ID(%q) = %d, %v; want %d", c.token, id, ok, c.id)
		}
		if s, ok := tok.Token(c.id); !ok || s != c.token {
			t.Errorf("Token(%d) = %q, %v; want %q", c.id, s, ok, c.token)
		}
	}
	if _, ok := tok.ID("nope"); ok {
		t.Error(`ID("nope") found`)
	}
	if _, ok := tok.Token(5000); ok {
		t.Error("Token(5000) found")
	}
}

func TestDecodeDropsUnknownIDs(t *testing.T) {
	tok := load(t, "gpt2")
	if got := tok.Decode(ints(-1, 259, 100000, 264)); got != "hello world" {
		t.Errorf("Decode = %q", got)
	}
	// Byte tokens that do not form a character decode to U+FFFD, as HF's
	// from_utf8_lossy: E4 B8 is one truncated sequence.
	if got := tok.Decode(ints(104, 0xE4, 0xB8)); got != "h\uFFFD" {
		t.Errorf("Decode(truncated) = %q", got)
	}
}

func TestEncodeInvalidUTF8(t *testing.T) {
	// Invalid input is repaired first (each maximal invalid sequence becomes
	// U+FFFD = EF BF BD), as HF only ever sees valid strings.
	tok := load(t, "gpt2")
	got := tok.Encode("a\xffb")
	// "a", " ?[^\s\p{L}\p{N}]+" takes U+FFFD, then "b".
	if want := ints(97, 0xEF, 0xBF, 0xBD, 98); !slices.Equal(got, want) {
		t.Errorf("Encode = %v, want %v", got, want)
	}
}

func TestConcurrentEncode(t *testing.T) {
	// The word cache is shared; run with -race to check it.
	tok := load(t, "llama3")
	want := tok.Encode(benchText)
	done := make(chan []int32)
	for range 8 {
		go func() { done <- tok.Encode(benchText) }()
	}
	for range 8 {
		if got := <-done; !slices.Equal(got, want) {
			t.Fatal("concurrent Encode differs")
		}
	}
}
