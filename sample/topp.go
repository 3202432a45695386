package sample

import (
	"math"
	"math/bits"
)

// Top-p without sorting the vocabulary.
//
// The nucleus is the shortest prefix of the tokens in rank order (see
// topk.go) whose weights sum to at least TopP·Z, Z the sum over the n tokens
// still in play. Sorting all n (152064 for Qwen) per token is the obvious
// method and the slow one. Instead:
//
//  1. Cutoff. Tokens with weight below c = (1−TopP)·Z/n hold less than
//     n·c = (1−TopP)·Z together, so the tokens at or above c hold more than
//     TopP·Z. They form a prefix of the rank order (weight is monotone in
//     the logit, up to exp32's last bit), hence contain the nucleus. Real logits put most of the
//     vocabulary far below c, so few tokens become candidates (about a
//     fifth of 152064 Gaussian logits of sd 3, far fewer on real ones); the
//     gather is one branch-free pass.
//  2. Weighted quickselect on the candidates (nth_element, with the
//     prefix mass instead of a count deciding which side to keep): partition
//     around a median-of-three pivot, keep the side where the running mass
//     crosses TopP·Z. Expected linear time; after 2·log₂ of the candidate
//     count rounds without finishing, the remaining range is heap-sorted, so
//     the worst case is O(c log c).
//  3. The nucleus is returned in the order the selection left it, which
//     depends only on the inputs; draw does not need it sorted.
//
// So a token outside the candidates costs one compare beyond its exp, and
// nothing is sorted but ranges of at most smallSelect tokens (and, in the
// rare fallback, the remaining range).

// smallSelect is the range size (tokens) below which selection switches
// from partitioning to insertion sort: partition overhead beats it there.
const smallSelect = 16

// nucleus sets the weights of keep (ascending ids) in s.w and returns the
// top-p survivors among them, in selection order, with their weight sum.
// zmax is the top logit and invT 1/Temperature. It uses s.list as scratch
// and returns part of it.
func (s *Sampler) nucleus(keep []int32, zmax, invT float32) ([]int32, float64) {
	z, w := s.z, s.w
	p := s.p.TopP
	Z := weigh(w, z, keep, zmax, invT)

	// The cutoff in float32, rounded down so it stays conservative.
	c := (1 - p) * Z / float64(len(keep))
	c32 := float32(c)
	if float64(c32) > c {
		c32 = math.Nextafter32(c32, 0)
	}
	// Branch-free gather: always write, advance only on a keep. A branch
	// here mispredicts on a good share of the vocabulary and costs four
	// times as much.
	cand := s.list[:len(keep)]
	m := 0
	for _, id := range keep {
		cand[m] = id
		if w[id] >= c32 {
			m++
		}
	}
	cand = cand[:m]

	out := cand[:selectNucleus(cand, z, w, p*Z)]
	var total float64
	for _, id := range out {
		total += float64(w[id])
	}
	return out, total
}

// selectNucleus reorders cand so that cand[:n] are its n top-ranked tokens
// for the smallest n whose weight sum reaches target, with the lowest-ranked
// of them at cand[n−1], and returns n (len(cand) if rounding leaves the
// whole sum short of target). cand must be non-empty.
func selectNucleus(cand []int32, z, w []float32, target float64) int {
	lo, hi := 0, len(cand)
	acc := 0.0 // weight of cand[:lo], every one of which ranks above cand[lo:hi]
	limit := 2 * bits.Len(uint(len(cand)))
	for round := 0; ; round++ {
		if hi-lo <= smallSelect || round > limit {
			sortRank(cand[lo:hi], z)
			for i := lo; i < hi; i++ {
				acc += float64(w[cand[i]])
				if acc >= target {
					return i + 1
				}
			}
			return hi
		}

		// Median of three to cand[hi−1] as the pivot.
		mid := lo + (hi-lo)/2
		a, b, c := lo, mid, hi-1
		if better(z, cand[b], cand[a]) {
			a, b = b, a
		}
		if better(z, cand[c], cand[b]) {
			b, c = c, b
			if better(z, cand[b], cand[a]) {
				a, b = b, a
			}
		}
		cand[b], cand[hi-1] = cand[hi-1], cand[b]
		pv := cand[hi-1]

		// Lomuto partition: tokens ranking above the pivot to the front.
		st := lo
		var mass float64
		for i := lo; i < hi-1; i++ {
			if id := cand[i]; better(z, id, pv) {
				cand[i], cand[st] = cand[st], id
				mass += float64(w[id])
				st++
			}
		}
		cand[hi-1], cand[st] = cand[st], pv

		switch {
		case acc+mass >= target:
			hi = st // the boundary ranks above the pivot
		case acc+mass+float64(w[pv]) >= target:
			return st + 1 // the pivot is the boundary
		default:
			acc += mass + float64(w[pv])
			lo = st + 1
		}
	}
}

// sortRank sorts ids by rank, best first: insertion sort for short slices,
// heapsort otherwise (no allocation, O(n log n) worst case).
func sortRank(ids []int32, z []float32) {
	n := len(ids)
	if n <= smallSelect {
		for i := 1; i < n; i++ {
			for j := i; j > 0 && better(z, ids[j], ids[j-1]); j-- {
				ids[j], ids[j-1] = ids[j-1], ids[j]
			}
		}
		return
	}
	// A heap with the worst-ranked token at the root; popping it to the end
	// repeatedly leaves the slice best first.
	for i := n/2 - 1; i >= 0; i-- {
		siftWorst(ids, z, i)
	}
	for end := n - 1; end > 0; end-- {
		ids[0], ids[end] = ids[end], ids[0]
		siftWorst(ids[:end], z, 0)
	}
}
