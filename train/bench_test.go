package train

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/moesys/moesys/model"
)

// BenchmarkTrainStep times one forward+backward+AdamW step of the presets'
// models on random tokens (b.N steps; tokens/s is reported).
func BenchmarkTrainStep(b *testing.B) {
	for _, name := range []string{"tiny", "small", "small-bf16"} {
		b.Run(name, func(b *testing.B) {
			o, err := PresetOptions(strings.TrimSuffix(name, "-bf16"))
			if err != nil {
				b.Fatal(err)
			}
			o.BF16 = strings.HasSuffix(name, "-bf16")
			if testing.Short() || name != "tiny" && b.N == 1 {
				o.Batch = 2 // keep the CI smoke run cheap
			}
			net, err := model.NewNet(o.Model, o.Seq)
			if err != nil {
				b.Fatal(err)
			}
			net.Init(1, 0.02)
			net.Recompute = o.Recompute
			corpus := randomCorpus(o.Model.V, 4*o.Batch*o.Seq)
			tr, err := newTrainer(o, corpus, net, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			mustStep(b, tr) // warm-up: buffers
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				mustStep(b, tr)
			}
			b.ReportMetric(float64(b.N*o.Batch*o.Seq)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

func randomCorpus(V, n int) *Corpus {
	rng := rand.New(rand.NewPCG(1, 2))
	toks := make([]int32, n)
	for i := range toks {
		toks[i] = int32(rng.IntN(V))
	}
	return &Corpus{Train: toks[:n*3/4], Val: toks[n*3/4:], Source: "random"}
}
