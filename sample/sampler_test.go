package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

var (
	inf = float32(math.Inf(1))
	nan = float32(math.NaN())
)

// lg returns float32 logits ln(w) for weights w, so that the softmax at
// temperature 1 is w / Σw (a weight of 0 gives −Inf, a masked token).
func lg(w ...float64) []float32 {
	out := make([]float32, len(w))
	for i, x := range w {
		out[i] = float32(math.Log(x))
	}
	return out
}

// norm returns w / Σw.
func norm(w ...float64) []float64 {
	var s float64
	for _, x := range w {
		s += x
	}
	out := make([]float64, len(w))
	for i, x := range w {
		out[i] = x / s
	}
	return out
}

// params returns Defaults with edit applied.
func params(edit func(*Params)) Params {
	p := Defaults()
	if edit != nil {
		edit(&p)
	}
	return p
}

// fastDist returns the distribution Next draws from, as computed by the
// Sampler itself: the surviving ids sorted ascending and w/total, zero
// weights dropped.
func fastDist(t testing.TB, s *Sampler, logits []float32, ctx []int32) ([]int32, []float64) {
	t.Helper()
	ids, total := s.filter(logits, ctx)
	var sum float64
	for _, id := range ids {
		sum += float64(s.w[id])
	}
	if math.Abs(sum-total) > 1e-12*total {
		t.Fatalf("total %v, weights sum to %v", total, sum)
	}
	var outIDs []int32
	for _, id := range ids {
		if s.w[id] > 0 {
			outIDs = append(outIDs, id)
		}
	}
	slices.Sort(outIDs)
	if len(slices.Compact(slices.Clone(outIDs))) != len(outIDs) {
		t.Fatalf("survivors %v repeat an id", outIDs)
	}
	outP := make([]float64, len(outIDs))
	for i, id := range outIDs {
		outP[i] = float64(s.w[id]) / total
	}
	return outIDs, outP
}

func sameDist(gotIDs []int32, gotP []float64, wantIDs []int32, wantP []float64, tol float64) error {
	if !slices.Equal(gotIDs, wantIDs) {
		return fmt.Errorf("ids %v, want %v (probs %v, want %v)", gotIDs, wantIDs, gotP, wantP)
	}
	for i := range gotP {
		if d := math.Abs(gotP[i] - wantP[i]); d > tol {
			return fmt.Errorf("p[%d] = %v, want %v (ids %v, probs %v, want %v)", gotIDs[i], gotP[i], wantP[i], gotIDs, gotP, wantP)
		}
	}
	return nil
}

