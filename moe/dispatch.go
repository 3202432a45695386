package moe

import "fmt"

// Dispatch gathers token rows into routed order: routedND[r] = xTD[t] for
// the assignment t*K+k that routed row r holds. routedND is (R, D), xTD
// (T, D). It does not allocate.
func Dispatch(routedND, xTD []float32, p Plan, K, D int) {
	R := p.Rows()
	if len(routedND) < R*D {
		panic(fmt.Sprintf("moe.Dispatch: len(routed)=%d < R*D=%d", len(routedND), R*D))
	}
	for r := 0; r < R; r++ {
		t := int(p.RowSlot[r]) / K
		copy(routedND[r*D:(r+1)*D], xTD[t*D:(t+1)*D])
	}
}

// Combine adds each token's expert outputs, weighted, into yTD:
// yTD[t] += WeightsTK[t,k] * outND[SlotRow[t*K+k]] over the kept slots.
// Slots are summed in k order, so results do not depend on the plan's row
// order. It does not allocate.
func Combine(yTD, outND []float32, p Plan, r Routing, D int) {
	for t := 0; t < r.T; t++ {
		y := yTD[t*D : (t+1)*D]
		for k := 0; k < r.K; k++ {
			row := p.SlotRow[t*r.K+k]
			if row < 0 {
				continue
			}
			w := r.WeightsTK[t*r.K+k]
			o := outND[int(row)*D : (int(row)+1)*D]
			for i, v := range o {
				y[i] += w * v
			}
		}
	}
}
