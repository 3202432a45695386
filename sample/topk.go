package sample

import "slices"

// Token rank: a token ranks above another if its logit is larger, or equal
// with a lower id. The order is total (ids are distinct), so top-k, the
// top-p prefix and every selection below are well defined on ties, and the
// argmax (lowest id among the largest) always ranks first.

// better reports whether token a ranks above token b.
func better(z []float32, a, b int32) bool {
	return z[a] > z[b] || (z[a] == z[b] && a < b)
}

// topK fills heap (len K, 1 ≤ K < len(z)) with the K top-ranked token ids of
// z and returns it sorted ascending by id.
//
// Method: one pass over the V logits with a size-K min-heap whose root is
// the worst token kept. A token enters only if its logit beats the root's
// (ids arrive ascending, so an equal logit ranks lower and never enters).
// Cost O(V + m·log K) for m entries, and m is about K·ln(V/K) on logits in
// random order, so for the usual K (20–100) it is one compare per token
// rather than a sort of V entries; then O(K log K) to sort the kept ids.
func topK(heap []int32, z []float32) []int32 {
	k := len(heap)
	for i := range heap {
		heap[i] = int32(i)
	}
	for i := k/2 - 1; i >= 0; i-- {
		siftWorst(heap, z, i)
	}
	root := z[heap[0]]
	for i := k; i < len(z); i++ {
		if z[i] > root {
			heap[0] = int32(i)
			siftWorst(heap, z, 0)
			root = z[heap[0]]
		}
	}
	slices.Sort(heap)
	return heap
}

// siftWorst restores, below position i, the heap order that puts the
// lowest-ranked token at the root.
func siftWorst(h []int32, z []float32, i int) {
	n := len(h)
	for {
		c := 2*i + 1
		if c >= n {
			return
		}
		if c+1 < n && better(z, h[c], h[c+1]) {
			c++ // the right child ranks lower
		}
		if !better(z, h[i], h[c]) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}
