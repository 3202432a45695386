package kernels_test

import (
	"math"
	"testing"

	"github.com/moesys/moesys/kernel"
)

func TestAttention(t *testing.T) {
	run(t, bothActs, func(t *testing.T, b *backend) {
		r := newRand(10)
		for _, c := range []struct {
			T, S, H, G, Dh, pos0, window int
		}{
			{1, 1, 1, 1, 8, 0, 0},        // one key
			{5, 5, 2, 2, 32, 0, 0},       // prefill
			{1, 40, 4, 2, 64, 39, 0},     // decode, grouped KV
			{3, 70, 8, 2, 64, 67, 0},     // a few rows at an offset, 4 heads per KV head
			{6, 50, 4, 4, 80, 44, 8},     // sliding window, Dh not a multiple of 32
			{1, 50, 2, 1, 64, 49, 16},    // window in decode
			{4, 33, 2, 1, 160, 29, 0},    // Dh > 128: two lanes per key
			{2, 20, 2, 2, 256, 18, 5},    // the largest head dim
			{1, 1100, 2, 1, 64, 1099, 0}, // split-K
			{2, 900, 3, 3, 48, 898, 600}, // split-K with a window
			{9, 9, 16, 1, 16, 0, 0},      // many heads per KV head: several query blocks
		} {
			qd, kd := c.H*c.Dh, c.G*c.Dh
			q := randF32(r, c.T*qd, 1)
			k := roundTo(b.k.Act(), randF32(r, c.S*kd, 1))
			v := roundTo(b.k.Act(), randF32(r, c.S*kd, 1))
			scale := float32(1 / math.Sqrt(float64(c.Dh)))
			want := make([]float32, c.T*qd)
			kernel.AttentionRef(want, q, k, v, c.T, c.S, c.H, c.G, c.Dh, c.pos0, c.window, scale)
			out := b.buf(4 * c.T * qd)
			if err := b.k.Attention(b.s, out, b.f32(q), b.act(k), b.act(v), c.T, c.S, c.H, c.G, c.Dh, c.pos0, c.window, scale); err != nil {
				t.Fatal(err)
			}
			near(t, name("T", c.T, "S", c.S, "H", c.H, "G", c.G, "Dh", c.Dh, "pos0", c.pos0, "window", c.window),
				b.readAct(out, c.T*qd), roundTo(b.k.Act(), want), actTol(b, 2e-5), 2e-6)
		}
	})
}