// Each filter on hand-computed small distributions, checked on both the
// Sampler and DistributionRef. Base weights w = [1 2 3 4 10] (sum 20): at
// temperature 1 the probabilities are [.05 .10 .15 .20 .50], and rank order
// is 4, 3, 2, 1, 0.
func TestFilters(t *testing.T) {
	base := lg(1, 2, 3, 4, 10)
	cases := []struct {
		name    string
		p       Params
		logits  []float32
		ctx     []int32
		wantIDs []int32
		wantP   []float64
	}{
		// Temperature.
		{"temperature 1 is the softmax", params(nil), base, nil,
			[]int32{0, 1, 2, 3, 4}, norm(1, 2, 3, 4, 10)},
		{"temperature 0.5 squares the weights", params(func(p *Params) { p.Temperature = 0.5 }), base, nil,
			[]int32{0, 1, 2, 3, 4}, norm(1, 4, 9, 16, 100)},
		{"temperature 2 takes square roots", params(func(p *Params) { p.Temperature = 2 }), base, nil,
			[]int32{0, 1, 2, 3, 4}, norm(1, math.Sqrt2, math.Sqrt(3), 2, math.Sqrt(10))},
		{"huge temperature is uniform over unmasked tokens", params(func(p *Params) { p.Temperature = 1e300 }), []float32{-inf, 5, -3, nan, 1e30}, nil,
			[]int32{1, 2, 4}, norm(1, 1, 1)},
		{"tiny temperature keeps only the top", params(func(p *Params) { p.Temperature = 1e-30 }), []float32{1, 1.0001, -3, 1}, nil,
			[]int32{1}, []float64{1}},
		{"greedy is the argmax", params(func(p *Params) { p.Temperature = 0 }), base, nil,
			[]int32{4}, []float64{1}},
		{"greedy ties go to the lowest id", params(func(p *Params) { p.Temperature = 0 }), []float32{1, 3, 3, 2, 3}, nil,
			[]int32{1}, []float64{1}},

		// Top-k: exactly k survive; ties at the boundary go to lower ids.
		{"top-k 2", params(func(p *Params) { p.TopK = 2 }), base, nil,
			[]int32{3, 4}, norm(4, 10)},
		{"top-k 1 is greedy", params(func(p *Params) { p.TopK = 1 }), base, nil,
			[]int32{4}, []float64{1}},
		{"top-k ties keep lower ids", params(func(p *Params) { p.TopK = 2 }), []float32{1, 2, 1, 2, 2}, nil,
			[]int32{1, 3}, norm(1, 1)},
		{"top-k tie across the boundary", params(func(p *Params) { p.TopK = 3 }), []float32{0, 5, 1, 1, 1}, nil,
			[]int32{1, 2, 3}, []float64{math.E * math.E * math.E * math.E / (math.Pow(math.E, 4) + 2), 1 / (math.Pow(math.E, 4) + 2), 1 / (math.Pow(math.E, 4) + 2)}},
		{"top-k = V is off", params(func(p *Params) { p.TopK = 5 }), base, nil,
			[]int32{0, 1, 2, 3, 4}, norm(1, 2, 3, 4, 10)},
		{"top-k > V is off", params(func(p *Params) { p.TopK = 50 }), base, nil,
			[]int32{0, 1, 2, 3, 4}, norm(1, 2, 3, 4, 10)},

		// Top-p: the shortest rank-order prefix with mass >= p (cumulative
		// .50 .70 .85 .95 1).
		{"top-p 0.45 keeps the top", params(func(p *Params) { p.TopP = 0.45 }), base, nil,
			[]int32{4}, []float64{1}},
		{"top-p 0.6", params(func(p *Params) { p.TopP = 0.6 }), base, nil,
			[]int32{3, 4}, norm(4, 10)},
		{"top-p 0.75", params(func(p *Params) { p.TopP = 0.75 }), base, nil,
			[]int32{2, 3, 4}, norm(3, 4, 10)},
		{"top-p 0.9", params(func(p *Params) { p.TopP = 0.9 }), base, nil,
			[]int32{1, 2, 3, 4}, norm(2, 3, 4, 10)},
		{"top-p exact boundary is kept", params(func(p *Params) { p.TopP = 0.5 }), []float32{0, 0, 0, 0, -inf}, nil,
			[]int32{0, 1}, norm(1, 1)},
		{"top-p ties keep lower ids", params(func(p *Params) { p.TopP = 0.5 }), []float32{7, 7, 7, 7, 7}, nil,
			[]int32{0, 1, 2}, norm(1, 1, 1)},

		// Min-p: probability ratio to the top token >= min_p (ratios .1 .2
		// .3 .4 1).
		{"min-p 0.25", params(func(p *Params) { p.MinP = 0.25 }), base, nil,
			[]int32{2, 3, 4}, norm(3, 4, 10)},
		{"min-p 0.35", params(func(p *Params) { p.MinP = 0.35 }), base, nil,
			[]int32{3, 4}, norm(4, 10)},
		{"min-p 1 keeps the ties of the top", params(func(p *Params) { p.MinP = 1 }), []float32{2, 1, 2, 0, -1}, nil,
			[]int32{0, 2}, norm(1, 1)},
		{"min-p is relative to the tempered top", params(func(p *Params) { p.MinP = 0.15; p.Temperature = 0.5 }), base, nil,
			[]int32{3, 4}, norm(16, 100)}, // ratios squared: .01 .04 .09 .16 1

		// Repetition penalty (HF/CTRL): positive / penalty, negative x penalty, once per id.
		{"penalty divides positive logits", params(func(p *Params) { p.Temperature = 0; p.RepetitionPenalty = 2 }),
			[]float32{4, 3, 0, -1, -2}, []int32{0}, []int32{1}, []float64{1}},
		{"penalty multiplies negative logits", params(func(p *Params) { p.Temperature = 0; p.RepetitionPenalty = 4 }),
			[]float32{-1, -0.5, -3, -inf, -2}, []int32{1, 3}, []int32{0}, []float64{1}},
		{"penalty distribution", params(func(p *Params) { p.RepetitionPenalty = 2 }),
			[]float32{2, -2, 1, 0, 3}, []int32{0, 1, 1, 3, 0}, []int32{0, 1, 2, 3, 4},
			norm(math.Exp(1), math.Exp(-4), math.Exp(1), 1, math.Exp(3))},
		{"penalty below 1 encourages", params(func(p *Params) { p.Temperature = 0; p.RepetitionPenalty = 0.5 }),
			[]float32{3, 2, -1, 0, 0}, []int32{1, 1, 1}, []int32{1}, []float64{1}},

		// Order: penalty -> temperature -> top-k -> top-p -> min-p.
		{"top-k renormalises before top-p", params(func(p *Params) { p.TopK = 3; p.TopP = 0.55 }), base, nil,
			[]int32{4}, []float64{1}}, // 10/17 = .59 >= .55; over all five .50 < .55
		{"top-p without top-k", params(func(p *Params) { p.TopP = 0.55 }), base, nil,
			[]int32{3, 4}, norm(4, 10)},
		{"temperature applies before top-p", params(func(p *Params) { p.Temperature = 0.5; p.TopP = 0.65 }), base, nil,
			[]int32{4}, []float64{1}}, // 100/130 = .77; at temperature 1 it would be {3, 4}
		{"min-p thins the nucleus", params(func(p *Params) { p.TopP = 0.9; p.MinP = 0.25 }), base, nil,
			[]int32{2, 3, 4}, norm(3, 4, 10)},
		{"penalty before top-k", params(func(p *Params) { p.TopK = 1; p.RepetitionPenalty = 10 }), base, []int32{4},
			[]int32{3}, []float64{1}}, // ln 10 / 10 = .23 < ln 4

		// Masked and degenerate rows.
		{"NaN is masked", params(nil), []float32{nan, 0, 0, nan, float32(math.Log(3))}, nil,
			[]int32{1, 2, 4}, norm(1, 1, 3)},
		{"-Inf is masked", params(func(p *Params) { p.TopK = 4; p.TopP = 0.99 }), []float32{-inf, 0, -inf, 0, -inf}, nil,
			[]int32{1, 3}, norm(1, 1)},
		{"+Inf tokens share the mass", params(nil), []float32{inf, 0, inf, 100}, nil,
			[]int32{0, 2}, norm(1, 1)},
		{"all masked returns 0", params(func(p *Params) { p.TopP = 0.9 }), []float32{-inf, nan, -inf}, nil,
			[]int32{0}, []float64{1}},
		{"all equal is uniform", params(func(p *Params) { p.MinP = 0.5 }), []float32{3, 3, 3, 3, 3}, nil,
			[]int32{0, 1, 2, 3, 4}, norm(1, 1, 1, 1, 1)},
		{"vocab of one", params(func(p *Params) { p.TopK = 1; p.TopP = 0.5; p.MinP = 0.5 }), []float32{-7}, nil,
			[]int32{0}, []float64{1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := New(c.p)
			if err != nil {
				t.Fatal(err)
			}
			ids, probs := fastDist(t, s, c.logits, c.ctx)
			if err := sameDist(ids, probs, c.wantIDs, c.wantP, 1e-6); err != nil {
				t.Errorf("Sampler: %v", err)
			}
			ids, probs = DistributionRef(c.p, c.logits, c.ctx)
			if err := sameDist(ids, probs, c.wantIDs, c.wantP, 1e-6); err != nil {
				t.Errorf("DistributionRef: %v", err)
			}
		})
	}
}

