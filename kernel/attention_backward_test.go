package kernel

import (
	"fmt"
	"math"
	"testing"
)

// TestAttnProbRowsMatchesExp holds attnProbRows (the probability recompute
// of AttentionBackward) to e^(s − lse) in float64 on the visible columns and
// to exact zeros elsewhere, at every tier, on tiles below and above
// nativeMinElems with row lengths that leave vector tails.
func TestAttnProbRowsMatchesExp(t *testing.T) {
	type tile struct{ rows, n, diag, window int }
	cases := []tile{
		{1, 1, 0, 0},
		{3, 5, 2, 0},
		{64, 64, 0, 0},      // square causal tile
		{64, 130, 66, 0},    // keys before the tile (cached prefix)
		{17, 301, 284, 0},   // tail of 13 (mod 16) and 5 (mod 8)
		{64, 100, 36, 20},   // sliding window
		{40, 77, 37, 1},     // window 1: only the diagonal
		{20, 263, -5, 0},    // first rows see nothing
		{33, 1000, 900, 64}, // window narrower than the tile
	}
	rng := newRNG(740)
	for range 4 {
		rows, n := 1+rng.IntN(64), 1+rng.IntN(700)
		cases = append(cases, tile{rows, n, rng.IntN(n+1) - rows/2, rng.IntN(3) * rng.IntN(n+1)})
	}
	forLevels(t, func(t *testing.T) {
		for i, c := range cases {
			t.Run(fmt.Sprintf("%dx%d_diag%d_w%d", c.rows, c.n, c.diag, c.window), func(t *testing.T) {
				r := newRNG(750 + uint64(i))
				s := randSlice(r, c.rows*c.n)
				lse := randSlice(r, c.rows)
				for j := range s {
					s[j] *= 8
				}
				for j := range lse {
					lse[j] = 2 + 2*lse[j]
				}
				p := clone32(s)
				attnProbRows(p, lse, c.rows, c.n, c.diag, c.window)
				for row := 0; row < c.rows; row++ {
					for j := 0; j < c.n; j++ {
						visible := j <= c.diag+row && (c.window <= 0 || j > c.diag+row-c.window)
						want := float32(0)
						if visible {
							want = float32(math.Exp(float64(s[row*c.n+j] - lse[row])))
						}
						if got := p[row*c.n+j]; !visible && got != 0 || visible && !closeElem(got, want) {
							t.Fatalf("p[%d][%d] = %g, want %g (visible %v)", row, j, got, want, visible)
						}
					}
				}
			})
		}
	})
}

// BenchmarkAttnProbRows runs one AttentionBackward tile, 64 query rows
// against 1024 keys (causal), at each tier.
func BenchmarkAttnProbRows(b *testing.B) {
	const rows, n = attnBwdRows, 1024
	rng := newRNG(1)
	s, lse := randSlice(rng, rows*n), randSlice(rng, rows)
	p := make([]float32, rows*n)
	for _, l := range levels() {
		b.Run(l.String(), func(b *testing.B) {
			prev := SetLevel(l)
			defer SetLevel(prev)
			b.ReportAllocs()
			b.SetBytes(8 * rows * n) // read and write p (the copy from s included)
			for b.Loop() {
				copy(p, s)
				attnProbRows(p, lse, rows, n, n-rows, 0)
			}
		})
	}
}
