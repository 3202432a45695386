package kernel

import (
	"fmt"
	"testing"

	"github.com/moesys/moesys/tensor"
)

func TestEmbeddingMatchesRef(t *testing.T) {
	for i, c := range []struct {
		name    string
		T, V, D int
	}{
		{"1x1x1", 1, 1, 1},
		{"3x5x3", 3, 5, 3},
		{"17x7x17", 17, 7, 17}, // more tokens than rows: repeated ids
		{"1000x64x33", 1000, 64, 33},
		{"4x50304x64", 4, 50304, 64},
	} {
		t.Run(c.name, func(t *testing.T) {
			rng := newRNG(1000 + uint64(i))
			T, V, D := c.T, c.V, c.D
			table := randSlice(rng, V*D)
			ids := make([]int32, T)
			for j := range ids {
				ids[j] = int32(rng.IntN(V))
			}
			ids[T-1] = int32(V - 1) // the last row is reachable

			out, ref := nanSlice(T*D), nanSlice(T*D)
			Embedding(out, table, ids, T, D)
			EmbeddingRef(ref, table, ids, T, D)
			checkRel(t, "out", out, ref, 0)

			tb := make([]uint16, V*D)
			tensor.F32SliceToBF16(tb, table)
			EmbeddingBF16(out, tb, ids, T, D)
			EmbeddingBF16Ref(ref, tb, ids, T, D)
			checkRel(t, "bf16", out, ref, 0)

			dout, dt0 := randSlice(rng, T*D), randSlice(rng, V*D)
			dt, dtRef := clone32(dt0), clone32(dt0)
			EmbeddingBackward(dt, dout, ids, T, D)
			EmbeddingBackwardRef(dtRef, dout, ids, T, D)
			checkRel(t, "dtable", dt, dtRef, 1e-6)
		})
	}
}

// TestEmbeddingGradFD: the loss Σ out·dout is linear in the table and the
// gather copies exactly, so central differences with h = 0.5 are exact up to
// the float64 sum.
func TestEmbeddingGradFD(t *testing.T) {
	const T, V, D = 5, 4, 3
	rng := newRNG(1050)
	table, dout := randSlice(rng, V*D), randSlice(rng, T*D)
	ids := []int32{2, 0, 2, 3, 2} // row 1 unused: zero gradient
	out := make([]float32, T*D)
	table64 := make([]float64, V*D)
	for i, v := range table {
		table64[i] = float64(v)
	}
	dout64 := make([]float64, T*D)
	for i, v := range dout {
		dout64[i] = float64(v)
	}
	loss := func() float64 {
		for i, v := range table64 {
			table[i] = float32(v)
		}
		Embedding(out, table, ids, T, D)
		s := 0.0
		for i, v := range out {
			s += float64(v) * dout64[i]
		}
		return s
	}
	dt := make([]float32, V*D)
	EmbeddingBackward(dt, dout, ids, T, D)
	dt64 := make([]float64, V*D)
	for i, v := range dt {
		dt64[i] = float64(v)
	}
	checkGrad(t, "dtable", dt64, fdGrad(table64, 0.5, loss), 1e-6)
}

func TestEmbeddingPanics(t *testing.T) {
	table := make([]float32, 4*3) // V=4, D=3
	out := make([]float32, 2*3)
	mustPanic(t, "id = V", func() { Embedding(out, table, []int32{0, 4}, 2, 3) })
	mustPanic(t, "negative id", func() { Embedding(out, table, []int32{-1, 0}, 2, 3) })
	mustPanic(t, "short ids", func() { Embedding(out, table, []int32{0}, 2, 3) })
	mustPanic(t, "short out", func() { Embedding(out[:5], table, []int32{0, 1}, 2, 3) })
	mustPanic(t, "bf16 id = V", func() { EmbeddingBF16(out, make([]uint16, 12), []int32{4, 0}, 2, 3) })
	mustPanic(t, "backward id = V", func() { EmbeddingBackward(table, out, []int32{0, 4}, 2, 3) })
}

func BenchmarkEmbedding(b *testing.B) {
	const T, V, D = 512, 50304, 2048
	rng := newRNG(1)
	table := randSlice(rng, V*D)
	tb := make([]uint16, V*D)
	tensor.F32SliceToBF16(tb, table)
	ids := make([]int32, T)
	for i := range ids {
		ids[i] = int32(rng.IntN(V))
	}
	out := make([]float32, T*D)
	b.Run(fmt.Sprintf("F32_T%d_D%d", T, D), func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(8 * T * D)
		for b.Loop() {
			Embedding(out, table, ids, T, D)
		}
	})
	b.Run(fmt.Sprintf("BF16_T%d_D%d", T, D), func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(6 * T * D)
		for b.Loop() {
			EmbeddingBF16(out, tb, ids, T, D)
		}
	})
	b.Run(fmt.Sprintf("Backward_T%d_D%d", T, D), func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(12 * T * D)
		for b.Loop() {
			EmbeddingBackward(table, out, ids, T, D)
		}
	})
}
