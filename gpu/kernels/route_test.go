package kernels_test

import (
	"math"
	"testing"

	"github.com/moesys/moesys/moe"
)

func TestSoftmaxTopK(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	run(t, bothActs[:1], func(t *testing.T, b *backend) {
		r := newRand(9)
		type tc struct {
			name    string
			T, E, K int
			norm    bool
			logits  []float32
		}
		var cases []tc
		for _, c := range []struct {
			T, E, K int
			norm    bool
		}{{7, 8, 2, true}, {5, 64, 8, false}, {4, 60, 4, true}, {3, 128, 1, false}, {2, 6, 6, true}, {9, 1000, 3, true}} {
			cases = append(cases, tc{name("T", c.T, "E", c.E, "K", c.K), c.T, c.E, c.K, c.norm, randF32(r, c.T*c.E, 2)})
		}
		// Ties: small integer logits, many equal probabilities; ties go
		// to the lower id.
		ties := make([]float32, 6*40)
		for i := range ties {
			ties[i] = float32(r.IntN(3))
		}
		cases = append(cases, tc{"ties", 6, 40, 5, true, ties})
		// Rows with NaN, +Inf, all −Inf (all NaN out), and some −Inf.
		special := []float32{
			1, nan, 2, 0, 0,
			1, inf, 2, 0, 0,
			-inf, -inf, -inf, -inf, -inf,
			-inf, 3, -inf, 1, -inf,
			0, 0, 0, 0, 0,
		}
		cases = append(cases, tc{"special", 5, 5, 3, true, special}, tc{"special-nonorm", 5, 5, 3, false, special})
		for _, c := range cases {
			want := moe.Router{K: c.K, Normalize: c.norm}.Route(c.logits, c.T, c.E)
			ids, w := b.buf(4*c.T*c.K), b.buf(4*c.T*c.K)
			if err := b.k.SoftmaxTopK(b.s, ids, w, b.f32(c.logits), c.T, c.E, c.K, c.norm); err != nil {
				t.Fatal(err)
			}
			gotIDs := b.readI32(ids, c.T*c.K)
			for i, id := range gotIDs {
				if id != want.IDsTK[i] {
					t.Errorf("%s: ids[%d] = %d, want %d (row %v)", c.name, i, id, want.IDsTK[i], gotIDs[i/c.K*c.K:i/c.K*c.K+c.K])
					break
				}
			}
			near(t, c.name+" weights", b.readF32(w, c.T*c.K), want.WeightsTK, 1e-6, 0)
		}
	})
}
