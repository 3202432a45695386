package kernel

import (
	"fmt"
	"math"
	"testing"
)

func TestCrossEntropyMatchesRef(t *testing.T) {
	for i, c := range []struct {
		name  string
		T, V  int
		scale float32 // logits uniform in [−scale, scale)
	}{
		{"1x1", 1, 1, 1},
		{"3x3", 3, 3, 1},
		{"5x17", 5, 17, 5},
		{"4x1000", 4, 1000, 10},
		{"9x257", 9, 257, 30},
		{"3x50304", 3, 50304, 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			rng := newRNG(900 + uint64(i))
			T, V := c.T, c.V
			logits := randSlice(rng, T*V)
			for j := range logits {
				logits[j] = logits[j]*c.scale + 50 // an offset: max subtraction must handle it
			}
			targets := make([]int32, T)
			for j := range targets {
				targets[j] = int32(rng.IntN(V))
			}
			if T > 1 {
				targets[1] = -100 // ignored
			}
			dloss := randSlice(rng, T)

			losses, lse := nanSlice(T), nanSlice(T)
			CrossEntropy(losses, lse, logits, targets, T, V)
			lRef, lseRef := nanSlice(T), nanSlice(T)
			CrossEntropyRef(lRef, lseRef, logits, targets, T, V)
			checkRel(t, "lse", lse, lseRef, 1e-7)
			// The loss is lse − logit: an absolute error of ~ulp(lse) is
			// inherent, so compare against the lse scale.
			for j := range losses {
				if d := math.Abs(float64(losses[j] - lRef[j])); !(d <= 2e-6*math.Abs(float64(lseRef[j]))) {
					t.Errorf("loss[%d] = %g, ref %g", j, losses[j], lRef[j])
				}
			}
			if T > 1 && losses[1] != 0 {
				t.Errorf("ignored target: loss %g, want 0", losses[1])
			}

			dl, dlRef := nanSlice(T*V), nanSlice(T*V)
			CrossEntropyBackward(dl, logits, lse, targets, dloss, T, V)
			CrossEntropyBackwardRef(dlRef, logits, lseRef, targets, dloss, T, V)
			checkRel(t, "dlogits", dl, dlRef, 1e-6)
			if T > 1 {
				for _, v := range dl[V : 2*V] {
					if v != 0 {
						t.Fatalf("ignored target: dlogits row not zero")
					}
				}
			}
			inPlace := clone32(logits)
			CrossEntropyBackward(inPlace, inPlace, lse, targets, dloss, T, V)
			checkRel(t, "dlogits in place", inPlace, dl, 0)
		})
	}
}

// TestCrossEntropyHandExample: logits (0, ln 3) give softmax (1/4, 3/4), so
// the loss for target 1 is ln(4/3) and its gradient (1/4, −1/4).
func TestCrossEntropyHandExample(t *testing.T) {
	logits := []float32{0, float32(math.Log(3))}
	losses, lse := make([]float32, 1), make([]float32, 1)
	CrossEntropy(losses, lse, logits, []int32{1}, 1, 2)
	if want := math.Log(4.0 / 3); math.Abs(float64(losses[0])-want) > 1e-7 {
		t.Errorf("loss %g, want %g", losses[0], want)
	}
	if want := math.Log(4); math.Abs(float64(lse[0])-want) > 1e-7 {
		t.Errorf("lse %g, want %g", lse[0], want)
	}
	d := make([]float32, 2)
	CrossEntropyBackward(d, logits, lse, []int32{1}, []float32{1}, 1, 2)
	checkRel(t, "dlogits", d, []float32{0.25, -0.25}, 1e-7)
}

func TestCrossEntropyGradFD(t *testing.T) {
	const T, V = 4, 9
	rng := newRNG(950)
	logits, dloss := randSlice64(rng, T*V), randSlice64(rng, T)
	for i := range logits {
		logits[i] *= 4
	}
	targets := []int32{3, -1, 0, 8}
	losses, lse := make([]float64, T), make([]float64, T)
	loss := func() float64 {
		crossEntropyRef(losses, lse, logits, targets, T, V)
		return dot64(losses, dloss)
	}
	loss()
	d := make([]float64, T*V)
	crossEntropyBackwardRef(d, logits, lse, targets, dloss, T, V)
	checkGrad(t, "dlogits", d, fdGrad(logits, 1e-6, loss), 1e-8)
}

func TestCrossEntropyPanics(t *testing.T) {
	logits := make([]float32, 2*4)
	l, lse := make([]float32, 2), make([]float32, 2)
	mustPanic(t, "target ≥ V", func() { CrossEntropy(l, lse, logits, []int32{0, 4}, 2, 4) })
	mustPanic(t, "short logits", func() { CrossEntropy(l, lse, logits[:7], []int32{0, 1}, 2, 4) })
	mustPanic(t, "short targets", func() { CrossEntropy(l, lse, logits, []int32{0}, 2, 4) })
	mustPanic(t, "backward short dloss", func() {
		CrossEntropyBackward(logits, logits, lse, []int32{0, 1}, l[:1], 2, 4)
	})
	mustPanic(t, "backward short dlogits", func() {
		CrossEntropyBackward(logits[:7], logits, lse, []int32{0, 1}, l, 2, 4)
	})
}

func BenchmarkCrossEntropy(b *testing.B) {
	const T, V = 64, 50304
	rng := newRNG(1)
	logits := randSlice(rng, T*V)
	targets := make([]int32, T)
	for i := range targets {
		targets[i] = int32(rng.IntN(V))
	}
	losses, lse := make([]float32, T), make([]float32, T)
	b.Run(fmt.Sprintf("T%d_V%d", T, V), func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(4 * T * V) // read logits
		for b.Loop() {
			CrossEntropy(losses, lse, logits, targets, T, V)
		}
	})
	dloss := make([]float32, T)
	for i := range dloss {
		dloss[i] = 1.0 / T
	}
	dl := make([]float32, T*V)
	b.Run(fmt.Sprintf("Backward_T%d_V%d", T, V), func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(8 * T * V) // read logits, write dlogits
		for b.Loop() {
			CrossEntropyBackward(dl, logits, lse, targets, dloss, T, V)
		}
	})
}

// A mean loss over the tokens that have a target: the upstream gradient of
// each counted token is 1/count.
func ExampleCrossEntropy() {
	const T, V = 2, 3
	logits := []float32{2, 0, 0, 5, 5, 5}
	targets := []int32{0, -100} // the second token is ignored
	losses, lse := make([]float32, T), make([]float32, T)
	CrossEntropy(losses, lse, logits, targets, T, V)
	dlogits := make([]float32, T*V)
	CrossEntropyBackward(dlogits, logits, lse, targets, []float32{1, 0}, T, V)
	fmt.Printf("%.4f %.4f\n", losses, dlogits)
	// Output: [0.2395 0.0000] [-0.2130 0.1065 0.1065 0.0000 0.0000 0.0000]
}
