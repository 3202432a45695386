package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/moesys/moesys/gpu"
	"github.com/moesys/moesys/gpu/cuda"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/offload"
)

// The GPU benchmarks (issue 9): bench decode --device cuda and bench
// offload --device cuda. Timings are wall-clock per token on the host,
// logits copied back and the next token chosen on the host, as generate
// runs; medians over steps, policies alternated over rounds.

// openBenchGPU opens the GPU for a benchmark: unlike generate, no CPU
// fallback (its results would be mislabelled).
func openBenchGPU(opts benchOptions) (*gpu.Backend, error) {
	b, err := gpu.Open(gpu.Options{Compute: opts.compute})
	if errors.Is(err, cuda.ErrUnavailable) {
		return nil, fmt.Errorf("--device cuda: %w", err)
	}
	return b, err
}

// gpuCopyBandwidth measures device memory bandwidth: a device-to-device
// copy of 1 GiB reads and writes it, timed with events, median of 5; the
// bytes moved (read + written) per second, in GB/s.
func gpuCopyBandwidth(b *gpu.Backend) (float64, error) {
	const n = 1 << 30
	src, err := b.Malloc(n)
	if err != nil {
		return 0, err
	}
	defer b.Free(src)
	dst, err := b.Malloc(n)
	if err != nil {
		return 0, err
	}
	defer b.Free(dst)
	start, err := b.Dev.NewEvent(true)
	if err != nil {
		return 0, err
	}
	defer start.Close()
	end, err := b.Dev.NewEvent(true)
	if err != nil {
		return 0, err
	}
	defer end.Close()
	var gbs []float64
	for range 6 {
		if err := errors.Join(start.Record(b.Compute), b.Compute.CopyDtoD(dst, src, n), end.Record(b.Compute), end.Sync()); err != nil {
			return 0, err
		}
		d, err := cuda.Elapsed(start, end)
		if err != nil {
			return 0, err
		}
		gbs = append(gbs, 2*n/d.Seconds()/1e9)
	}
	gbs = gbs[1:] // the first warms up
	sort.Float64s(gbs)
	return gbs[len(gbs)/2], nil
}

// gpuDecodeBytes is what one batch-1 decode step reads on the device: the
// dense weights, K routed experts per MoE layer, the head, and ctx
// positions of K and V per layer: weights at wt bytes per element, the
// cache at act.
func gpuDecodeBytes(c *model.Config, ctx, wt, act int) float64 {
	qd, kd := c.H*c.Dh, c.G*c.Dh
	var p float64
	for l := range c.L {
		p += float64(c.D*qd*2 + c.D*kd*2)
		if c.MoE[l] {
			p += float64(c.E*c.D) + float64(c.K*3*c.D*c.ExpertFFN)
			if c.SharedFFN > 0 {
				p += float64(3*c.D*c.SharedFFN + c.D)
			}
		} else {
			p += float64(3 * c.D * c.DenseFFN)
		}
	}
	p += float64(c.V * c.D)
	return p*float64(wt) + float64(c.L*2*ctx*kd*act)
}

// gpuDecode times steps decode steps after a prompt of n tokens; it returns
// the median seconds per token.
func gpuDecode(s *gpu.Session, c *model.Config, prompt, steps int) (float64, error) {
	s.Reset()
	ids := make([]int32, prompt)
	for i := range ids {
		ids[i] = int32((i*7919 + 13) % c.V)
	}
	logits, err := s.Forward(ids)
	if err != nil {
		return 0, err
	}
	per := make([]float64, 0, steps)
	for range steps {
		next := argmax(logits[len(logits)-c.V:])
		t0 := time.Now()
		if logits, err = s.Forward([]int32{next}); err != nil {
			return 0, err
		}
		per = append(per, time.Since(t0).Seconds())
	}
	sort.Float64s(per)
	return per[len(per)/2], nil
}

