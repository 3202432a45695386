package sample

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// byRank returns 0..V−1 sorted by rank (larger z first, lower id on ties).
func byRank(z []float32) []int32 {
	ids := make([]int32, len(z))
	for i := range ids {
		ids[i] = int32(i)
	}
	slices.SortStableFunc(ids, func(a, b int32) int {
		switch {
		case z[a] > z[b]:
			return -1
		case z[a] < z[b]:
			return 1
		}
		return 0
	})
	return ids
}

// topK equals "sort everything by rank, take k", ties and −Inf included.
func TestTopKMatchesSort(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 300 {
		V := 2 + r.IntN(300)
		k := 1 + r.IntN(V-1)
		z := make([]float32, V)
		for i := range z {
			switch r.IntN(5) {
			case 0:
				z[i] = float32(math.Inf(-1))
			case 1:
				z[i] = float32(r.IntN(3)) // ties
			default:
				z[i] = float32(r.NormFloat64())
			}
		}
		want := slices.Clone(byRank(z)[:k])
		slices.Sort(want)
		got := topK(make([]int32, k), z)
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d V=%d k=%d: got %v, want %v", trial, V, k, got, want)
		}
	}
}
