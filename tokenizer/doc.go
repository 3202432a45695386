// Package tokenizer turns text into token ids and back for moesys models:
// the byte-level tokenizer of moesys' own models and Hugging Face
// tokenizer.json BPE tokenizers, both behind the Tokenizer interface that
// generate, serve and train use.
//
// Byte maps each byte to its own id (vocabulary 256), with optional special
// tokens after it:
//
//	var bt tokenizer.Byte                  // no special tokens
//	ids := bt.Encode("héllo")              // [104 195 169 108 108 111]
//	text := bt.Decode(ids)                 // "héllo"
//
// Load reads a tokenizer.json whose model is BPE, in both families:
// byte-level BPE (GPT-2, Llama-3, Qwen2, OLMoE: ByteLevel and Split regex
// pre-tokenizers, GPT-2 byte-to-unicode map) and SentencePiece-style BPE
// (Llama-2, Mistral, Mixtral: "▁" for spaces, <0xXX> byte fallback). It
// follows the published semantics of HF tokenizers: added tokens are cut
// out first (lstrip/rstrip/single_word/normalized), then normalizer,
// pre-tokenizer, BPE merges by rank, and the post-processor's BOS/EOS:
//
//	tok, err := tokenizer.Load("models/mixtral/tokenizer.json") // or the directory
//	if err != nil { ... }
//	prompt := tok.EncodeSpecial("[INST] Hi [/INST]")           // <s> first, as the template says
//	bos, ok := tok.BOS()                                        // 1, true
//	stop := tok.EOS()                                           // [2]
//
// Parse does the same from bytes. On malformed files both return an error
// wrapping ErrFormat or ErrUnsupported; they never panic. Tokenizers are
// safe for concurrent use.
//
// Streaming generation decodes one id at a time with a Decoder, which holds
// back ids that end inside a UTF-8 character (one Decoder per stream):
//
//	d := tokenizer.NewDecoder(tok, true) // skip special tokens
//	for id := range generated {
//		w.Write([]byte(d.Push(id)))
//	}
//	w.Write([]byte(d.Flush()))
//
// Unknown model types (WordPiece, Unigram, WordLevel) and components this
// package does not implement fail to load with an error wrapping
// ErrUnsupported that names them. Regex patterns run on regexp2, a
// backtracking engine with the lookaround the pre-tokenizer patterns need.
package tokenizer