func benchDecodeGPU(opts benchOptions, progress io.Writer) ([]benchResult, error) {
	dir := opts.model
	var err error
	if dir == "" {
		if dir, err = defaultDecodeModel(progress); err != nil {
			return nil, err
		}
	}
	b, err := openBenchGPU(opts)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	fmt.Fprintf(progress, "gpu: %s\n", b.Describe())
	bw, err := gpuCopyBandwidth(b)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "gpu: device copy bandwidth %.0f GB/s\n", bw)
	host, err := model.Load(dir)
	if err != nil {
		return nil, err
	}
	t := time.Now()
	g, err := gpu.Upload(b, host)
	host.Close()
	if err != nil {
		return nil, err
	}
	defer g.Close()
	c := g.Cfg
	fmt.Fprintf(progress, "gpu: uploaded %s of weights in %.1fs\n", offload.FormatBytes(g.WeightBytes()), time.Since(t).Seconds())
	s, err := g.NewSession(1024)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	prompt, steps := 64, 64
	if opts.quick {
		steps = 24
	}
	if _, err := gpuDecode(s, c, prompt, 4); err != nil { // warm-up: kernels, cuBLAS
		return nil, err
	}
	sec, err := gpuDecode(s, c, prompt, steps)
	if err != nil {
		return nil, err
	}
	tps := 1 / sec
	bytes := gpuDecodeBytes(c, prompt+steps/2, b.Weights().Size(), b.Act().Size())
	bound := bw * 1e9 / bytes
	name := filepath.Base(dir)
	res := []benchResult{
		{Name: "gpu_copy_bandwidth", Value: bw, Unit: "GB/s", Note: b.Describe()},
		{Name: "gpu_decode_olmoe_bf16_b1", Value: tps, Unit: "tokens/s", Bound: bound, Ratio: tps / bound, Target: 0.50,
			Note: fmt.Sprintf("%s; bound = device copy bandwidth %.0f GB/s / %.2f GB read per token", name, bw, bytes/1e9)},
	}
	peer, err := hfPeer(opts, progress, "decode", "--model", dir, "--prompt", fmt.Sprint(prompt), "--steps", fmt.Sprint(steps))
	switch {
	case err != nil:
		fmt.Fprintf(progress, "hf peer: %v\n", err)
		res = append(res, benchResult{Name: "gpu_decode_olmoe_vs_hf", Note: "not measured: " + err.Error(), Target: 1.5})
	default:
		res = append(res, benchResult{Name: "gpu_decode_olmoe_vs_hf", Value: tps / peer, Unit: "x", Bound: peer, Ratio: tps / peer, Target: 1.5,
			Note: fmt.Sprintf("Hugging Face transformers eager bf16 batch 1: %.1f tokens/s (bound column), same weights, same machine", peer)})
	}
	return res, nil
}

// hfPeer runs scripts/peers/hf_gpu.py MODE with args and returns its
// tokens/s; an error when python3 with torch and transformers (and a GPU)
// is not there.
func hfPeer(opts benchOptions, progress io.Writer, mode string, args ...string) (float64, error) {
	script := filepath.Join("scripts", "peers", "hf_gpu.py")
	if _, err := os.Stat(script); err != nil {
		return 0, fmt.Errorf("%s not found (run from the repository root)", script)
	}
	py := "python3"
	if p := os.Getenv("MOESYS_PYTHON"); p != "" {
		py = p
	}
	cmd := exec.Command(py, append([]string{script, mode}, args...)...)
	cmd.Stderr = progress
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", script, mode, err)
	}
	var r struct {
		TokensPerS float64 `json:"tokens_per_s"`
	}
	if err := json.Unmarshal(out, &r); err != nil || r.TokensPerS <= 0 {
		return 0, fmt.Errorf("%s %s: no tokens_per_s in %q", script, mode, out)
	}
	return r.TokensPerS, nil
}

// gpuPolicyRun is one policy's decode on the GPU: its tokens/s and peak
// device memory, every round.
type gpuPolicyRun struct {
	name   string
	policy offload.Policy
	budget int64 // expert memory; 0: a slot per expert
	tps    []float64
	peak   []int64
}

// runOnce opens dir on the GPU under r's policy (resident: every expert
// uploaded with the model), decodes, and closes everything, so the
// backend's peak counts this policy's memory alone.
func (r *gpuPolicyRun) runOnce(ctx context.Context, b *gpu.Backend, dir string, prompt, steps int) error {
	b.ResetPeak()
	base := b.Live()
	var g *gpu.Model
	var closeSched func() error
	if r.policy == offload.Resident {
		host, err := model.Load(dir)
		if err != nil {
			return err
		}
		g, err = gpu.Upload(b, host)
		host.Close()
		if err != nil {
			return err
		}
	} else {
		cfg, err := model.LoadConfig(dir)
		if err != nil {
			return err
		}
		lay, err := offload.OpenLayout(dir)
		if err != nil {
			return err
		}
		scfg := offload.SchedulerConfig{Policy: r.policy, Budget: r.budget, TopK: cfg.K, Batch: 1, PregateDist: cfg.PregateDist, Depth: 2}
		store := pinnedStores[lay.Path]
		scfg.Memory = gpu.NewDeviceSlots(b)
		sched, err := offload.NewScheduler(ctx, lay, store, scfg)
		if err != nil {
			return err
		}
		closeSched = sched.Close
		host, err := model.LoadOffloaded(dir, nil)
		if err != nil {
			return errors.Join(err, closeSched())
		}
		g, err = gpu.Upload(b, host)
		host.Close()
		if err != nil {
			return errors.Join(err, closeSched())
		}
		g.SetExpertSource(sched)
	}
	s, err := g.NewSession(prompt + steps + 8)
	if err == nil {
		var sec float64
		if sec, err = gpuDecode(s, g.Cfg, prompt, steps); err == nil {
			r.tps = append(r.tps, 1/sec)
			r.peak = append(r.peak, b.Peak()-base)
		}
		err = errors.Join(err, s.Close())
	}
	err = errors.Join(err, g.Close())
	if closeSched != nil {
		err = errors.Join(err, closeSched())
	}
	return err
}

