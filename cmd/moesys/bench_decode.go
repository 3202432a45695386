package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"syscall"
	"time"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/model"
)

func init() {
	benchSuites["decode"] = struct {
		summary string
		run     func(opts benchOptions, progress io.Writer) ([]benchResult, error)
	}{"decode and prefill tokens/s of a resident MoE model against memory and compute bounds", benchDecode}
}

// defaultDecodeModel returns the cached random OLMoE checkpoint, writing it
// on first use (12.9 GiB of bf16 weights).
func defaultDecodeModel(progress io.Writer) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "moesys", "olmoe-1b-7b-bf16-random")
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return dir, nil
	}
	fmt.Fprintf(progress, "writing a random olmoe-1b-7b bf16 checkpoint to %s (once)\n", dir)
	cfg, err := model.ShapeConfig("olmoe-1b-7b")
	if err != nil {
		return "", err
	}
	return dir, model.WriteRandom(dir, cfg, model.RandomOptions{Seed: 1})
}

// decodeBytesPerToken is what one batch-1 decode step must read: every
// dense weight, the K routed experts of each MoE layer, and the KV cache.
func decodeBytesPerToken(m *model.Model, ctx int) float64 {
	c := m.Cfg
	var b float64
	add := func(x model.Mat) { b += float64(x.Bytes()) }
	for _, ly := range m.Layers {
		add(ly.Q)
		add(ly.K)
		add(ly.V)
		add(ly.O)
		b += 4 * float64(len(ly.InNorm)+len(ly.PostNorm)+len(ly.QNorm)+len(ly.KNorm))
		if ly.MoE {
			add(ly.Router) // zero when a pre-gate routes the layer
			add(ly.Pregate)
			e := ly.Experts[0]
			b += float64(c.K) * float64(e.Gate.Bytes()+e.Up.Bytes()+e.Down.Bytes())
			if ly.Shared != nil {
				add(ly.Shared.Gate)
				add(ly.Shared.Up)
				add(ly.Shared.Down)
				add(ly.SharedGate)
			}
		} else {
			add(ly.Dense.Gate)
			add(ly.Dense.Up)
			add(ly.Dense.Down)
		}
		b += 2 * 4 * float64(ctx*c.G*c.Dh) // K and V cache, f32
	}
	add(m.Head)
	return b
}

// prefillFlops is the forward pass's multiply-add flops for T tokens.
func prefillFlops(m *model.Model, T int) float64 {
	c := m.Cfg
	var f float64
	mm := func(x model.Mat, rows int) { f += 2 * float64(rows) * float64(x.Rows) * float64(x.Cols) }
	for _, ly := range m.Layers {
		mm(ly.Q, T)
		mm(ly.K, T)
		mm(ly.V, T)
		mm(ly.O, T)
		f += 4 * float64(c.H*c.Dh) * float64(T) * float64(T+1) / 2 // causal attention
		if ly.MoE {
			mm(ly.Router, T)
			mm(ly.Pregate, T)
			e := ly.Experts[0]
			mm(e.Gate, T*c.K)
			mm(e.Up, T*c.K)
			mm(e.Down, T*c.K)
			if ly.Shared != nil {
				mm(ly.Shared.Gate, T)
				mm(ly.Shared.Up, T)
				mm(ly.Shared.Down, T)
			}
		} else {
			mm(ly.Dense.Gate, T)
			mm(ly.Dense.Up, T)
			mm(ly.Dense.Down, T)
		}
	}
	mm(m.Head, T)
	return f
}

