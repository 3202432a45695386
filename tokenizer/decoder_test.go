package tokenizer

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// stream pushes ids one at a time and returns what each Push returned, then
// what Flush returned.
func stream(d *Decoder, ids []int32) []string {
	var out []string
	for _, id := range ids {
		out = append(out, d.Push(id))
	}
	return append(out, d.Flush())
}

func TestDecoderChunks(t *testing.T) {
	gpt2, llama2 := load(t, "gpt2"), load(t, "llama2")
	cases := []struct {
		name        string
		tok         Tokenizer
		skipSpecial bool
		ids         []int32
		want        []string // per Push, then Flush
	}{
		// 🙂 = F0 9F 99 82, one byte token each: held until complete.
		{"emoji bytes", gpt2, false, ints(240, 159, 153, 130), []string{"", "", "", "🙂", ""}},
		{"words", gpt2, false, ints(259, 264), []string{"hello", " world", ""}},
		// SentencePiece: only the first token's leading space is stripped;
		// the previous chunk's ids, kept as context, keep the others.
		{"sentencepiece words", llama2, false, ints(279, 284, 259, 279), []string{"hello", " world", " ", " hello", ""}},
		// "▁" then <0xE4> <0xB8> <0x96>: 世 appears whole.
		{"byte fallback", llama2, false, ints(279, 259, 231, 187, 153), []string{"hello", " ", "", "", "世", ""}},
		{"special kept", gpt2, false, ints(259, 281, 264), []string{"hello", "<|endoftext|>", " world", ""}},
		{"special skipped", gpt2, true, ints(259, 281, 264), []string{"hello", "", " world", ""}},
		// A truncated character at the end comes out of Flush as U+FFFD.
		{"flush incomplete", gpt2, false, ints(104, 0xE4, 0xB8), []string{"h", "", "", "\uFFFD"}},
		// 0xFF can never start a character: its U+FFFD goes out with the
		// next text.
		{"invalid byte", &Byte{}, false, ints(0xFF, 'a'), []string{"", "\uFFFDa", ""}},
		{"nothing", gpt2, false, nil, []string{""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := stream(NewDecoder(c.tok, c.skipSpecial), c.ids)
			if !slices.Equal(got, c.want) {
				t.Errorf("chunks %q, want %q", got, c.want)
			}
		})
	}
}

func TestDecoderMatchesDecode(t *testing.T) {
	// On every fixture and many texts: each chunk is valid UTF-8, and the
	// chunks add up to Decode of all ids, with and without specials.
	texts := []string{
		"hello world", " hello  world ", "héllo 世界 🙂🚀", "a\n\nb", "<|endoftext|>x</s>y",
		"<|im_start|>user\nhi<|im_end|>", "12345 it's", benchText, "", "▁x", "\uFFFD",
	}
	toks := map[string]Tokenizer{"byte": &Byte{}}
	for _, f := range fixtures {
		toks[f] = load(t, f)
	}
	for name, tok := range toks {
		for _, skip := range []bool{false, true} {
			d := NewDecoder(tok, skip)
			for _, text := range texts {
				ids := tok.EncodeSpecial(text)
				var kept []int32
				for _, id := range ids {
					if !skip || !tok.IsSpecial(id) {
						kept = append(kept, id)
					}
				}
				chunks := stream(d, ids) // Flush resets d for the next text
				for _, c := range chunks {
					if !utf8.ValidString(c) {
						t.Errorf("%s: chunk %q of %q is not valid UTF-8", name, c, text)
					}
				}
				if got, want := strings.Join(chunks, ""), tok.Decode(kept); got != want {
					t.Errorf("%s skip=%v: streamed %q, Decode %q", name, skip, got, want)
				}
			}
		}
	}
}

func TestDecoderGarbage(t *testing.T) {
	// A long run of bytes that never form a character is let out after
	// maxPendingIDs ids rather than held (and re-decoded) forever.
	d := NewDecoder(&Byte{}, false)
	var out string
	for i := 0; i < 3*maxPendingIDs; i++ {
		out += d.Push(0xFF)
	}
	if out == "" {
		t.Fatal("nothing emitted")
	}
	out += d.Flush()
	if want := strings.Repeat("\uFFFD", 3*maxPendingIDs); out != want {
		t.Errorf("got %d chars, want %d U+FFFD", utf8.RuneCountInString(out), 3*maxPendingIDs)
	}
}
