package kernels_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/moesys/moesys/gpu/cuda"
	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/moe"
)

// gpuOnly returns the GPU backend for act or skips t.
func gpuOnly(t testing.TB, act cuda.DataType) *backend {
	b := gpuBackend(t, act)
	if b == nil {
		t.Skip("no GPU (cuda.Open: unavailable)")
	}
	return b
}

// TestGPURealistic checks the kernels on model-sized shapes, which the
// emulator is too slow for: decode attention over a long cache (split-K),
// a prefill, the router of 64 experts, expert GEMVs and an LM head.
func TestGPURealistic(t *testing.T) {
	for _, act := range bothActs {
		t.Run(act.String(), func(t *testing.T) {
			b := gpuOnly(t, act)
			defer b.release()
			b.tb = t
			r := newRand(20)
			for _, c := range []struct{ T, S, H, G, Dh, pos0, window int }{
				{1, 4096, 32, 8, 128, 4095, 0},    // Mixtral decode
				{4, 4100, 16, 16, 128, 4096, 0},   // OLMoE, 4 rows
				{1, 8192, 28, 4, 128, 8191, 4096}, // Qwen2 window
				{256, 300, 16, 16, 128, 44, 0},    // chunked prefill
			} {
				qd, kd := c.H*c.Dh, c.G*c.Dh
				q := randF32(r, c.T*qd, 1)
				k := roundTo(act, randF32(r, c.S*kd, 1))
				v := roundTo(act, randF32(r, c.S*kd, 1))
				scale := float32(1 / math.Sqrt(float64(c.Dh)))
				want := make([]float32, c.T*qd)
				kernel.Attention(want, nil, q, k, v, c.T, c.S, c.H, c.G, c.Dh, c.pos0, c.window, scale,
					make([]float32, kernel.AttentionWorkspace(c.T, c.S, c.H, c.G, c.Dh)))
				out := b.buf(4 * c.T * qd)
				if err := b.k.Attention(b.s, out, b.f32(q), b.act(k), b.act(v), c.T, c.S, c.H, c.G, c.Dh, c.pos0, c.window, scale); err != nil {
					t.Fatal(err)
				}
				near(t, fmt.Sprint("attention ", c), b.readAct(out, c.T*qd), roundTo(act, want), actTol(b, 1e-4), 1e-5)
			}

			T, E, K := 64, 64, 8
			logits := randF32(r, T*E, 2)
			want := moe.Router{K: K, Normalize: false}.Route(logits, T, E)
			ids, w := b.buf(4*T*K), b.buf(4*T*K)
			if err := b.k.SoftmaxTopK(b.s, ids, w, b.f32(logits), T, E, K, false); err != nil {
				t.Fatal(err)
			}
			got := b.readI32(ids, T*K)
			for i := range got {
				if got[i] != want.IDsTK[i] {
					t.Errorf("router ids[%d] = %d, want %d", i, got[i], want.IDsTK[i])
				}
			}
			near(t, "router weights", b.readF32(w, T*K), want.WeightsTK, 4e-7, 0)

			for _, c := range []struct{ rows, N, Kd int }{{1, 4096, 4096}, {3, 1024, 2048}, {16, 2048, 1408}, {1, 151936, 1024}} {
				x := roundTo(act, randF32(r, c.rows*c.Kd, 1))
				wv := roundTo(cuda.BF16, randF32(r, c.N*c.Kd, 0.05))
				ref := gemvRef(make([]float32, c.rows*c.N), x, [][]float32{wv}, []int32{0, int32(c.rows)}, c.N, c.Kd, 0)
				out := b.buf(4 * c.rows * c.N)
				if err := b.k.ExpertsGemv(b.s, out, b.act(x), b.u64([]uint64{uint64(b.typed(cuda.BF16, wv))}), cuda.BF16,
					b.i32([]int32{0, int32(c.rows)}), 1, c.rows, c.N, c.Kd, 0); err != nil {
					t.Fatal(err)
				}
				near(t, fmt.Sprint("gemv ", c), b.readF32(out, c.rows*c.N), ref, 1e-4, 1e-5)
			}
		})
	}
}

// BenchmarkExpertsGemv reports the weight bandwidth of ExpertsGemv on the
// GPU (GB/s of weights read; an H100 SXM's HBM3 peaks near 3350): the
// plain decode GEMV, the OLMoE-shaped decode step (8 of 64 experts, one
// row each; the active set rotates so the weights do not sit in L2), 4
// and 16 rows per expert, and an LM head. It skips without a GPU.
func BenchmarkExpertsGemv(b *testing.B) {
	for _, c := range []struct {
		name         string
		pool, active int // experts allocated, experts per call
		rows, N, Kd  int
		wt           cuda.DataType
	}{
		{"gemv-4096x4096", 16, 1, 1, 4096, 4096, cuda.BF16},
		{"olmoe-up-8of64", 64, 8, 1, 1024, 2048, cuda.BF16},
		{"olmoe-down-8of64", 64, 8, 1, 2048, 1024, cuda.BF16},
		{"experts-m4", 64, 8, 4, 1024, 2048, cuda.BF16},
		{"experts-m16", 64, 8, 16, 1024, 2048, cuda.BF16},
		{"lmhead-50k", 1, 1, 1, 50304, 2048, cuda.BF16},
		{"gemv-f32-4096", 8, 1, 1, 4096, 4096, cuda.F32},
	} {
		b.Run(c.name, func(b *testing.B) {
			g := gpuOnly(b, cuda.BF16)
			defer g.release()
			r := newRand(30)
			matBytes := c.N * c.Kd * c.wt.Size()
			ptrs := make([]uint64, c.pool)
			for e := range ptrs {
				p := g.buf(matBytes) // zeroed weights: bandwidth does not depend on values
				ptrs[e] = uint64(p)
			}
			// Call i uses experts (i*active .. i*active+active−1) mod pool,
			// as nE = active pointers, each with rows rows.
			sets := max(1, c.pool/c.active)
			wp := make([]cuda.DevPtr, sets)
			for s := range wp {
				sel := make([]uint64, c.active)
				for j := range sel {
					sel[j] = ptrs[(s*c.active+j)%c.pool]
				}
				wp[s] = g.u64(sel)
			}
			off := make([]int32, c.active+1)
			for j := range off {
				off[j] = int32(j * c.rows)
			}
			R := c.active * c.rows
			rowOff, x, out := g.i32(off), g.act(randF32(r, R*c.Kd, 1)), g.buf(4*R*c.N)
			d, _ := openGPU()
			start, _ := d.NewEvent(true)
			end, _ := d.NewEvent(true)
			defer start.Close()
			defer end.Close()
			launch := func(i int) {
				if err := g.k.ExpertsGemv(g.s, out, x, wp[i%sets], c.wt, rowOff, c.active, c.rows, c.N, c.Kd, 0); err != nil {
					b.Fatal(err)
				}
			}
			for i := 0; i < 3; i++ { // warm up
				launch(i)
			}
			b.SetBytes(int64(c.active * matBytes))
			b.ReportAllocs()
			b.ResetTimer()
			if err := start.Record(g.s); err != nil {
				b.Fatal(err)
			}
			for i := 0; i < b.N; i++ {
				launch(i)
			}
			if err := end.Record(g.s); err != nil {
				b.Fatal(err)
			}
			if err := end.Sync(); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			el, err := cuda.Elapsed(start, end)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(c.active*matBytes)*float64(b.N)/el.Seconds()/1e9, "GB/s")
			b.ReportMetric(el.Seconds()*1e6/float64(b.N), "us/call")
		})
	}
}
