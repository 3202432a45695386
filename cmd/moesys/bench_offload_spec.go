package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/offload"
	"github.com/moesys/moesys/train"
)

// tinyPrompt is Go source: what the trained tiny model has read.
const tinyPrompt = "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() {\n\tif len(os.Args) < 2 {\n\t\tfmt."

// speculative runs a model moesys trained (no pre-gates) under
// speculative and ondemand at a budget of tinyShare of its experts, on
// the disk and over a link chosen as in sim, and reports the predictor's
// precision and recall per layer.
func (b offloadBench) speculative(ctx context.Context, progress io.Writer) ([]benchResult, error) {
	src, err := b.tinyCheckpoint(ctx, progress)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(b.cache, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(b.cache, "tiny-offload-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	dir := filepath.Join(tmp, "offload")
	if err := model.ConvertToOffload(src, dir); err != nil {
		return nil, err
	}
	bm, err := openBenchModel(dir, "tiny")
	if err != nil {
		return nil, err
	}
	defer bm.Close()
	prompt := []byte(tinyPrompt)
	bm.prompt = func(seq, n int) []int32 {
		t := make([]int32, n)
		for i := range t {
			t[i] = int32(prompt[(i+seq)%len(prompt)])
		}
		return t
	}
	n := len(prompt)
	slots := int(math.Ceil(b.tinyShare * float64(len(bm.lay.Blocks))))
	if m, err := bm.minSlots(offload.Speculative, 1); err != nil || slots < m {
		return nil, fmt.Errorf("tiny: %d slots (%.0f%% of the experts) below speculative's minimum %d: %v", slots, 100*b.tinyShare, m, err)
	}
	fmt.Fprintf(progress, "offload: speculative on %s (%d MoE layers x %d experts, top-%d), budget %d slots (%.0f%% of the experts)\n",
		src, bm.moeLayers(), bm.cfg.E, bm.cfg.K, slots, 100*b.tinyShare)

	// compare alternates speculative and ondemand, each over a store
	// from store.
	compare := func(what string, store func() offload.Store) (spec, ond runStats, err error) {
		prs := []*policyRun{{policy: offload.Speculative, slots: slots}, {policy: offload.OnDemand, slots: slots}}
		for _, pr := range prs {
			if pr.src, err = bm.open(ctx, store(), pr.policy, 1, pr.slots); err != nil {
				break
			}
		}
		if err == nil {
			err = bm.alternate(ctx, what, prs, 1, n, b.tinyDecode, b.rounds, nil, progress)
		}
		if err = errors.Join(err, closePolicies(prs)); err != nil {
			return spec, ond, err
		}
		return medianRun(prs[0].runs), medianRun(prs[1].runs), nil
	}
	var res []benchResult
	vs := func(name, how string, spec, ond runStats) benchResult {
		return benchResult{Name: name, Value: spec.tokS(), Unit: "tokens/s", Bound: ond.tokS(), Ratio: spec.tokS() / ond.tokS(),
			Note: fmt.Sprintf("speculative tokens/s over ondemand's, %s, both at %s (%.0f%% of the experts), %d decode tokens after a %d-byte Go prompt; hit rate %.0f%% vs %.0f%%, %.2f vs %.2f MB read per token",
				how, spec.memory(), 100*b.tinyShare, spec.tokens, n, 100*spec.counts.HitRate(), 100*ond.counts.HitRate(), spec.readPerToken()/1e6, ond.readPerToken()/1e6)}
	}

	store, err := offload.OpenFileStore(bm.lay.Path)
	if err != nil {
		return nil, err
	}
	spec, ond, err := compare("disk", func() offload.Store { return store })
	if err = errors.Join(err, store.Close()); err != nil {
		return nil, err
	}
	res = append(res, vs("offload_speculative_vs_ondemand_tiny_disk", "experts read with O_DIRECT", spec, ond))
	for _, p := range spec.preds {
		c := offload.Counts{Predicted: p.Predicted, PredictedUsed: p.Used, Unpredicted: p.Unpredicted}
		res = append(res,
			benchResult{Name: fmt.Sprintf("offload_speculative_tiny_l%d_precision", p.Layer), Value: c.Precision(), Unit: "fraction",
				Note: fmt.Sprintf("layer %d: %d of the %d experts predicted (layer %d's router on the previous MoE layer's input) were used", p.Layer, p.Used, p.Predicted, p.Layer)},
			benchResult{Name: fmt.Sprintf("offload_speculative_tiny_l%d_recall", p.Layer), Value: c.Recall(), Unit: "fraction",
				Note: fmt.Sprintf("layer %d: %d of the %d experts used were predicted", p.Layer, p.Used, p.Used+p.Unpredicted)})
	}
	all := spec.counts
	res = append(res, benchResult{Name: "offload_speculative_tiny_precision", Value: all.Precision(), Unit: "fraction",
		Note: fmt.Sprintf("all predicted layers; recall %.3f", all.Recall())})

	// The same over a link chosen as in sim: one expert per MoE block.
	defer b.simCompute()()
	sl, err := openSim(bm.lay, progress)
	if err != nil {
		return res, err
	}
	resident, err := bm.open(ctx, sl.mem, offload.Resident, 1, len(bm.lay.Blocks))
	if err != nil {
		return res, errors.Join(err, sl.Close())
	}
	calib, err := bm.calibrate(ctx, resident, n, b.tinyDecode, b.rounds, progress)
	if err = errors.Join(err, resident.Close()); err != nil {
		return res, errors.Join(err, sl.Close())
	}
	block := calib.seconds / float64(calib.tokens) / float64(bm.moeLayers())
	sl.gbps = float64(bm.lay.SlotBytes()) / block / 1e9
	gbps := sl.gbps
	fmt.Fprintf(progress, "offload: resident tiny: %.3f ms per MoE block; link %.2f GB/s moves one expert (%s) in that time\n", 1000*block, gbps, humanBytes(bm.lay.SlotBytes()))
	spec, ond, err = compare("sim", func() offload.Store { return sl.link() })
	if err = errors.Join(err, sl.Close()); err != nil {
		return res, err
	}
	res = append(res, vs("offload_speculative_vs_ondemand_tiny_sim", fmt.Sprintf("simulated link %.2f GB/s (one expert per MoE block's compute, %.3f ms; %s)", gbps, 1000*block, b.simNote()), spec, ond))
	return res, nil
}

// tinyCheckpoint returns a checkpoint of the tiny preset trained by
// moesys: tiny.existing when present (runs/tiny/step-00000500 after `make
// demo`-like training), else one trained once in-process into the cache.
func (b offloadBench) tinyCheckpoint(ctx context.Context, progress io.Writer) (string, error) {
	t := b.tiny
	if t.existing != "" {
		if _, err := os.Stat(filepath.Join(t.existing, "config.json")); err == nil {
			return t.existing, nil
		}
	}
	out := filepath.Join(b.cache, fmt.Sprintf("%s-trained-%d", t.preset, t.steps))
	if dir, err := train.ResolveCheckpoint(out); err == nil {
		if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
			return dir, nil
		}
	}
	o, err := train.PresetOptions(t.preset)
	if err != nil {
		return "", err
	}
	o.Steps = t.steps
	if t.mod != nil {
		t.mod(&o)
	}
	var corpus *train.Corpus
	if t.corpus != nil {
		corpus, err = t.corpus(ctx)
	} else {
		corpus, err = train.LoadCorpus(ctx, train.DataSpec{}, nil)
	}
	if err != nil {
		return "", err
	}
	tr, err := train.NewTrainer(o, corpus)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(progress, "offload: training the %s preset for %d steps on %s (once, into %s)\n", t.preset, t.steps, corpus.Source, out)
	start := time.Now()
	var last train.StepResult
	for range t.steps {
		if last, err = tr.TrainStep(ctx); err != nil {
			return "", err
		}
	}
	dir, err := tr.Save(out, 1)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(progress, "offload: trained %d steps in %.0f s (loss %.2f)\n", t.steps, time.Since(start).Seconds(), last.Loss)
	return dir, nil
}