// randLogits returns V logits ~ N(0, sd²) from a fixed seed.
func randLogits(seed uint64, V int, sd float64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([]float32, V)
	for i := range out {
		out[i] = float32(r.NormFloat64() * sd)
	}
	return out
}

// Sampling frequencies over many draws match the filtered distribution:
// Pearson's chi-square over the survivors stays below a bound that a correct
// sampler exceeds with probability far below 1e-9 (and the seed is fixed, so
// the test is deterministic anyway), and filtered-out tokens never come up.
func TestNextFrequencies(t *testing.T) {
	cases := []struct {
		name   string
		p      Params
		logits []float32
		ctx    []int32
	}{
		{"softmax", params(nil), lg(1, 2, 3, 4, 10), nil},
		{"top-p 0.9", params(func(p *Params) { p.TopP = 0.9 }), lg(1, 2, 3, 4, 10), nil},
		{"top-k 3 temperature 0.7", params(func(p *Params) { p.TopK = 3; p.Temperature = 0.7 }), lg(1, 2, 3, 4, 10), nil},
		{"min-p 0.25", params(func(p *Params) { p.MinP = 0.25 }), lg(1, 2, 3, 4, 10), nil},
		{"all filters on 64 tokens", params(func(p *Params) {
			p.Temperature, p.TopK, p.TopP, p.MinP, p.RepetitionPenalty = 1.3, 20, 0.95, 0.02, 1.5
		}), randLogits(3, 64, 1.5), []int32{5, 9, 9, 40}},
	}
	const draws = 200_000
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.p.Seed = 12345
			s, err := New(c.p)
			if err != nil {
				t.Fatal(err)
			}
			ids, probs := DistributionRef(c.p, c.logits, c.ctx)
			want := map[int32]float64{}
			for i, id := range ids {
				want[id] = probs[i]
			}
			count := map[int32]int{}
			for range draws {
				count[s.Next(c.logits, c.ctx)]++
			}
			for id, n := range count {
				if _, ok := want[id]; !ok {
					t.Fatalf("drew filtered-out token %d (%d times); survivors %v", id, n, ids)
				}
			}
			var chi2 float64
			for id, p := range want {
				e := p * draws
				d := float64(count[id]) - e
				chi2 += d * d / e
			}
			df := float64(len(want) - 1)
			bound := df + 10*math.Sqrt(2*df) + 10
			t.Logf("chi2 = %.2f over %v degrees of freedom (bound %.1f)", chi2, df, bound)
			if chi2 > bound {
				t.Errorf("chi2 = %.2f > %.1f: counts %v, want probs %v", chi2, bound, count, want)
			}
		})
	}
}

