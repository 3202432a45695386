package kernel

import (
	"fmt"
	"math"
	"testing"
)

func TestTopKMatchesRef(t *testing.T) {
	for i, c := range []struct {
		name    string
		T, N, K int
		levels  int // > 0: values drawn from this many levels, so ties are common
	}{
		{"1x1k1", 1, 1, 1, 0},
		{"3x3k3", 3, 3, 3, 0},
		{"5x17k1", 5, 17, 1, 0},
		{"5x17k2", 5, 17, 2, 0},
		{"7x64k8", 7, 64, 8, 0},
		{"64x60k4-ties", 64, 60, 4, 5},
		{"9x256k8", 9, 256, 8, 0},
		{"3x1000k6-ties", 3, 1000, 6, 3},
		{"2x1000k1-ties", 2, 1000, 1, 2},
		{"4x128k128", 4, 128, 128, 7},
	} {
		t.Run(c.name, func(t *testing.T) {
			x := randSlice(newRNG(800+uint64(i)), c.T*c.N)
			if c.levels > 0 {
				for j := range x {
					x[j] = float32(math.Floor(float64(x[j]+1) * float64(c.levels) / 2))
				}
			}
			vals, ids := nanSlice(c.T*c.K), make([]int32, c.T*c.K)
			TopK(vals, ids, x, c.T, c.N, c.K)
			vRef, iRef := nanSlice(c.T*c.K), make([]int32, c.T*c.K)
			TopKRef(vRef, iRef, x, c.T, c.N, c.K)
			for j := range ids {
				if ids[j] != iRef[j] || vals[j] != vRef[j] {
					t.Fatalf("row %d slot %d: (%g, %d), ref (%g, %d)", j/c.K, j%c.K, vals[j], ids[j], vRef[j], iRef[j])
				}
			}
		})
	}
}

func TestTopKSpecialValues(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	for _, c := range []struct {
		name string
		row  []float32
		K    int
		want []int32
	}{
		{"ties keep index order", []float32{1, 3, 3, 2, 3}, 3, []int32{1, 2, 4}},
		{"nan ranks last", []float32{nan, -inf, 0, nan, 5}, 4, []int32{4, 2, 1, 0}},
		{"nan first column argmax", []float32{nan, -1, -2}, 1, []int32{1}},
		{"all nan", []float32{nan, nan, nan}, 2, []int32{0, 1}},
		{"all -inf", []float32{-inf, -inf, -inf}, 2, []int32{0, 1}},
		{"signed zeros tie", []float32{float32(math.Copysign(0, -1)), 0}, 1, []int32{0}},
		{"inf wins", []float32{1, inf, 2}, 2, []int32{1, 2}},
	} {
		t.Run(c.name, func(t *testing.T) {
			vals, ids := make([]float32, c.K), make([]int32, c.K)
			TopK(vals, ids, c.row, 1, len(c.row), c.K)
			vRef, iRef := make([]float32, c.K), make([]int32, c.K)
			TopKRef(vRef, iRef, c.row, 1, len(c.row), c.K)
			for k := range c.want {
				if ids[k] != c.want[k] || iRef[k] != c.want[k] {
					t.Fatalf("ids %v, ref %v, want %v", ids, iRef, c.want)
				}
				if got, want := vals[k], c.row[c.want[k]]; math.Float32bits(got) != math.Float32bits(want) {
					t.Fatalf("vals %v, want %v at the chosen ids", vals, want)
				}
			}
		})
	}
}

func TestTopKPanics(t *testing.T) {
	x := make([]float32, 8)
	v, ids := make([]float32, 8), make([]int32, 8)
	mustPanic(t, "K > N", func() { TopK(v, ids, x, 2, 4, 5) })
	mustPanic(t, "K = 0", func() { TopK(v, ids, x, 2, 4, 0) })
	mustPanic(t, "short x", func() { TopK(v, ids, x[:7], 2, 4, 2) })
	mustPanic(t, "short ids", func() { TopK(v, ids[:3], x, 2, 4, 2) })
}

func BenchmarkTopK(b *testing.B) {
	for _, c := range []struct{ T, N, K int }{{512, 64, 8}, {512, 128, 8}, {512, 8, 2}, {512, 60, 4}, {32, 50304, 1}} {
		b.Run(fmt.Sprintf("T%d_N%d_K%d", c.T, c.N, c.K), func(b *testing.B) {
			x := randSlice(newRNG(1), c.T*c.N)
			vals, ids := make([]float32, c.T*c.K), make([]int32, c.T*c.K)
			b.ReportAllocs()
			b.SetBytes(int64(4 * c.T * c.N)) // read x
			for b.Loop() {
				TopK(vals, ids, x, c.T, c.N, c.K)
			}
		})
	}
}

// Routing one token over 6 experts, top-2: the ids come back by descending
// router logit, ties by lower expert id.
func ExampleTopK() {
	logits := []float32{0.1, 2.5, -1, 2.5, 0.7, 3}
	vals := make([]float32, 2)
	ids := make([]int32, 2)
	TopK(vals, ids, logits, 1, 6, 2)
	fmt.Println(ids, vals)
	// Output: [5 1] [3 2.5]
}
