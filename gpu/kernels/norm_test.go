package kernels_test

import (
	"testing"

	"github.com/moesys/moesys/gpu/cuda"
	"github.com/moesys/moesys/kernel"
)

func TestRMSNorm(t *testing.T) {
	run(t, bothActs, func(t *testing.T, b *backend) {
		r := newRand(1)
		for _, c := range []struct{ rows, dim int }{{1, 8}, {3, 100}, {5, 256}, {2, 1030}, {7, 64}} {
			x := randF32(r, c.rows*c.dim, 2)
			w := randF32(r, c.dim, 1)
			want := make([]float32, len(x))
			kernel.RMSNorm(want, nil, x, w, c.rows, c.dim, 1e-6)
			xd, wd := b.f32(x), b.f32(w)
			// Act output.
			out := b.buf(4 * len(x))
			if err := b.k.RMSNorm(b.s, out, b.k.Act(), xd, wd, c.rows, c.dim, 1e-6); err != nil {
				t.Fatal(err)
			}
			near(t, "act "+name("rows", c.rows, "dim", c.dim), b.readAct(out, len(x)), roundTo(b.k.Act(), want), actTol(b, 2e-6), 1e-6)
			// f32 in place.
			if err := b.k.RMSNorm(b.s, xd, cuda.F32, xd, wd, c.rows, c.dim, 1e-6); err != nil {
				t.Fatal(err)
			}
			near(t, "in place "+name("rows", c.rows, "dim", c.dim), b.readF32(xd, len(x)), want, 2e-6, 1e-6)
		}
	})
}
