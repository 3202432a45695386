package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// pcgStream is the second PCG seed word (the stream). It is fixed so that
// Params.Seed alone decides the token sequence; the value is the 64-bit
// golden-ratio constant, any odd constant would do.
const pcgStream = 0x9e3779b97f4a7c15

// minPSlack widens the min-p pre-filter on the exp argument (z−max)/T, the
// natural log of the probability ratio, so that it never rejects a token the
// exact test on its float32 weight accepts: exp32 is within 1 ulp and the
// weight rounds to float32, about 1.2e-7 relative together; 1e-5 covers that
// with room, at the price of an exp for the few tokens just below the
// threshold.
const minPSlack = 1e-5

// Sampler turns rows of logits into token ids for one generation stream,
// under fixed Params and its own seeded generator. It is not safe for
// concurrent use: give each request its own Sampler.
//
// Scratch buffers are sized on the first Next and reallocated only when a
// longer logits row arrives; every other call allocates nothing.
type Sampler struct {
	p       Params
	penalty float32 // p.RepetitionPenalty in the logits' precision

	src rand.PCG
	rng *rand.Rand

	z    []float32 // (V) logits after sanitize and the repetition penalty
	w    []float32 // (V) weights exp((z−max)/Temperature); valid only for the ids under consideration
	iota []int32   // (V) 0, 1, …, V−1: the "every token" id list; never written after it is filled
	topk []int32   // (min(TopK, V)) top-k selection heap, then the kept ids ascending
	list []int32   // (V) top-p candidates and nucleus, or the min-p survivors
}

// New returns a Sampler for p, or p's Validate error. The Sampler keeps its
// own copy of p.
func New(p Params) (*Sampler, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	p.StopStrings = slices.Clone(p.StopStrings)
	p.EOS = slices.Clone(p.EOS)
	s := &Sampler{p: p, penalty: float32(p.RepetitionPenalty)}
	s.src.Seed(p.Seed, pcgStream)
	s.rng = rand.New(&s.src)
	return s, nil
}

// Params returns the Params the Sampler was made with (Seed as last set by
// Reseed). The slices are the Sampler's own; do not modify them.
func (s *Sampler) Params() Params { return s.p }

// Reseed restarts the generator as if the Sampler had been made with
// Params.Seed = seed, so a pooled Sampler can serve a new request.
func (s *Sampler) Reseed(seed uint64) {
	s.p.Seed = seed
	s.src.Seed(seed, pcgStream)
}

// Next returns the next token id for logits, the (V) row of scores of the
// last position, given context, the token ids so far (prompt and generated;
// only used by the repetition penalty, each in [0, V) or Next panics).
//
// Steps, in transformers' order (see the package doc for why): repetition
// penalty, temperature, top-k, top-p, min-p, then one draw from the
// surviving tokens renormalised. With Temperature 0 it returns the argmax
// after the penalty (ties to the lowest id) and does not touch the
// generator; otherwise it consumes exactly one draw, whatever the filters
// keep, so the generator's position depends only on the number of calls.
//
// NaN logits count as −Inf (masked) and +Inf ones as the largest float32.
// If every logit is masked, Next returns 0 (still consuming the draw when
// sampling). It neither modifies nor retains logits or context.
//
// Cost per call: about two passes over V (copy with argmax; one exp per
// token unless top-k or min-p rule most tokens out before it), plus the
// selections described in topk.go and topp.go, which never sort the
// vocabulary; no allocation after the first call for a given vocab size.
func (s *Sampler) Next(logits []float32, context []int32) int32 {
	ids, total := s.filter(logits, context)
	if s.p.Temperature == 0 {
		return ids[0]
	}
	return draw(ids, s.w, total, s.rng.Float64())
}

// filter runs everything in Next but the draw: it returns the surviving ids
// (see survivors for their order), with their weights in s.w and the sum of
// those weights.
// Greedy decoding, and a row with every token masked, leave the one token
// Next returns, with weight 1.
func (s *Sampler) filter(logits []float32, context []int32) ([]int32, float64) {
	V := len(logits)
	if V == 0 {
		panic("sample.Sampler.Next: empty logits row (V = 0)")
	}
	if V > math.MaxInt32 {
		panic(fmt.Sprintf("sample.Sampler.Next: V = %d does not fit token ids (int32)", V))
	}
	s.grow(V)
	z := s.z[:V]
	best := prepare(z, logits, context, s.penalty)
	if s.p.Temperature == 0 || math.IsInf(float64(z[best]), -1) {
		s.w[best] = 1
		s.list[0] = best
		return s.list[:1], 1 // greedy, or every token masked (best is 0)
	}
	return s.survivors(best)
}

