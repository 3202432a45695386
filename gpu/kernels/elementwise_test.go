package kernels_test

import (
	"math"
	"testing"

	"github.com/moesys/moesys/gpu/cuda"
	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/moe"
	"github.com/moesys/moesys/tensor"
)

func TestEmbed(t *testing.T) {
	run(t, bothActs[:1], func(t *testing.T, b *backend) {
		r := newRand(3)
		V, D, T := 11, 70, 6
		table := randF32(r, V*D, 1)
		ids := []int32{3, 0, 10, 3, -1, 12}
		for _, wt := range []cuda.DataType{cuda.F32, cuda.BF16} {
			tab := roundTo(wt, table)
			want := make([]float32, T*D)
			kernel.Embedding(want[:4*D], tab, ids[:4], 4, D) // ids 4, 5 are out of range: zero rows
			out := b.buf(4 * T * D)
			if err := b.k.EmbedChecked(b.s, out, b.typed(wt, table), wt, V, b.i32(ids), T, D); err != nil {
				t.Fatal(err)
			}
			exact(t, "EmbedChecked "+wt.String(), b.readF32(out, T*D), want)
			out = b.buf(4 * 4 * D)
			if err := b.k.Embed(b.s, out, b.typed(wt, table), wt, b.i32(ids[:5]), 4, D); err != nil {
				t.Fatal(err)
			}
			exact(t, "Embed "+wt.String(), b.readF32(out, 4*D), want[:4*D])
		}
	})
}

func TestAddBiasSwiGLU(t *testing.T) {
	run(t, bothActs, func(t *testing.T, b *backend) {
		r := newRand(4)
		T, n := 5, 300
		y, bias := randF32(r, T*n, 1), randF32(r, n, 1)
		want := append([]float32(nil), y...)
		for i := range want {
			want[i] += bias[i%n]
		}
		yd := b.f32(y)
		if err := b.k.AddBias(b.s, yd, b.f32(bias), T, n); err != nil {
			t.Fatal(err)
		}
		exact(t, "AddBias", b.readF32(yd, T*n), want)

		g, u := randF32(r, T*n, 3), randF32(r, T*n, 1)
		g[0], g[1] = -100, 100 // exp under- and overflow ends
		sw := make([]float32, T*n)
		kernel.SwiGLURef(sw, g, u)
		out := b.buf(4 * T * n)
		if err := b.k.SwiGLU(b.s, out, b.f32(g), b.f32(u), T, n); err != nil {
			t.Fatal(err)
		}
		near(t, "SwiGLU", b.readAct(out, T*n), roundTo(b.k.Act(), sw), actTol(b, 1e-6), 1e-30)
	})
}

func TestKVAppendGather(t *testing.T) {
	run(t, bothActs, func(t *testing.T, b *backend) {
		r := newRand(5)
		maxT, width, at, n := 9, 48, 3, 4
		rows := randF32(r, n*width, 1)
		cache := b.buf(4 * maxT * width)
		if err := b.k.KVAppend(b.s, cache, b.f32(rows), at, n, width); err != nil {
			t.Fatal(err)
		}
		want := make([]float32, maxT*width)
		copy(want[at*width:], roundTo(b.k.Act(), rows))
		exact(t, "KVAppend", b.readAct(cache, maxT*width), want)

		T, D := 4, 33
		x := roundTo(b.k.Act(), randF32(r, T*D, 1))
		src := []int32{2, 0, 0, 3, 1, -1, 7}
		R := len(src)
		gw := make([]float32, R*D)
		for i, s := range src {
			if s >= 0 && int(s) < T {
				copy(gw[i*D:(i+1)*D], x[int(s)*D:])
			}
		}
		out := b.buf(4 * R * D)
		if err := b.k.GatherChecked(b.s, out, b.act(x), b.i32(src), R, D, T); err != nil {
			t.Fatal(err)
		}
		exact(t, "GatherChecked", b.readAct(out, R*D), gw)
		if err := b.k.Gather(b.s, out, b.act(x), b.i32(src[:6]), 6, D); err != nil {
			t.Fatal(err)
		}
		exact(t, "Gather", b.readAct(out, 6*D), gw[:6*D])
	})
}

