package moe

import "fmt"

// Plan groups the T*K (token, slot) assignments of a Routing by expert so
// that each expert's rows are contiguous. It is plain data: tests print and
// compare it, and dispatch and combine consume the same value.
type Plan struct {
	E int
	K int // assignments per token (the routing's top-k)
	// Offsets (E+1): expert e's rows are [Offsets[e], Offsets[e+1]).
	Offsets []int
	// RowSlot (R): routed row r holds assignment RowSlot[r] = t*K + k.
	RowSlot []int32
	// SlotRow (T*K): assignment t*K+k sits at routed row SlotRow[...], or -1
	// if it was dropped for capacity (the token keeps its residual).
	SlotRow []int32
	// Dropped counts assignments over capacity.
	Dropped int
}

// Rows returns the number of routed rows R.
func (p *Plan) Rows() int { return p.Offsets[p.E] }

// NewPlan builds the plan for routing over E experts. capacity is the most
// rows an expert takes (Switch/GShard capacity, ceil(cf*T*K/E)); assignments
// beyond it, in token order, are dropped. capacity < 0 means dropless.
// Within an expert, rows keep token order (a stable counting sort).
func NewPlan(r Routing, E, capacity int) Plan {
	if capacity < 0 {
		return NewPlanLimits(r, E, nil)
	}
	limits := make([]int, E)
	for e := range limits {
		limits[e] = capacity
	}
	return NewPlanLimits(r, E, limits)
}

// NewPlanLimits is NewPlan with a capacity per expert: expert e takes at
// most limits[e] rows (nil: dropless). Under expert parallelism each rank
// routes a share of the batch, and a CapacityLimiter gives the rank's
// limits.
func NewPlanLimits(r Routing, E int, limits []int) Plan {
	if limits != nil && len(limits) != E {
		panic(fmt.Sprintf("moe.NewPlanLimits: %d limits for %d experts", len(limits), E))
	}
	n := r.T * r.K
	p := Plan{E: E, K: r.K, Offsets: make([]int, E+1), SlotRow: make([]int32, n)}
	counts := make([]int, E)
	for s := 0; s < n; s++ {
		e := int(r.IDsTK[s])
		if e < 0 || e >= E {
			panic(fmt.Sprintf("moe.NewPlan: expert id %d out of range [0, %d)", e, E))
		}
		if limits != nil && counts[e] >= limits[e] {
			p.SlotRow[s] = -1
			p.Dropped++
			continue
		}
		counts[e]++
		p.SlotRow[s] = int32(e) // temporarily the expert; rows assigned below
	}
	for e := 0; e < E; e++ {
		p.Offsets[e+1] = p.Offsets[e] + counts[e]
	}
	p.RowSlot = make([]int32, p.Offsets[E])
	next := append([]int(nil), p.Offsets[:E]...)
	for s := 0; s < n; s++ {
		if p.SlotRow[s] < 0 {
			continue
		}
		e := p.SlotRow[s]
		row := next[e]
		next[e]++
		p.SlotRow[s] = int32(row)
		p.RowSlot[row] = int32(s)
	}
	return p
}
