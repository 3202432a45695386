package tokenizer

import (
	"strings"
	"testing"
)

// benchText is about 4 KB of mixed text: English prose with contractions,
// numbers, code, chat markers, accented Latin, CJK and emoji.
var benchText = strings.Repeat(`The model's router picks 2 of 8 experts per token; it doesn't
drop tokens unless capacity (1.25x) is exceeded. Throughput: 1234567 tok/s at step 42.
<|im_start|>user
Résumé of the café meeting — naïve Ångström façade. 東京の天気は晴れです。混合专家模型。🙂🚀
<|im_end|>
func (r *Router) Forward(x []float32) { for i := range x { x[i] *= 0.5 } }
`, 12)

// BenchmarkEncode measures Encode on each fixture and on Byte. The BPE
// fixtures have tiny vocabularies, so most text falls to single bytes and
// many merges: this exercises the pipeline and the merge loop, not the
// throughput on a real vocabulary.
func BenchmarkEncode(b *testing.B) {
	toks := map[string]Tokenizer{"byte": &Byte{}}
	for _, f := range fixtures {
		toks[f] = load(b, f)
	}
	for _, name := range append([]string{"byte"}, fixtures...) {
		tok := toks[name]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(benchText)))
			for b.Loop() {
				tok.Encode(benchText)
			}
		})
	}
}

// BenchmarkDecoder measures streaming decode of the benchmark text, one id
// at a time.
func BenchmarkDecoder(b *testing.B) {
	tok := load(b, "llama2")
	ids := tok.Encode(benchText)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchText)))
	d := NewDecoder(tok, false)
	for b.Loop() {
		for _, id := range ids {
			d.Push(id)
		}
		d.Flush()
	}
}
