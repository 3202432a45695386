package moe

import (
	"math/rand/v2"
	"testing"
)

// TestDispatchCombineIdentity: with combine weights summing to 1 per token
// and no dropping, combining the dispatched rows gives back the input.
func TestDispatchCombineIdentity(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct{ T, E, K, D int }{{1, 1, 1, 3}, {9, 4, 2, 5}, {33, 8, 3, 7}, {5, 16, 8, 2}} {
		logits := randVec(rng, c.T*c.E, 2)
		r := Router{K: c.K, Normalize: true}.Route(logits, c.T, c.E)
		p := NewPlan(r, c.E, -1)
		if p.Rows() != c.T*c.K || p.Dropped != 0 {
			t.Fatalf("%+v: %d rows, %d dropped", c, p.Rows(), p.Dropped)
		}
		x := randVec(rng, c.T*c.D, 1)
		routed := make([]float32, p.Rows()*c.D)
		Dispatch(routed, x, p, c.K, c.D)
		y := make([]float32, c.T*c.D)
		Combine(y, routed, p, r, c.D)
		for i := range x {
			if d := y[i] - x[i]; d > 1e-5 || d < -1e-5 {
				t.Fatalf("%+v: y[%d] = %g, x %g", c, i, y[i], x[i])
			}
		}
		// Rows of each expert are contiguous and hold that expert's slots.
		for e := 0; e < c.E; e++ {
			for row := p.Offsets[e]; row < p.Offsets[e+1]; row++ {
				if int(r.IDsTK[p.RowSlot[row]]) != e {
					t.Fatalf("%+v: row %d in expert %d's group holds a slot of expert %d", c, row, e, r.IDsTK[p.RowSlot[row]])
				}
			}
		}
	}
}

func TestPlanCapacityDropsInTokenOrder(t *testing.T) {
	// Every token picks expert 0 first: capacity 2 keeps tokens 0 and 1.
	r := Routing{T: 4, K: 1, IDsTK: []int32{0, 0, 0, 0}, WeightsTK: []float32{1, 1, 1, 1}}
	p := NewPlan(r, 2, 2)
	if p.Dropped != 2 || p.SlotRow[0] != 0 || p.SlotRow[1] != 1 || p.SlotRow[2] != -1 || p.SlotRow[3] != -1 {
		t.Fatalf("plan %+v", p)
	}
}
