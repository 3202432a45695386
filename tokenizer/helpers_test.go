package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// The fixtures in testdata are small hand-made tokenizer.json files whose
// encodings can be worked out by hand:
//
// gpt2.json and llama3.json share one byte-level vocabulary. Ids 0..255 are
// the 256 bytes in byte order (id b is GPT-2's character for byte b, so a
// token of one byte has the byte's value as id: 'h' = 104, ' ' = 32). The
// merges, in rank order, and the tokens they make:
//
//	0 h e -> he 256        8 Ġwor ld -> Ġworld 264    16 ' t -> 't 272
//	1 l l -> ll 257        9 Ġ Ġ -> ĠĠ 265            17 Ġ t -> Ġt 273
//	2 he ll -> hell 258   10 b c -> bc 266            18 1 2 -> 12 274
//	3 hell o -> hello 259 11 a b -> ab 267            19 12 3 -> 123 275
//	4 Ġ w -> Ġw 260       12 Ã © -> "é" 268           20 Ġ h -> Ġh 276
//	5 o r -> or 261       13 ä ¸ -> 269               21 Ġ hello -> Ġhello 277
//	6 Ġw or -> Ġwor 262   14 ä¸ ĸ -> "世" 270          22 Ċ Ċ -> "\n\n" 278
//	7 l d -> ld 263       15 ' s -> 's 271            23 Ġ ä¸ĸ -> " 世" 279
//
// (Ġ is the space, Ċ the newline; é is bytes C3 A9 = "Ã©", 世 is E4 B8 96 =
// "ä¸ĸ".) Id 280 is "Ġxyz", in the vocabulary but made by no merge.
//
// gpt2.json: ByteLevel pre-tokenizer with GPT-2's regex, no normalizer,
// merges as "a b" strings, added special token <|endoftext|> = 281 (also in
// the vocabulary), no BOS.
//
// llama3.json: NFC normalizer (as Qwen2 has), Split with the Llama-3 regex
// then ByteLevel without regex, ignore_merges, merges as ["a", "b"] pairs,
// special tokens <|begin_of_text|> 281, <|end_of_text|> 282, <|eot_id|> 283,
// <|start_header_id|> 284, <|end_header_id|> 285 (not in the vocabulary), the
// non-special normalized added token "moesys" 286, and a template that puts
// <|begin_of_text|> first.
//
// llama2.json is SentencePiece-style BPE as in Llama-2/Mistral/Mixtral: <unk>
// 0, <s> 1, </s> 2, <0x00>..<0xFF> = 3..258 (byte b is id 3+b), then the
// characters ▁ 259, e 260, h 261, l 262, o 263, w 264, r 265, d 266, a 267,
// b 268, c 269, é 270, t 271, s 272, ' 273, n 274, and merges
//
//	0 ▁ h -> ▁h 275      5 ▁ w -> ▁w 280      10 ▁ ▁ -> ▁▁ 285
//	1 e l -> el 276      6 o r -> or 281      11 b c -> bc 286
//	2 ▁h el -> ▁hel 277  7 ▁w or -> ▁wor 282  12 a b -> ab 287
//	3 l o -> lo 278      8 l d -> ld 283      13 ▁ a -> ▁a 288
//	4 ▁hel lo -> ▁hello 279  9 ▁wor ld -> ▁world 284
//
// Normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer (a piece is
// one word), byte_fallback, fuse_unk, decoder Replace("▁", " "),
// ByteFallback, Fuse, Strip(1 leading space), template "<s> $A", added
// special tokens <unk>, <s>, </s>, <|im_start|> 289, <|im_end|> 290.
//
// metaspace.json is the older form of the same vocabulary: Metaspace
// pre-tokenizer and decoder (prepend_scheme "first", split), no normalizer,
// no byte fallback (unknown characters become <unk>, fused).
var fixtures = []string{"gpt2", "llama3", "llama2", "metaspace"}

func fixturePath(name string) string { return filepath.Join("testdata", name+".json") }

// load loads a fixture.
func load(t testing.TB, name string) *BPE {
	t.Helper()
	data, err := os.ReadFile(fixturePath(name))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := parse(data)
	if err != nil {
		t.Fatalf("parse %s: %v", name, err)
	}
	return tok
}

// edit loads a fixture as generic JSON, lets fn change it, and returns the
// changed file.
func edit(t testing.TB, name string, fn func(f map[string]any)) []byte {
	t.Helper()
	data, err := os.ReadFile(fixturePath(name))
	if err != nil {
		t.Fatal(err)
	}
	var f map[string]any
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	fn(f)
	out, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ints is shorthand for id lists in tables.
func ints(ids ...int32) []int32 { return ids }
