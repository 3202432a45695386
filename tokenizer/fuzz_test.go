package tokenizer

import (
	"errors"
	"os"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

var fuzzSeeds = []string{
	"", "hello world", " hello  world ", "héllo 世界 🙂🚀", "a\n\n  b\r\n", "I'M don't 1234567",
	"<|endoftext|>x</s>y<s>", "<|im_start|>user\nhi<|im_end|>", "▁x ▁", "<0x41>", "\u00a0\u3000\t",
	"e\u0301 =\u0338 <|eot_id|>\u0338", "\uFFFD", "moesys",
}

// FuzzByteLevelRoundTrip checks that byte-level BPE loses nothing: on
// gpt2.json, Decode(Encode(s)) == s for every valid UTF-8 s, special token
// text included. On llama3.json the result is s under NFC, applied (as HF
// does) to the text between special tokens: e.g. ">" + U+0338 stays two
// characters after "<|eot_id|>" but composes to "≯" inside text.
func FuzzByteLevelRoundTrip(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	gpt2, llama3 := load(f, "gpt2"), load(f, "llama3")
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		if got := gpt2.Decode(gpt2.Encode(s)); got != s {
			t.Fatalf("gpt2: Decode(Encode(%q)) = %q", s, got)
		}
		var want strings.Builder
		for _, seg := range llama3.rawAdded.split(nil, s) {
			want.WriteString(norm.NFC.String(s[seg.start:seg.end]))
		}
		ids := llama3.EncodeSpecial(s)
		if ids[0] != 281 {
			t.Fatalf("llama3: EncodeSpecial(%q) starts with %d", s, ids[0])
		}
		if got := llama3.Decode(ids[1:]); got != want.String() {
			t.Fatalf("llama3: Decode(Encode(%q)) = %q, want %q", s, got, want.String())
		}
	})
}

// FuzzSentencePieceRoundTrip checks llama2.json (Prepend("▁") +
// Replace(" ", "▁") normalizer, byte fallback, Strip decoder). For valid
// UTF-8 s that contains no added token (<unk>, <s>, </s>, <|im_start|>,
// <|im_end|>):
//
//	Decode(Encode(s)) == strings.ReplaceAll(s, "▁", " ")
//
// Leading spaces survive (the decoder strips only the "▁" the normalizer
// prepended), unknown characters survive through byte fallback, but a "▁"
// in the input is indistinguishable from an encoded space. Text next to an
// added token is not covered: each piece between added tokens gets its own
// prepended "▁", which decodes to an extra space (HF's legacy behaviour).
func FuzzSentencePieceRoundTrip(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	tok := load(f, "llama2")
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		ids := tok.EncodeSpecial(s)
		if ids[0] != 1 {
			t.Fatalf("EncodeSpecial(%q) starts with %d", s, ids[0])
		}
		got := tok.Decode(ids[1:])
		for content := range tok.added {
			if strings.Contains(s, content) {
				if !utf8.ValidString(got) {
					t.Fatalf("Decode gave invalid UTF-8 %q", got)
				}
				return
			}
		}
		if want := strings.ReplaceAll(s, "▁", " "); got != want {
			t.Fatalf("Decode(Encode(%q)) = %q, want %q", s, got, want)
		}
	})
}

// FuzzLoad feeds arbitrary bytes to Parse: it must return an error wrapping
// ErrFormat or ErrUnsupported or a tokenizer that encodes within its
// vocabulary and decodes to valid UTF-8, and never panic. Seeds are the
// fixtures, which are 5-7 KB; run it with a short minimisation time:
//
//	go test -run '^$' -fuzz FuzzLoad -fuzzminimizetime 1s ./tokenizer
func FuzzLoad(f *testing.F) {
	for _, name := range fixtures {
		data, err := os.ReadFile(fixturePath(name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}}`))
	f.Add([]byte(`{"model":{"vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Split","pattern":{"Regex":"a+"},"behavior":"MergedWithNext","invert":true}}`))
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{},"merges":[]},"normalizer":{"type":"Sequence","normalizers":[{"type":"Lowercase"}]},"decoder":{"type":"Strip","content":"x","start":3,"stop":2}}`))
	// Every component kind, with edge values (empty patterns, prefix and
	// suffix, large Strip counts), for mutations to start from.
	f.Add([]byte(`{"version":"1.0","added_tokens":[{"id":9,"content":"<x>","lstrip":true,"rstrip":true,"single_word":true,"normalized":true,"special":true}],` +
		`"normalizer":{"type":"Sequence","normalizers":[{"type":"NFKD"},{"type":"StripAccents"},{"type":"Lowercase"},{"type":"Strip","strip_left":true,"strip_right":false},` +
		`{"type":"Replace","pattern":{"Regex":""},"content":"-"},{"type":"Prepend","prepend":"_"},{"type":"ByteLevel"},{"type":"NFC"}]},` +
		`"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Whitespace"},{"type":"WhitespaceSplit"},{"type":"BertPreTokenizer"},{"type":"Digits","individual_digits":true},` +
		`{"type":"Punctuation","behavior":"Contiguous"},{"type":"CharDelimiterSplit","delimiter":"a"},{"type":"Split","pattern":{"String":""},"behavior":"MergedWithPrevious","invert":false},` +
		`{"type":"Metaspace","replacement":"_","prepend_scheme":"always","split":false},{"type":"ByteLevel","add_prefix_space":true,"use_regex":true}]},` +
		`"post_processor":{"type":"Sequence","processors":[{"type":"RobertaProcessing","sep":["</s>",7],"cls":["<s>",8]},{"type":"BertProcessing","sep":["a",1],"cls":["b",2]}]},` +
		`"decoder":{"type":"Sequence","decoders":[{"type":"BPEDecoder","suffix":""},{"type":"Replace","pattern":{"String":""},"content":"+"},{"type":"ByteFallback"},{"type":"Metaspace","replacement":"_","add_prefix_space":false},{"type":"Strip","content":"a","start":5,"stop":9},{"type":"Fuse"},{"type":"ByteLevel"}]},` +
		`"model":{"type":"BPE","unk_token":"u","continuing_subword_prefix":"##","end_of_word_suffix":"</w>","fuse_unk":true,"byte_fallback":true,"ignore_merges":true,` +
		`"vocab":{"u":0,"a":1,"##b":2,"ab":3,"<0x61>":4,"b</w>":5,"ab</w>":6},"merges":[["a","##b"],["a","b</w>"]]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("error %v wraps neither ErrFormat nor ErrUnsupported", err)
			}
			return
		}
		for _, s := range []string{"", "Hi  you'll 42", "é 世🙂\n<s>", "\xff▁ab"} {
			ids := tok.EncodeSpecial(s)
			for _, id := range ids {
				if id < 0 || int(id) >= tok.VocabSize() {
					t.Fatalf("Encode(%q) gave id %d outside [0, %d)", s, id, tok.VocabSize())
				}
			}
			if out := tok.Decode(ids); !utf8.ValidString(out) {
				t.Fatalf("Decode gave invalid UTF-8 %q", out)
			}
			d := NewDecoder(tok, true)
			for _, id := range ids {
				if c := d.Push(id); !utf8.ValidString(c) {
					t.Fatalf("Push gave invalid UTF-8 %q", c)
				}
			}
			d.Flush()
		}
	})
}
