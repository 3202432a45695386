package sample

import (
	"fmt"
	"math"
)

// sanitize maps a raw logit to the value the filters work on. NaN becomes
// −Inf: a NaN logit is treated as a masked token, never sampled (unless every
// logit is masked, see Next). +Inf becomes the largest float32, so that
// several +Inf logits share the probability mass equally instead of turning
// the softmax into NaN.
func sanitize(v float32) float32 {
	switch {
	case v != v:
		return float32(math.Inf(-1))
	case v > math.MaxFloat32:
		return math.MaxFloat32
	}
	return v
}

// penalize applies the Hugging Face / CTRL repetition penalty to one logit:
// positive logits are divided by the penalty, negative ones multiplied, in
// float32 as transformers does on float32 scores. Zero and −Inf are fixed
// points (−Inf·penalty = −Inf).
func penalize(v, penalty float32) float32 {
	if v > 0 {
		return v / penalty
	}
	if v < 0 {
		return v * penalty
	}
	return v
}

// prepare writes z[i] = sanitize(logits[i]) for the V = len(logits) tokens,
// applies the repetition penalty to each id in context, and returns the
// argmax of the result (lowest id on ties). The penalised value is computed
// from the caller's logit, not from z, so an id occurring several times in
// context is penalised exactly once (transformers gathers, penalises and
// scatters, with the same effect). A context id outside [0, V) is a
// programmer error (the ids come from another vocabulary) and panics.
func prepare(z, logits []float32, context []int32, penalty float32) int32 {
	z = z[:len(logits)]
	best, bv := 0, sanitize(logits[0])
	for i, v := range logits {
		v = sanitize(v)
		z[i] = v
		if v > bv {
			best, bv = i, v
		}
	}
	for _, id := range context {
		if uint(id) >= uint(len(z)) {
			panic(fmt.Sprintf("sample.Sampler.Next: context id %d outside the vocabulary [0, %d) of the logits row", id, len(z)))
		}
	}
	if penalty == 1 || len(context) == 0 {
		return int32(best)
	}
	for _, id := range context {
		z[id] = penalize(sanitize(logits[id]), penalty)
	}
	return argmax(z) // the penalty may move the maximum either way
}
