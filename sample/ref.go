package sample

import (
	"math"
	"slices"
)

// DistributionRef is the naive twin of Sampler.Next: the distribution Next
// draws from, computed the obvious way (sort the whole vocabulary by rank,
// float64 softmax after each filter, as transformers applies its warpers one
// after another). It returns the tokens of positive probability in ascending
// id order with their probabilities (summing to 1). With Temperature 0 it
// returns the argmax with probability 1, and if every logit is masked, token
// 0 with probability 1.
//
// Tests hold Next to it; it allocates and sorts, so do not call it per
// token. p must be valid (Validate) and context ids in [0, len(logits));
// otherwise it panics.
func DistributionRef(p Params, logits []float32, context []int32) ([]int32, []float64) {
	if err := p.Validate(); err != nil {
		panic("sample.DistributionRef: " + err.Error())
	}
	V := len(logits)
	if V == 0 {
		panic("sample.DistributionRef: empty logits row")
	}

	// Masking, then the penalty once per distinct context id (in float32,
	// as the scores are).
	z := make([]float32, V)
	for i, v := range logits {
		switch {
		case math.IsNaN(float64(v)):
			z[i] = float32(math.Inf(-1))
		case math.IsInf(float64(v), 1):
			z[i] = math.MaxFloat32
		default:
			z[i] = v
		}
	}
	pen := float32(p.RepetitionPenalty)
	seen := map[int32]bool{}
	for _, id := range context {
		if id < 0 || int(id) >= V {
			panic("sample.DistributionRef: context id outside the vocabulary")
		}
		if seen[id] {
			continue
		}
		seen[id] = true
		switch v := z[id]; {
		case v > 0:
			z[id] = v / pen
		case v < 0:
			z[id] = v * pen
		}
	}

	// Rank order: larger logit first, lower id on ties.
	order := make([]int32, V)
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortStableFunc(order, func(a, b int32) int {
		switch {
		case z[a] > z[b]:
			return -1
		case z[a] < z[b]:
			return 1
		}
		return 0
	})
	if p.Temperature == 0 || math.IsInf(float64(z[order[0]]), -1) {
		return []int32{order[0]}, []float64{1}
	}

	// softmax over the survivors (in rank order), float64.
	softmax := func(ids []int32) []float64 {
		m := float64(z[ids[0]])
		pr := make([]float64, len(ids))
		var sum float64
		for i, id := range ids {
			pr[i] = math.Exp((float64(z[id]) - m) / p.Temperature)
			sum += pr[i]
		}
		for i := range pr {
			pr[i] /= sum
		}
		return pr
	}

	alive := order
	if p.TopK > 0 && p.TopK < V {
		alive = alive[:p.TopK]
	}
	if p.TopP < 1 {
		pr := softmax(alive)
		var cum float64
		n := 0
		for n < len(alive) {
			cum += pr[n]
			n++
			if cum >= p.TopP {
				break
			}
		}
		alive = alive[:n]
	}
	if p.MinP > 0 {
		pr := softmax(alive)
		n := 0
		for n < len(alive) && pr[n] >= p.MinP*pr[0] {
			n++
		}
		alive = alive[:n]
	}
	pr := softmax(alive)

	// Ascending id order, zero-probability tokens dropped.
	type tp struct {
		id int32
		p  float64
	}
	var out []tp
	for i, id := range alive {
		if pr[i] > 0 {
			out = append(out, tp{id, pr[i]})
		}
	}
	slices.SortFunc(out, func(a, b tp) int { return int(a.id - b.id) })
	ids := make([]int32, len(out))
	probs := make([]float64, len(out))
	for i, t := range out {
		ids[i], probs[i] = t.id, t.p
	}
	return ids, probs
}
