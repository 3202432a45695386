package model

import (
	"math/rand/v2"
	"testing"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/tensor"
)

// TestBF16ProductsNearF32: with bf16 products the loss and every gradient
// stay within bf16 rounding of the f32 computation on the same
// (bf16-representable) weights, and SyncBF16 follows weight updates.
func TestBF16ProductsNearF32(t *testing.T) {
	if kernel.CurrentLevel() < kernel.LevelAVX512BF16 {
		t.Skip("no bf16 dot product on this CPU: SetBF16Products is a no-op (tested below)")
	}
	c := tinyConfig()
	c.SharedFFN, c.PregateDist = 3, 1
	const B, T = 2, 6
	mk := func() *Net {
		n, err := NewNet(c, T)
		if err != nil {
			t.Fatal(err)
		}
		n.Init(3, 0.3)
		for _, p := range n.Params {
			for i, v := range p.W {
				p.W[i] = tensor.BF16ToF32(tensor.F32ToBF16(v))
			}
		}
		return n
	}
	f32, bf := mk(), mk()
	if !bf.SetBF16Products(true) {
		t.Fatal("SetBF16Products refused on a bf16 CPU")
	}
	rng := rand.New(rand.NewPCG(8, 9))
	ids, tgt := make([]int32, B*T), make([]int32, B*T)
	for i := range ids {
		ids[i], tgt[i] = int32(rng.IntN(c.V)), int32(rng.IntN(c.V))
	}
	lf, lb := fwd(t, f32, ids, tgt, B, T, 0), fwd(t, bf, ids, tgt, B, T, 0)
	if d := lb.Total - lf.Total; d > 1e-2*lf.Total || d < -1e-2*lf.Total {
		t.Fatalf("bf16 loss %g, f32 %g", lb.Total, lf.Total)
	}
	if lb.Total == lf.Total {
		t.Fatal("bf16 products gave the f32 loss exactly: are they used?")
	}
	bwd(t, f32, 1)
	bwd(t, bf, 1)
	for i, p := range f32.Params {
		if e := relErr(bf.Params[i].G, p.G); !(e < 5e-2) {
			t.Errorf("%s: bf16 gradient rel err %.3g", p.Name, e)
		}
	}
	// After an update, SyncBF16 makes the products see the new weights.
	for _, n := range []*Net{f32, bf} {
		for _, p := range n.Params {
			for i := range p.W {
				p.W[i] = tensor.BF16ToF32(tensor.F32ToBF16(p.W[i] * 1.5))
			}
		}
	}
	bf.SyncBF16()
	lf, lb = fwd(t, f32, ids, tgt, B, T, 0), fwd(t, bf, ids, tgt, B, T, 0)
	if d := lb.Total - lf.Total; d > 1e-2*lf.Total || d < -1e-2*lf.Total {
		t.Fatalf("after an update: bf16 loss %g, f32 %g", lb.Total, lf.Total)
	}
}

// TestBF16ProductsOffWithoutBF16Dot: below avx512bf16 the switch refuses
// and the model keeps f32 products.
func TestBF16ProductsOffWithoutBF16Dot(t *testing.T) {
	old := kernel.SetLevel(kernel.LevelAVX2)
	defer kernel.SetLevel(old)
	n, err := NewNet(tinyConfig(), 4)
	if err != nil {
		t.Fatal(err)
	}
	if n.SetBF16Products(true) || n.head.B != nil {
		t.Fatal("bf16 products enabled without a bf16 dot product")
	}
}