// TestDispatchCombine routes random logits, plans with a capacity that
// drops slots, gathers (Dispatch), fakes the experts' outputs and combines,
// against moe.Dispatch and moe.Combine bit for bit.
func TestDispatchCombine(t *testing.T) {
	run(t, bothActs, func(t *testing.T, b *backend) {
		r := newRand(6)
		T, E, K, D := 9, 5, 2, 40
		routing := moe.Router{K: K, Normalize: true}.Route(randF32(r, T*E, 1), T, E)
		plan := moe.NewPlan(routing, E, 3)
		if plan.Dropped == 0 {
			t.Fatal("test setup: no slot dropped")
		}
		R := plan.Rows()
		x := roundTo(b.k.Act(), randF32(r, T*D, 1))
		routed := make([]float32, R*D)
		moe.Dispatch(routed, x, plan, K, D)
		src := make([]int32, R)
		for i, s := range plan.RowSlot {
			src[i] = s / int32(K)
		}
		rd := b.buf(4 * R * D)
		if err := b.k.Gather(b.s, rd, b.act(x), b.i32(src), R, D); err != nil {
			t.Fatal(err)
		}
		exact(t, "dispatch", b.readAct(rd, R*D), routed)

		y := randF32(r, R*D, 1)
		base := randF32(r, T*D, 1)
		want := append([]float32(nil), base...)
		moe.Combine(want, y, plan, routing, D)
		xd := b.f32(base)
		if err := b.k.Combine(b.s, xd, b.f32(y), b.i32(plan.SlotRow), b.f32(routing.WeightsTK), T, K, D); err != nil {
			t.Fatal(err)
		}
		exact(t, "combine", b.readF32(xd, T*D), want)
	})
}

func TestSigmoidGateAdd(t *testing.T) {
	run(t, bothActs[:1], func(t *testing.T, b *backend) {
		r := newRand(7)
		T, D := 4, 77
		x, y, gate := randF32(r, T*D, 1), randF32(r, T*D, 1), randF32(r, T, 3)
		want := append([]float32(nil), x...)
		for t := 0; t < T; t++ { // model's shared-expert add
			g := float32(1 / (1 + math.Exp(-float64(gate[t]))))
			for i := 0; i < D; i++ {
				want[t*D+i] += g * y[t*D+i]
			}
		}
		xd := b.f32(x)
		if err := b.k.SigmoidGateAdd(b.s, xd, b.f32(y), b.f32(gate), T, D); err != nil {
			t.Fatal(err)
		}
		exact(t, "SigmoidGateAdd", b.readF32(xd, T*D), want)
	})
}

func TestCast(t *testing.T) {
	run(t, bothActs[:1], func(t *testing.T, b *backend) {
		v := randF32(newRand(8), 1000, 10)
		special := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
			math.Float32frombits(0x3f808000), math.Float32frombits(0x3f818000), // ties to even, down and up
			math.Float32frombits(0x7f7fffff), math.Float32frombits(1), math.Float32frombits(0xff800001)}
		v = append(special, v...)
		n := len(v)
		bf := b.buf(2 * n)
		if err := b.k.Cast(b.s, bf, cuda.BF16, b.f32(v), cuda.F32, n); err != nil {
			t.Fatal(err)
		}
		b.syncOK()
		raw := make([]byte, 2*n)
		b.read(raw, bf)
		for i, x := range v {
			got, want := uint16(raw[2*i])|uint16(raw[2*i+1])<<8, tensor.F32ToBF16(x)
			if got != want {
				t.Errorf("f32→bf16 %v (%#x): %#x, want %#x", x, math.Float32bits(x), got, want)
			}
		}
		back := b.buf(4 * n)
		if err := b.k.Cast(b.s, back, cuda.F32, bf, cuda.BF16, n); err != nil {
			t.Fatal(err)
		}
		exact(t, "bf16→f32", b.readF32(back, n), roundTo(cuda.BF16, v))
		same := b.buf(4 * n)
		if err := b.k.Cast(b.s, same, cuda.F32, back, cuda.F32, n); err != nil {
			t.Fatal(err)
		}
		exact(t, "f32→f32", b.readF32(same, n), roundTo(cuda.BF16, v))
		bf2 := b.buf(2 * n)
		if err := b.k.Cast(b.s, bf2, cuda.BF16, bf, cuda.BF16, n); err != nil {
			t.Fatal(err)
		}
		b.read(raw, bf2)
		for i, x := range v {
			if got := uint16(raw[2*i]) | uint16(raw[2*i+1])<<8; got != tensor.F32ToBF16(x) {
				t.Errorf("bf16→bf16 [%d]: %#x", i, got)
			}
		}
	})
}