// survivors applies temperature, top-k, top-p and min-p to s.z (best is its
// argmax) and returns the surviving ids, their weights set in s.w, and the
// sum of those weights (float64). The ids are ascending, except after top-p,
// where they come in the order the selection left them: a function of the
// inputs alone, so draws stay deterministic. The survivors always include
// best.
func (s *Sampler) survivors(best int32) ([]int32, float64) {
	z := s.z
	V := len(z)
	zmax := z[best]
	invT := float32(min(1/s.p.Temperature, math.MaxFloat32))

	// Top-k works on the logit order, which temperature does not change.
	keep := s.iota[:V]
	if k := s.p.TopK; k > 0 && k < V {
		keep = topK(s.topk[:k], z)
	}

	// Top-p needs the normaliser over every token still in play, so every
	// one of them gets its weight; min-p then thins the nucleus.
	if s.p.TopP < 1 {
		ids, total := s.nucleus(keep, zmax, invT)
		if s.p.MinP > 0 {
			ids, total = minP(ids, s.w, s.p.MinP)
		}
		return ids, total
	}

	// Without top-p, min-p is a threshold on (z−max)/T, so tokens far below
	// it are dropped before paying for their exp.
	if mp := s.p.MinP; mp > 0 {
		lim := math.Log(mp) - minPSlack
		ids := s.list[:0]
		var total float64
		for _, id := range keep {
			x := (z[id] - zmax) * invT
			if float64(x) < lim {
				continue
			}
			e := exp32(x)
			if float64(e) >= mp {
				s.w[id] = e
				ids = append(ids, id)
				total += float64(e)
			}
		}
		return ids, total
	}
	return keep, weigh(s.w, z, keep, zmax, invT)
}

// grow sizes the scratch buffers for a row of V logits.
func (s *Sampler) grow(V int) {
	if cap(s.z) < V {
		s.z = make([]float32, V)
		s.w = make([]float32, V)
		s.list = make([]int32, V)
		s.iota = make([]int32, V)
		for i := range s.iota {
			s.iota[i] = int32(i)
		}
	}
	s.z, s.w, s.list, s.iota = s.z[:V], s.w[:V], s.list[:V], s.iota[:V]
	if k := min(s.p.TopK, V); cap(s.topk) < k {
		s.topk = make([]int32, k)
	}
}

// argmax returns the index of the largest value, the lowest on ties (0 if
// every value is −Inf). z holds no NaN.
func argmax(z []float32) int32 {
	best, bv := 0, z[0]
	for i, v := range z {
		if v > bv {
			best, bv = i, v
		}
	}
	return int32(best)
}

// weigh sets w[id] = exp32((z[id]−zmax)·invT), the unnormalised
// probability of each token (1 for the top one), and returns their sum,
// accumulated in float64 in four interleaved partial sums.
//
// The arithmetic is float32 throughout: z−zmax ≤ 0 may overflow to −Inf,
// which weighs 0 as it should, and invT ≤ MaxFloat32 keeps 0·invT = 0. The
// body of exp32 is repeated inline because it is too large for Go's inliner
// and the call, with the float64 detour it would invite, doubles the cost
// of this loop, the hottest of Next; TestWeigh holds the two bit-identical.
func weigh(w, z []float32, ids []int32, zmax, invT float32) float64 {
	var acc [4]float64
	for i, id := range ids {
		x := (z[id] - zmax) * invT
		var e float32
		if x >= expLo {
			k := float32(x*expLog2e) + expRound
			n := int32(math.Float32bits(k)) - expRoundInt
			nf := k - expRound
			r := x - float32(nf*expLn2Hi)
			r -= float32(nf * expLn2Lo)
			p := float32(expP0)
			p = float32(p*r) + expP1
			p = float32(p*r) + expP2
			p = float32(p*r) + expP3
			p = float32(p*r) + expP4
			p = float32(p*r) + expP5
			p = float32(p*float32(r*r)) + r + 1
			n1 := n >> 1
			e = float32(p*math.Float32frombits(uint32(n1+127)<<23)) * math.Float32frombits(uint32(n-n1+127)<<23)
		}
		w[id] = e
		acc[i&3] += float64(e)
	}
	return (acc[0] + acc[1]) + (acc[2] + acc[3])
}

// minP keeps, in place and in order, the ids whose weight is at least mp
// times the top weight, which is 1 (the top token has z = zmax), and returns
// them with their weight sum.
func minP(ids []int32, w []float32, mp float64) ([]int32, float64) {
	out := ids[:0]
	var total float64
	for _, id := range ids {
		if e := w[id]; float64(e) >= mp {
			out = append(out, id)
			total += float64(e)
		}
	}
	return out, total
}

// draw picks from ids with probability w[id]/total, where total is the sum
// of those weights and u a uniform draw in [0, 1): walking ids in the order
// given, the first whose running sum exceeds u·total. Zero-weight ids are never picked; if
// rounding leaves u·total at or past the final sum, the last id with a
// positive weight is returned.
func draw(ids []int32, w []float32, total, u float64) int32 {
	t := u * total
	var acc float64
	last := ids[0]
	for _, id := range ids {
		e := float64(w[id])
		if e == 0 {
			continue
		}
		acc += e
		last = id
		if t < acc {
			return id
		}
	}
	return last
}