func benchDecode(opts benchOptions, progress io.Writer) ([]benchResult, error) {
	if opts.device == "cuda" {
		return benchDecodeGPU(opts, progress)
	}
	dir := opts.model
	var err error
	if dir == "" {
		if dir, err = defaultDecodeModel(progress); err != nil {
			return nil, err
		}
	}
	// Bounds: memory bandwidth and compute peaks of this machine, 2 threads,
	// measured before and after the model runs (the larger median is kept,
	// as in the kernels suite).
	p := measurePeaks(opts, progress)
	threads := runtime.NumCPU()
	kernel.SetThreads(threads)
	m, err := model.Load(dir)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	m.SetPrecision(model.Fast) // bf16 dot products for prefill, as bf16 inference does
	c := m.Cfg
	name := filepath.Base(dir)
	// A fully resident model: every weight in process memory, pre-packed in
	// the kernels' panel layout, so timed tokens pay no page faults and no
	// product repacks its weights.
	warm := time.Now()
	n, err := m.MakeResident(true)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "copied %.1f GiB of weights into memory\n", float64(n)/(1<<30))
	s := m.NewSession(1024)
	prompt := make([]int32, 512)
	for i := range prompt {
		prompt[i] = int32((i*7919 + 13) % c.V)
	}
	if _, err := s.Forward(prompt[:64]); err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "loaded %s and warmed up in %.1fs\n", dir, time.Since(warm).Seconds())

	var res []benchResult
	// Prefill: a 512-token prompt from an empty cache; time to first token.
	reps := 3
	if opts.quick {
		reps = 1
	}
	var pre []float64
	for r := 0; r < reps; r++ {
		s.Reset()
		t0 := time.Now()
		if _, err := s.Forward(prompt); err != nil {
			return nil, err
		}
		pre = append(pre, time.Since(t0).Seconds())
	}
	sort.Float64s(pre)
	ttft := pre[len(pre)/2]
	preTPS := float64(len(prompt)) / ttft

	// Decode at batch 1 after a 64-token prompt.
	s.Reset()
	logits, err := s.Forward(prompt[:64])
	if err != nil {
		return nil, err
	}
	steps := 32
	if opts.quick {
		steps = 12
	}
	var per []float64
	for i := 0; i < steps; i++ {
		next := argmax(logits[len(logits)-c.V:])
		t0 := time.Now()
		if logits, err = s.Forward([]int32{next}); err != nil {
			return nil, err
		}
		per = append(per, time.Since(t0).Seconds())
	}
	sort.Float64s(per)
	tps := 1 / per[len(per)/2]

	fmt.Fprintln(progress, "re-measuring peaks")
	again := measurePeaks(opts, progress)
	p.bf16[threads] = math.Max(p.bf16[threads], again.bf16[threads])
	p.read[threads] = math.Max(p.read[threads], again.read[threads])
	preBound := p.bf16[threads] * 1e9 / (prefillFlops(m, len(prompt)) / float64(len(prompt)))
	res = append(res, benchResult{Name: "prefill_olmoe_bf16_p512_t2", Value: preTPS, Unit: "tokens/s", Bound: preBound, Ratio: preTPS / preBound, Target: 0.40,
		Note: fmt.Sprintf("%s; bound = bf16 dot peak %.0f GFLOP/s / %.2f GFLOP per token", name, p.bf16[threads], prefillFlops(m, len(prompt))/float64(len(prompt))/1e9)})
	res = append(res, benchResult{Name: "ttft_olmoe_bf16_p512_t2", Value: ttft * 1000, Unit: "ms"})
	bytes := decodeBytesPerToken(m, 64+steps/2)
	bound := p.read[threads] * 1e9 / bytes
	res = append(res, benchResult{Name: "decode_olmoe_bf16_b1_t2", Value: tps, Unit: "tokens/s", Bound: bound, Ratio: tps / bound, Target: 0.75,
		Note: fmt.Sprintf("%s; bound = read bandwidth %.1f GB/s / %.2f GB per token", name, p.read[threads], bytes/1e9)})
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		res = append(res, benchResult{Name: "peak_rss_olmoe_bf16", Value: float64(ru.Maxrss) / (1 << 20), Unit: "GiB",
			Note: "includes the mapped weights the process touched"})
	}
	return res, nil
}

func argmax(x []float32) int32 {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return int32(best)
}
