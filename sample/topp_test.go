package sample

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestSortRank(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 2, 15, 16, 17, 100, 1000} {
		z := make([]float32, n)
		for i := range z {
			z[i] = float32(r.IntN(10)) // many ties: the id decides
		}
		ids := byRank(z)
		got := slices.Clone(ids)
		r.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
		sortRank(got, z)
		if !slices.Equal(got, ids) {
			t.Errorf("n=%d: got %v, want %v", n, got, ids)
		}
	}
}

// selectNucleus finds the same prefix as walking the fully sorted order, on
// peaked, flat and tied weight vectors of many sizes.
func TestSelectNucleus(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for trial := range 500 {
		n := 1 + r.IntN(2000)
		z := make([]float32, n)
		w := make([]float32, n)
		for i := range z {
			switch trial % 3 {
			case 0:
				z[i] = float32(r.NormFloat64() * 3)
			case 1:
				z[i] = 0 // flat: ids decide
			case 2:
				z[i] = float32(r.IntN(4))
			}
		}
		var Z float64
		zmax := z[byRank(z)[0]]
		for i := range w {
			w[i] = float32(math.Exp(float64(z[i] - zmax))) // as weigh computes them
			Z += float64(w[i])
		}
		target := r.Float64() * Z
		order := byRank(z)
		wantN, acc := n, 0.0
		for i, id := range order {
			acc += float64(w[id])
			if acc >= target {
				wantN = i + 1
				break
			}
		}
		cand := make([]int32, n)
		for i := range cand {
			cand[i] = int32(i)
		}
		r.Shuffle(n, func(i, j int) { cand[i], cand[j] = cand[j], cand[i] })
		gotN := selectNucleus(cand, z, w, target)
		if gotN != wantN {
			t.Fatalf("trial %d n=%d: nucleus size %d, want %d", trial, n, gotN, wantN)
		}
		got := slices.Clone(cand[:gotN])
		slices.Sort(got)
		want := slices.Clone(order[:wantN])
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d: nucleus %v, want %v", trial, got, want)
		}
		if cand[gotN-1] != order[wantN-1] {
			t.Fatalf("trial %d: boundary %d, want %d", trial, cand[gotN-1], order[wantN-1])
		}
	}
}