func sequence(t *testing.T, p Params, logits []float32, n int) []int32 {
	t.Helper()
	s, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int32, n)
	ctx := []int32{}
	for i := range out {
		out[i] = s.Next(logits, ctx)
		ctx = append(ctx, out[i])
	}
	return out
}

func TestNextDeterministic(t *testing.T) {
	logits := randLogits(7, 1000, 2)
	p := params(func(p *Params) { p.TopP = 0.95; p.RepetitionPenalty = 1.2; p.Seed = 42 })
	a, b := sequence(t, p, logits, 200), sequence(t, p, logits, 200)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different tokens:\n%v\n%v", a, b)
	}
	p.Seed = 43
	if c := sequence(t, p, logits, 200); slices.Equal(a, c) {
		t.Fatalf("seeds 42 and 43 gave the same 200 tokens")
	}

	// Reseed restarts a used Sampler on a new seed's sequence.
	s, _ := New(p)
	for range 17 {
		s.Next(logits, nil)
	}
	s.Reseed(42)
	p.Seed = 42
	want := sequence(t, p, logits, 1)
	if got := s.Next(logits, nil); got != want[0] {
		t.Errorf("after Reseed(42): %d, want %d", got, want[0])
	}
}

// Greedy decoding gives the argmax whatever the seed, and never touches the
// generator.
func TestGreedyIgnoresSeed(t *testing.T) {
	logits := randLogits(9, 500, 2)
	var first []int32
	for seed := range uint64(5) {
		p := params(func(p *Params) { p.Temperature = 0; p.TopK = 3; p.RepetitionPenalty = 1.3; p.Seed = seed })
		got := sequence(t, p, logits, 20)
		if first == nil {
			first = got
		} else if !slices.Equal(got, first) {
			t.Fatalf("seed %d: %v, seed 0: %v", seed, got, first)
		}
	}
	s, _ := New(params(func(p *Params) { p.Temperature = 0; p.Seed = 7 }))
	for range 10 {
		s.Next(logits, nil)
	}
	fresh := rand.New(rand.NewPCG(7, pcgStream))
	if got, want := s.rng.Uint64(), fresh.Uint64(); got != want {
		t.Errorf("greedy Next advanced the generator")
	}
	if got := s.Next(logits, nil); got != argmax(logits) {
		t.Errorf("greedy = %d, argmax = %d", got, argmax(logits))
	}
}

