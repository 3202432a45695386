package tokenizer_test

import (
	"fmt"
	"log"

	"github.com/moesys/moesys/tokenizer"
)

func ExampleByte() {
	var tok tokenizer.Byte // ids 0..255 are bytes; no special tokens
	ids := tok.Encode("héllo")
	fmt.Println(ids, tok.VocabSize())
	fmt.Println(tok.Decode(ids))
	// Output:
	// [104 195 169 108 108 111] 256
	// héllo
}

func ExampleNewByte() {
	tok, err := tokenizer.NewByte(tokenizer.ByteConfig{
		Specials: []string{"<bos>", "<eos>"}, // ids 256, 257
		BOS:      "<bos>",
		EOS:      []string{"<eos>"},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tok.EncodeSpecial("hi<eos>"), tok.EOS())
	// Output: [256 104 105 257] [257]
}

func ExampleLoad() {
	// A small SentencePiece-style (Llama-2 / Mistral) tokenizer.json.
	tok, err := tokenizer.Load("testdata/llama2.json")
	if err != nil {
		log.Fatal(err)
	}
	ids := tok.EncodeSpecial("hello world 世")
	bos, _ := tok.BOS()
	fmt.Println(ids)
	fmt.Println(bos, tok.EOS())
	// Decoding strips one leading space, the "▁" the normalizer put first;
	// after <s> that space stays, as in HF.
	fmt.Printf("%q %q\n", tok.Decode(ids), tok.Decode(ids[1:]))
	// Output:
	// [1 279 284 259 231 187 153]
	// 1 [2 290]
	// "<s> hello world 世" "hello world 世"
}

func ExampleDecoder() {
	// Byte-level BPE splits 🙂 (F0 9F 99 82) into four tokens; the Decoder
	// emits it once whole.
	tok, err := tokenizer.Load("testdata/gpt2.json")
	if err != nil {
		log.Fatal(err)
	}
	d := tokenizer.NewDecoder(tok, true)
	for _, id := range tok.Encode("hello 🙂<|endoftext|>") {
		fmt.Printf("%d:%q ", id, d.Push(id))
	}
	fmt.Printf("flush:%q\n", d.Flush())
	// Output: 259:"hello" 32:" " 240:"" 159:"" 153:"" 130:"🙂" 281:"" flush:""
}
