package moe

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// reverseExchange is a fake Exchange that keeps every expert local but
// delivers each expert's rows in reverse order (as a remote rank's
// arrival order may differ) and undoes that on Return.
type reverseExchange struct {
	sends, returns int
	fail           error
}

func (x *reverseExchange) perm(p *Plan, D int, dst, src []float32, inverse bool) {
	for e := 0; e < p.E; e++ {
		lo, hi := p.Offsets[e], p.Offsets[e+1]
		for r := lo; r < hi; r++ {
			q := hi - 1 - (r - lo)
			if inverse {
				copy(dst[q*D:(q+1)*D], src[r*D:(r+1)*D])
			} else {
				copy(dst[r*D:(r+1)*D], src[q*D:(q+1)*D])
			}
		}
	}
}

func (x *reverseExchange) Send(ctx context.Context, _ Role, rows []float32, p *Plan, D int) ([]float32, []int, error) {
	x.sends++
	if x.fail != nil {
		return nil, nil, x.fail
	}
	recv := make([]float32, p.Rows()*D)
	x.perm(p, D, recv, rows, false)
	return recv, p.Offsets, nil
}

func (x *reverseExchange) Return(ctx context.Context, rows, recv []float32, p *Plan, D int) error {
	x.returns++
	x.perm(p, D, rows, recv, true)
	return nil
}

// TestLayerThroughExchange: routing rows through an Exchange (here one that
// reorders them) gives the local layer's outputs and gradients exactly, and
// uses it once per direction per pass; its errors are returned.
func TestLayerThroughExchange(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	l := newTestLayer(rng, true, 0)
	T := 9
	x, dy := randVec(rng, T*l.D, 1), randVec(rng, T*l.D, 1)
	run := func(ex Exchange) ([]float32, []float32, []float32, *Grads) {
		l.Exchange = ex
		defer func() { l.Exchange = nil }()
		y := make([]float32, T*l.D)
		var act Activations
		l.forward(y, x, T, &act)
		g := l.NewGrads()
		dx := make([]float32, T*l.D)
		gr := l.backward(dx, dy, &act, g)
		return y, dx, gr, g
	}
	y0, dx0, gr0, g0 := run(nil)
	ex := &reverseExchange{}
	y1, dx1, gr1, g1 := run(ex)
	// Row-wise results are bit-identical; weight gradients sum the rows in
	// the received order, so they agree to rounding.
	for _, c := range []struct {
		name string
		a, b []float32
		tol  float64
	}{{"y", y1, y0, 0}, {"dx", dx1, dx0, 0}, {"router grad", gr1, gr0, 0},
		{"dW13", g1.W13, g0.W13, 1e-6}, {"dW2", g1.W2, g0.W2, 1e-6}} {
		if c.tol == 0 && !slices.Equal(c.a, c.b) {
			t.Fatalf("%s through the exchange differs from the local layer", c.name)
		}
		var num, den float64
		for i := range c.a {
			d := float64(c.a[i]) - float64(c.b[i])
			num += d * d
			den += float64(c.b[i]) * float64(c.b[i])
		}
		if num > c.tol*c.tol*den {
			t.Fatalf("%s through the exchange: rel err %g", c.name, math.Sqrt(num/den))
		}
	}
	if ex.sends != 2 || ex.returns != 2 {
		t.Fatalf("exchange used for %d sends and %d returns, want 2 and 2", ex.sends, ex.returns)
	}
	// A failing exchange is an error, not a panic or wrong output.
	l.Exchange = &reverseExchange{fail: errors.New("rank 3 unreachable")}
	defer func() { l.Exchange = nil }()
	logits := make([]float32, T*l.E)
	err := l.Forward(context.Background(), make([]float32, T*l.D), x, logits, T, &Activations{})
	if err == nil || !errors.Is(err, l.Exchange.(*reverseExchange).fail) {
		t.Fatalf("failing exchange: %v", err)
	}
}
