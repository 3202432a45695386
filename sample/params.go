package sample

import (
	"errors"
	"fmt"
	"math"
)

// ErrParams is the sentinel every Validate error wraps: errors.Is(err,
// sample.ErrParams) tells a bad request from other failures.
var ErrParams = errors.New("sample: invalid params")

// Params are the knobs of one generation request. The zero value is not
// valid (TopP and RepetitionPenalty of 0 are errors); start from Defaults and
// change what the request sets.
type Params struct {
	// Temperature divides the logits before the softmax (dimensionless,
	// finite, ≥ 0). 0 means greedy decoding: the argmax, ties to the lowest
	// id, with TopK, TopP, MinP and Seed ignored. Below 1 sharpens, above 1
	// flattens.
	Temperature float64

	// TopK keeps only the TopK most likely tokens (a count, ≥ 0). 0 = off,
	// and so is any value ≥ the vocab size. Exactly TopK tokens survive:
	// equal logits at the boundary go to the lower ids (Hugging Face keeps
	// every token tied with the K-th, so it may keep more).
	TopK int

	// TopP is the nucleus mass, a probability in (0, 1]: keep the smallest
	// set of most likely tokens whose probabilities (after TopK, renormalised)
	// sum to at least TopP. 1 = off.
	TopP float64

	// MinP drops tokens whose probability is below MinP times the
	// probability of the most likely token (a ratio in [0, 1], as in
	// llama.cpp and Hugging Face; the ratio is the same before or after
	// renormalising). 0 = off.
	MinP float64

	// RepetitionPenalty (> 0, finite) applies the Hugging Face / CTRL
	// penalty to every token id present in the context, once per distinct
	// id however often it occurs: a positive logit is divided by the
	// penalty, a negative one multiplied by it, zero stays zero. 1 = off;
	// above 1 discourages repeats, below 1 encourages them.
	RepetitionPenalty float64

	// Seed seeds the sampler's PCG generator: the same Params (Seed
	// included), logits and context give the same tokens on every run and
	// machine.
	Seed uint64

	// MaxTokens ends the generation after this many tokens (a count, ≥ 0;
	// 0 = no limit here, the caller's context length still applies). The
	// Stopper enforces it.
	MaxTokens int

	// StopStrings end the generation when any of them appears in the
	// generated text; the stop string and everything after it are not
	// emitted (as in the OpenAI API). Each must be non-empty. The Stopper
	// enforces them.
	StopStrings []string

	// EOS is the set of end-of-sequence token ids (order and duplicates do
	// not matter; each ≥ 0). Generating one ends the generation and its text
	// is not emitted. The Stopper enforces it.
	EOS []int32
}

// Defaults returns Params that sample from the model's unmodified
// distribution: Temperature 1, every filter and the penalty off, seed 0, no
// token limit, no stop strings, no EOS ids.
func Defaults() Params {
	return Params{Temperature: 1, TopP: 1, RepetitionPenalty: 1}
}

// Validate reports every bad value in p, each as an error wrapping ErrParams,
// joined with errors.Join; nil if p is usable.
func (p Params) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrParams}, args...)...))
	}
	switch t := p.Temperature; {
	case math.IsNaN(t) || math.IsInf(t, 0):
		bad("temperature %v is not a finite number", t)
	case t < 0:
		bad("temperature %v is negative (0 means greedy)", t)
	}
	if p.TopK < 0 {
		bad("top_k %d is negative (0 turns it off)", p.TopK)
	}
	if !(p.TopP > 0 && p.TopP <= 1) {
		bad("top_p %v is outside (0, 1] (1 turns it off; start from sample.Defaults())", p.TopP)
	}
	if !(p.MinP >= 0 && p.MinP <= 1) {
		bad("min_p %v is outside [0, 1] (0 turns it off)", p.MinP)
	}
	if r := p.RepetitionPenalty; !(r > 0) || math.IsInf(r, 0) {
		bad("repetition_penalty %v must be a finite number > 0 (1 turns it off; start from sample.Defaults())", r)
	}
	if p.MaxTokens < 0 {
		bad("max_tokens %d is negative (0 means no limit)", p.MaxTokens)
	}
	for i, s := range p.StopStrings {
		if s == "" {
			bad("stop string %d is empty", i)
		}
	}
	for i, id := range p.EOS {
		if id < 0 {
			bad("eos id %d (entry %d) is negative", id, i)
		}
	}
	return errors.Join(errs...)
}