// Next leaves the caller's logits alone, NaN bits included.
func TestNextKeepsLogits(t *testing.T) {
	logits := randLogits(11, 300, 3)
	logits[3], logits[10], logits[20] = nan, inf, -inf
	before := make([]uint32, len(logits))
	for i, v := range logits {
		before[i] = math.Float32bits(v)
	}
	s, _ := New(params(func(p *Params) { p.TopK = 50; p.TopP = 0.8; p.RepetitionPenalty = 1.7 }))
	for range 5 {
		s.Next(logits, []int32{0, 3, 10, 20, 100})
	}
	for i, v := range logits {
		if math.Float32bits(v) != before[i] {
			t.Fatalf("logits[%d] changed", i)
		}
	}
}

// The Sampler follows the vocab size when it changes, either way.
func TestNextVocabChanges(t *testing.T) {
	p := params(func(p *Params) { p.TopK = 8; p.TopP = 0.9 })
	s, _ := New(p)
	for _, V := range []int{100, 5, 1, 3000, 7, 100} {
		logits := randLogits(uint64(V), V, 2)
		ids, probs := fastDist(t, s, logits, nil)
		wantIDs, wantP := DistributionRef(p, logits, nil)
		if err := sameDist(ids, probs, wantIDs, wantP, 1e-5); err != nil {
			t.Errorf("V=%d: %v", V, err)
		}
		if id := s.Next(logits, nil); id < 0 || int(id) >= V {
			t.Errorf("V=%d: Next = %d", V, id)
		}
	}
}

func TestNextPanics(t *testing.T) {
	s, _ := New(Defaults())
	for name, f := range map[string]func(){
		"empty row":          func() { s.Next(nil, nil) },
		"context id >= V":    func() { s.Next([]float32{1, 2}, []int32{2}) },
		"negative context":   func() { s.Next([]float32{1, 2}, []int32{-1}) },
		"greedy bad context": func() { g, _ := New(params(func(p *Params) { p.Temperature = 0 })); g.Next([]float32{1}, []int32{5}) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("no panic")
				}
			}()
			f()
		})
	}
}

