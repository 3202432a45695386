package kernels_test

import (
	"testing"

	"github.com/moesys/moesys/kernel"
)

func TestRoPE(t *testing.T) {
	run(t, bothActs[:1], func(t *testing.T, b *backend) {
		r := newRand(2)
		for _, c := range []struct{ T, H, Dh, rot, maxPos int }{
			{1, 1, 8, 8, 4}, {3, 4, 64, 64, 16}, {5, 2, 80, 32, 40}, {2, 3, 128, 64, 9},
		} {
			cos, sin := make([]float32, c.maxPos*c.rot/2), make([]float32, c.maxPos*c.rot/2)
			kernel.RoPEFreqs(cos, sin, c.maxPos, c.rot, 10000)
			x := randF32(r, c.T*c.H*c.Dh, 1)
			pos := make([]int32, c.T)
			for i := range pos {
				pos[i] = int32(r.IntN(c.maxPos))
			}
			want := append([]float32(nil), x...)
			kernel.RoPE(want, pos, c.T, c.H, c.Dh, c.rot, cos, sin)
			xd := b.f32(x)
			if err := b.k.RoPE(b.s, xd, b.i32(pos), c.T, c.H, c.Dh, c.rot, b.f32(cos), b.f32(sin)); err != nil {
				t.Fatal(err)
			}
			near(t, name("T", c.T, "H", c.H, "Dh", c.Dh, "rot", c.rot), b.readF32(xd, len(x)), want, 1e-6, 1e-6)
		}
		// Checked: a position past the tables leaves its row alone.
		cos, sin := make([]float32, 4*4), make([]float32, 4*4)
		kernel.RoPEFreqs(cos, sin, 4, 8, 10000)
		x := randF32(r, 2*8, 1)
		xd := b.f32(x)
		if err := b.k.RoPEChecked(b.s, xd, b.i32([]int32{9, 2}), 2, 1, 8, 8, b.f32(cos), b.f32(sin), 4); err != nil {
			t.Fatal(err)
		}
		want := append([]float32(nil), x...)
		kernel.RoPE(want[8:], []int32{2}, 1, 1, 8, 8, cos, sin)
		near(t, "checked", b.readF32(xd, len(x)), want, 1e-6, 1e-6)
	})
}
