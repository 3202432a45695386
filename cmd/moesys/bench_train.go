package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/train"
)

func init() {
	benchSuites["train"] = struct {
		summary string
		run     func(opts benchOptions, progress io.Writer) ([]benchResult, error)
	}{"training step tokens/s vs PyTorch on the same cores, and model FLOP utilisation", benchTrain}
}

// peerScript is the PyTorch peer (../shared/peers/baseline_torch.py from
// the repository root), overridable with MOESYS_TORCH_PEER.
func peerScript() string {
	if p := os.Getenv("MOESYS_TORCH_PEER"); p != "" {
		return p
	}
	return filepath.Join("..", "shared", "peers", "baseline_torch.py")
}

// peerTrainTokS runs one peer measurement in mode ("t1" or "t2omp") and
// returns its median tokens/s, or an error saying why it could not run.
func peerTrainTokS(mode string, runs int) (float64, error) {
	script := peerScript()
	if _, err := os.Stat(script); err != nil {
		return 0, fmt.Errorf("no peer script at %s (set MOESYS_TORCH_PEER)", script)
	}
	// Debian's own python3: the OS packages python3-torch and
	// libopenblas0-openmp live there, not in a python3 earlier on PATH.
	python := "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import torch").Run(); err != nil {
		return 0, fmt.Errorf("PyTorch is not installed for %s (apt-get install python3-torch libopenblas0-openmp)", python)
	}
	out, err := os.CreateTemp("", "moesys-peer-*.json")
	if err != nil {
		return 0, err
	}
	out.Close()
	defer os.Remove(out.Name())
	cmd := exec.Command(python, script, "--only", "train", "--modes", mode, "--runs", fmt.Sprint(runs), "--json", out.Name())
	if msg, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("peer %s: %v\n%s", mode, err, msg)
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		return 0, err
	}
	var rep struct {
		Results []struct {
			Bench string    `json:"bench"`
			TokS  []float64 `json:"tok_s"`
		} `json:"results"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		return 0, fmt.Errorf("peer output: %v", err)
	}
	for _, r := range rep.Results {
		if r.Bench == "train_step" && len(r.TokS) > 0 {
			return median(r.TokS), nil
		}
	}
	return 0, fmt.Errorf("peer %s reported no train_step result", mode)
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// benchTrainer builds a trainer for preset name over random byte tokens.
func benchTrainer(name string, mod func(o *train.Options)) (*train.Trainer, train.Options, error) {
	o, err := train.PresetOptions(name)
	if err != nil {
		return nil, o, err
	}
	if mod != nil {
		mod(&o)
	}
	tr, err := train.NewTrainer(o, randomCorpus(o))
	return tr, o, err
}

// randomCorpus is 8 batches of o's shape of random tokens (the same on
// every rank), a quarter held out.
func randomCorpus(o train.Options) *train.Corpus {
	rng := rand.New(rand.NewPCG(1, 2))
	toks := make([]int32, 8*o.Batch*(o.Seq+1))
	for i := range toks {
		toks[i] = int32(rng.IntN(o.Model.V))
	}
	return &train.Corpus{Train: toks[:len(toks)*3/4], Val: toks[len(toks)*3/4:], Source: "random bytes"}
}

// stepTokS times steps optimizer steps after one warm-up step and returns
// tokens/s of each.
func stepTokS(tr *train.Trainer, o train.Options, steps int) ([]float64, error) {
	ctx := context.Background()
	if _, err := tr.TrainStep(ctx); err != nil {
		return nil, err
	}
	var v []float64
	for i := 0; i < steps; i++ {
		t := time.Now()
		if _, err := tr.TrainStep(ctx); err != nil {
			return nil, err
		}
		v = append(v, float64(o.Batch*o.Seq*o.Accum)/time.Since(t).Seconds())
	}
	return v, nil
}

// trainFlopsPerToken is the model FLOPs of one trained token: 6 per active
// weight (forward 2, backward 4) plus causal attention, 6*L*T*D per token
// (half of the 12*L*T*D of full attention).
func trainFlopsPerToken(c *model.Config, T int) float64 {
	active := float64(c.V * c.D) // head
	for l := 0; l < c.L; l++ {
		active += float64(2*c.D*c.H*c.Dh + 2*c.D*c.G*c.Dh)
		if c.MoE[l] {
			active += float64(c.D*c.E + c.K*3*c.D*c.ExpertFFN + 3*c.D*c.SharedFFN)
		} else {
			active += float64(3 * c.D * c.DenseFFN)
		}
	}
	return 6*active + 6*float64(c.L*T*c.H*c.Dh)
}

func benchTrain(opts benchOptions, progress io.Writer) ([]benchResult, error) {
	if len(opts.ranks) > 0 {
		return benchTrainRanks(opts, progress)
	}
	var res []benchResult
	rounds, steps := 3, 5
	if opts.quick {
		rounds, steps = 2, 3
	}
	// (1) The small model, moesys and PyTorch alternating, 1 and 2 threads.
	type side struct{ moesys, bf16, torch []float64 }
	modes := []struct {
		name, peer string
		threads    int
	}{{"t1", "t1", 1}, {"t2", "t2omp", 2}}
	got := make([]side, len(modes))
	var peerErr error
	for r := 0; r < rounds; r++ {
		for i, m := range modes {
			kernel.SetThreads(m.threads)
			tr, o, err := benchTrainer("small", nil)
			if err != nil {
				return nil, err
			}
			v, err := stepTokS(tr, o, steps)
			if err != nil {
				return nil, err
			}
			got[i].moesys = append(got[i].moesys, median(v))
			fmt.Fprintf(progress, "round %d %s: moesys %.0f tokens/s", r+1, m.name, median(v))
			if tr, o, err = benchTrainer("small", func(o *train.Options) { o.BF16 = true }); err != nil {
				return nil, err
			}
			vb, err := stepTokS(tr, o, steps)
			if err != nil {
				return nil, err
			}
			got[i].bf16 = append(got[i].bf16, median(vb))
			fmt.Fprintf(progress, " (bf16 products %.0f)", median(vb))
			if peerErr == nil {
				p, err := peerTrainTokS(m.peer, 1)
				if err != nil {
					peerErr = err
				} else {
					got[i].torch = append(got[i].torch, p)
					fmt.Fprintf(progress, ", PyTorch (%s) %.0f tokens/s", m.peer, p)
				}
			}
			fmt.Fprintln(progress)
		}
	}
	kernel.SetThreads(2)
	for i, m := range modes {
		ms := median(got[i].moesys)
		r := benchResult{Name: "train_step_small_" + m.name + "_vs_torch", Value: ms, Unit: "tok/s", Target: 2.0}
		if len(got[i].torch) > 0 {
			ts := median(got[i].torch)
			r.Bound, r.Ratio = ts, ms/ts
			r.Note = fmt.Sprintf("bound = PyTorch 1.13 %s tokens/s (median of %d runs alternating with moesys)", m.peer, len(got[i].torch))
		} else {
			r.Note = "PyTorch peer not run: " + peerErr.Error()
		}
		res = append(res, r)
		if kernel.CurrentLevel() >= kernel.LevelAVX512BF16 {
			rb := benchResult{Name: "train_step_small_" + m.name + "_bf16_vs_torch", Value: median(got[i].bf16), Unit: "tok/s",
				Note: "--bf16: bf16 weights over fp32 masters, bf16 dot products for forward and input gradients (PyTorch runs fp32)"}
			if len(got[i].torch) > 0 {
				rb.Bound, rb.Ratio = median(got[i].torch), median(got[i].bf16)/median(got[i].torch)
			}
			res = append(res, rb)
		}
	}

	// (2) Model FLOP utilisation of the medium model on 2 threads.
	p := measurePeaks(opts, progress)
	tr, o, err := benchTrainer("medium", nil)
	if err != nil {
		return nil, err
	}
	mediumSteps := 3
	if opts.quick {
		mediumSteps = 2
	}
	v, err := stepTokS(tr, o, mediumSteps)
	if err != nil {
		return nil, err
	}
	tps := median(v)
	flops := trainFlopsPerToken(o.Model, o.Seq) * tps / 1e9
	peak, which := p.fma[2], "fp32 FMA"
	if o.BF16 {
		peak, which = p.bf16[2], "bf16 dot"
	}
	res = append(res, benchResult{Name: "train_mfu_medium_t2", Value: flops, Unit: "GFLOP/s", Bound: peak, Ratio: flops / peak, Target: 0.40,
		Note: fmt.Sprintf("%.0f tokens/s; model FLOPs %.0f MFLOP/token; bound = measured 2-thread %s peak", tps, trainFlopsPerToken(o.Model, o.Seq)/1e6, which)})
	return res, nil
}