// The Sampler against its slow twin on random rows and settings: the same
// survivors, the same probabilities.
func TestTwin(t *testing.T) {
	r := rand.New(rand.NewPCG(2024, 0))
	temps := []float64{0, 0.3, 0.7, 1, 1.6}
	topKs := []int{0, 0, 1, 2, 7, 64}
	topPs := []float64{1, 1, 0.3, 0.8, 0.9, 0.99}
	minPs := []float64{0, 0, 0.01, 0.1, 0.5}
	pens := []float64{1, 1, 1.3, 0.8}
	sizes := []int{1, 2, 3, 10, 257, 5000}
	for i := range 400 {
		V := sizes[r.IntN(len(sizes))]
		p := Defaults()
		p.Temperature = temps[r.IntN(len(temps))]
		p.TopK = topKs[r.IntN(len(topKs))]
		p.TopP = topPs[r.IntN(len(topPs))]
		p.MinP = minPs[r.IntN(len(minPs))]
		p.RepetitionPenalty = pens[r.IntN(len(pens))]
		logits := randLogits(uint64(i), V, 0.5+3*r.Float64())
		switch r.IntN(4) {
		case 0: // masked tokens
			for range V / 4 {
				logits[r.IntN(V)] = -inf
			}
			logits[r.IntN(V)] = nan
		case 1: // coarse logits: many exact ties
			for j := range logits {
				logits[j] = float32(math.Round(float64(logits[j])))
			}
		}
		var ctx []int32
		for range r.IntN(20) {
			ctx = append(ctx, int32(r.IntN(V)))
		}
		s, err := New(p)
		if err != nil {
			t.Fatal(err)
		}
		ids, probs := fastDist(t, s, logits, ctx)
		wantIDs, wantP := DistributionRef(p, logits, ctx)
		if err := sameDist(ids, probs, wantIDs, wantP, 1e-5); err != nil {
			t.Fatalf("case %d (V=%d, %+v): %v", i, V, p, err)
		}
	}
}

// A full-size row: the cutoff and quickselect path on 152064 tokens agrees
// with sorting them all.
func TestTwinLargeVocab(t *testing.T) {
	if testing.Short() {
		t.Skip("sorts 152064 tokens")
	}
	logits := randLogits(5, 152064, 3)
	for _, p := range []Params{
		params(func(p *Params) { p.TopP = 0.9 }),
		params(func(p *Params) { p.TopP = 0.5; p.Temperature = 2 }), // large nucleus: the scan path
		params(func(p *Params) { p.TopK = 1000; p.TopP = 0.95; p.MinP = 0.001 }),
		params(func(p *Params) { p.MinP = 0.01; p.Temperature = 0.8 }),
	} {
		s, _ := New(p)
		ids, probs := fastDist(t, s, logits, nil)
		wantIDs, wantP := DistributionRef(p, logits, nil)
		if err := sameDist(ids, probs, wantIDs, wantP, 1e-6); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
		t.Logf("%+v: %d survivors", p, len(ids))
	}
}

// After the first call for a vocab size, Next allocates nothing.
func TestNextNoAllocs(t *testing.T) {
	const V = 50304
	logits := randLogits(1, V, 3)
	ctx := []int32{1, 2, 3, 500, 50000, 2}
	for _, p := range []Params{
		params(func(p *Params) { p.Temperature = 0; p.RepetitionPenalty = 1.1 }),
		params(nil),
		params(func(p *Params) { p.TopK = 40 }),
		params(func(p *Params) { p.TopP = 0.9 }),
		params(func(p *Params) { p.TopP = 0.3; p.Temperature = 3 }),
		params(func(p *Params) { p.MinP = 0.05 }),
		params(func(p *Params) { p.TopK = 50; p.TopP = 0.9; p.MinP = 0.05; p.RepetitionPenalty = 1.2 }),
	} {
		s, _ := New(p)
		s.Next(logits, ctx)
		if n := testing.AllocsPerRun(20, func() { s.Next(logits, ctx) }); n != 0 {
			t.Errorf("%+v: %v allocations per Next", p, n)
		}
	}
}

// BenchmarkNext: one token from a Gaussian logits row (sd 3) with top-p 0.9,
// at the vocab sizes of OLMoE/GPT-NeoX (50304) and Qwen2/3 (152064).
func BenchmarkNext(b *testing.B) {
	for _, V := range []int{50304, 152064} {
		b.Run(fmt.Sprintf("V=%d", V), func(b *testing.B) {
			logits := randLogits(1, V, 3)
			ctx := []int32{1, 2, 3}
			s, err := New(params(func(p *Params) { p.TopP = 0.9 }))
			if err != nil {
				b.Fatal(err)
			}
			s.Next(logits, ctx)
			b.ReportAllocs()
			b.SetBytes(int64(4 * V))
			b.ResetTimer()
			for b.Loop() {
				s.Next(logits, ctx)
			}
		})
	}
}
