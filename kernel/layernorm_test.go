package kernel

import (
	"testing"
)

func TestLayerNormMatchesRef(t *testing.T) {
	for i, c := range normShapes {
		for _, bias := range []bool{true, false} {
			name := c.name + "/bias"
			if !bias {
				name = c.name + "/nobias"
			}
			t.Run(name, func(t *testing.T) {
				rng := newRNG(200 + uint64(i))
				T, D := c.T, c.D
				x, w := randSlice(rng, T*D), randSlice(rng, D)
				for j := range x {
					x[j] += 3 // a common offset: the two-pass variance must not care
				}
				var b, db0 []float32
				if bias {
					b, db0 = randSlice(rng, D), randSlice(rng, D)
				}
				eps := float32(1e-5)
				if D < 8 { // dx cancels nearly to zero for tiny D; see TestRMSNormMatchesRef
					eps = 0.1
				}

				out, mean, rstd := nanSlice(T*D), nanSlice(T), nanSlice(T)
				LayerNorm(out, mean, rstd, x, w, b, T, D, eps)
				outRef, meanRef, rstdRef := nanSlice(T*D), nanSlice(T), nanSlice(T)
				LayerNormRef(outRef, meanRef, rstdRef, x, w, b, T, D, eps)
				checkRel(t, "out", out, outRef, 1e-5)
				checkRel(t, "mean", mean, meanRef, 1e-6)
				checkRel(t, "rstd", rstd, rstdRef, 1e-6)

				inPlace := clone32(x)
				LayerNorm(inPlace, nil, nil, inPlace, w, b, T, D, eps)
				checkRel(t, "in place", inPlace, out, 0)

				dout, dw0 := randSlice(rng, T*D), randSlice(rng, D)
				dx, dw, db := nanSlice(T*D), clone32(dw0), clone32(db0)
				LayerNormBackward(dx, dw, db, dout, x, w, mean, rstd, T, D)
				dxRef, dwRef, dbRef := nanSlice(T*D), clone32(dw0), clone32(db0)
				LayerNormBackwardRef(dxRef, dwRef, dbRef, dout, x, w, meanRef, rstdRef, T, D)
				checkRel(t, "dx", dx, dxRef, 5e-6)
				checkRel(t, "dw", dw, dwRef, 5e-6)
				checkRel(t, "db", db, dbRef, 1e-6)
			})
		}
	}
}

func TestLayerNormGradFD(t *testing.T) {
	for i, c := range []struct {
		name string
		T, D int
	}{{"1x2", 1, 2}, {"2x3", 2, 3}, {"3x8", 3, 8}, {"2x17", 2, 17}} {
		t.Run(c.name, func(t *testing.T) {
			rng := newRNG(300 + uint64(i))
			T, D := c.T, c.D
			x, w, b, dout := randSlice64(rng, T*D), randSlice64(rng, D), randSlice64(rng, D), randSlice64(rng, T*D)
			const eps = 1e-3
			out, mean, rstd := make([]float64, T*D), make([]float64, T), make([]float64, T)
			loss := func() float64 {
				layerNormRef(out, mean, rstd, x, w, b, T, D, eps)
				return dot64(out, dout)
			}
			loss()
			dx, dw, db := make([]float64, T*D), make([]float64, D), make([]float64, D)
			layerNormBackwardRef(dx, dw, db, dout, x, w, mean, rstd, T, D)
			checkGrad(t, "dx", dx, fdGrad(x, 1e-6, loss), 1e-7)
			checkGrad(t, "dw", dw, fdGrad(w, 1e-6, loss), 1e-7)
			checkGrad(t, "db", db, fdGrad(b, 1e-6, loss), 1e-7)
		})
	}
}

func TestLayerNormPanics(t *testing.T) {
	x := make([]float32, 6)
	mustPanic(t, "short out", func() { LayerNorm(x[:5], nil, nil, x, x[:3], nil, 2, 3, 1e-5) })
	mustPanic(t, "short b", func() { LayerNorm(x, nil, nil, x, x[:3], x[:2], 2, 3, 1e-5) })
	mustPanic(t, "short mean", func() { LayerNorm(x, x[:1], x[:2], x, x[:3], nil, 2, 3, 1e-5) })
	mustPanic(t, "backward nil mean", func() { LayerNormBackward(x, x[:3], nil, x, x, x[:3], nil, x[:2], 2, 3) })
}

func BenchmarkLayerNorm(b *testing.B) {
	T, D := 512, 2048
	rng := newRNG(1)
	x, w, bias := randSlice(rng, T*D), randSlice(rng, D), randSlice(rng, D)
	out, mean, rstd := make([]float32, T*D), make([]float32, T), make([]float32, T)
	b.ReportAllocs()
	b.SetBytes(int64(8 * T * D)) // read x, write out
	for b.Loop() {
		LayerNorm(out, mean, rstd, x, w, bias, T, D, 1e-5)
	}
}