// pinnedStores holds each experts file in pinned host memory once per
// process: every offloaded policy copies from the same pinned tier.
var pinnedStores = map[string]*offload.MemStore{}

func medianF(x []float64) float64 {
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func medianI(x []int64) int64 {
	s := append([]int64(nil), x...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func benchOffloadGPU(ctx context.Context, opts benchOptions, progress io.Writer) ([]benchResult, error) {
	ob := defaultOffloadBench(opts.quick)
	dir, err := ob.switchModel(64, 1, progress)
	if err != nil {
		return nil, err
	}
	b, err := openBenchGPU(opts)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	fmt.Fprintf(progress, "gpu: %s\n", b.Describe())
	lay, err := offload.OpenLayout(dir)
	if err != nil {
		return nil, err
	}
	ms, free, err := b.PinnedStore(lay.Path, nil)
	if err != nil {
		return nil, err
	}
	defer free()
	pinnedStores[lay.Path] = ms
	for _, n := range b.Notices() {
		fmt.Fprintf(progress, "gpu: %s\n", n)
	}
	cfg, err := model.LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	// Pre-gated MoE's budget: two blocks' activated experts (the current
	// block's and the next one's), the paper's point; on-demand gets the same.
	full, err := offload.NewPlan(lay, offload.SchedulerConfig{Policy: offload.Pregated, TopK: cfg.K, Batch: 1, PregateDist: cfg.PregateDist})
	if err != nil {
		return nil, err
	}
	budget := int64(max(2*cfg.K, full.MinSlots)) * lay.SlotBytes()
	runs := []*gpuPolicyRun{
		{name: "resident", policy: offload.Resident},
		{name: "ondemand", policy: offload.OnDemand, budget: budget},
		{name: "pregated", policy: offload.Pregated, budget: budget},
	}
	rounds, prompt, steps := 3, 8, 64
	if opts.quick {
		rounds, steps = 1, 24
	}
	for round := range rounds + 1 { // round 0 warms up
		for _, r := range runs {
			if err := r.runOnce(ctx, b, dir, prompt, steps); err != nil {
				return nil, fmt.Errorf("%s: %w", r.name, err)
			}
			if round == 0 {
				r.tps, r.peak = r.tps[:0], r.peak[:0]
			} else {
				fmt.Fprintf(progress, "round %d %s: %.1f tokens/s, peak device memory %s\n", round, r.name, r.tps[len(r.tps)-1], offload.FormatBytes(r.peak[len(r.peak)-1]))
			}
		}
	}
	res, on, pre := runs[0], runs[1], runs[2]
	rt, ot, pt := medianF(res.tps), medianF(on.tps), medianF(pre.tps)
	rp, pp := medianI(res.peak), medianI(pre.peak)
	note := fmt.Sprintf("switch-base-64 (d_model 768, d_ff 3072, MoE every other layer, top-1), pre-gate distance 1, experts in pinned host RAM; expert memory %s for ondemand and pregated; %d rounds, medians", offload.FormatBytes(budget), rounds)
	out := []benchResult{
		{Name: "gpu_offload_e64_resident_tokens_per_s", Value: rt, Unit: "tokens/s", Note: note},
		{Name: "gpu_offload_e64_ondemand_tokens_per_s", Value: ot, Unit: "tokens/s"},
		{Name: "gpu_offload_e64_pregated_tokens_per_s", Value: pt, Unit: "tokens/s"},
		{Name: "gpu_offload_pregated_vs_ondemand_e64", Value: pt / ot, Unit: "x", Ratio: pt / ot, Target: 1.3},
		{Name: "gpu_offload_pregated_vs_resident_e64", Value: pt / rt, Unit: "x", Ratio: pt / rt, Target: 0.75},
		{Name: "gpu_offload_pregated_peak_memory_share", Value: float64(pp) / float64(rp), Unit: "of resident", Ratio: float64(pp) / float64(rp), Target: 0.30, TargetMax: true,
			Note: fmt.Sprintf("peak device memory: pregated %s, resident %s (weights, slots, KV cache, scratch)", offload.FormatBytes(pp), offload.FormatBytes(rp))},
	}
	return out, nil
}
