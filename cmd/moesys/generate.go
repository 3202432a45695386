package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/offload"
	"github.com/moesys/moesys/sample"
	"github.com/moesys/moesys/tokenizer"
	"github.com/moesys/moesys/train"
)

func init() {
	register("generate", "generate text from a checkpoint, streaming tokens", runGenerate)
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// generateResult is what --json prints.
type generateResult struct {
	Text         string  `json:"text"`
	PromptTokens int     `json:"prompt_tokens"`
	Tokens       int     `json:"completion_tokens"`
	StopReason   string  `json:"stop_reason"`
	TTFTMillis   float64 `json:"ttft_ms"`
	PrefillTPS   float64 `json:"prefill_tokens_per_s"`
	DecodeTPS    float64 `json:"decode_tokens_per_s"`
	// Offload is the offload plan and report of an offloaded run.
	Offload *offloadResult `json:"offload,omitempty"`
}

// openModel loads the checkpoint in dir as generate and serve run it:
// resident, or, with --offload or a directory in the offload layout, its
// dense weights with the routed experts on disk under off's budget,
// planned for batch sequences per pass (the plan, and how auto chose the
// policy, go to stderr). precision is "exact" or "fast". With --dry-run it
// prints the plan (as JSON with asJSON) and returns a nil model. offRun is
// nil for a resident model; closeModel releases everything.
func openModel(ctx context.Context, fs *flag.FlagSet, dir string, off *offloadFlags, batch int, precision string, asJSON bool,
	stdout, stderr io.Writer) (m *model.Model, offRun *offloadRun, closeModel func() error, err error) {
	switch precision {
	case "exact", "fast":
	default:
		return nil, nil, nil, fmt.Errorf("--precision %q: want exact or fast", precision)
	}
	offloaded, err := off.offloaded(fs, dir)
	if err != nil {
		return nil, nil, nil, err
	}
	if offloaded {
		cfg, err := model.LoadConfig(dir)
		if err != nil {
			return nil, nil, nil, err
		}
		scfg, r, err := planOffload(dir, cfg, off, batch)
		if err != nil {
			return nil, nil, nil, err
		}
		if off.dryRun {
			return nil, nil, nil, r.dryRun(asJSON, stdout, stderr)
		}
		if r.auto != "" {
			fmt.Fprintf(stderr, "offload policy %s\n", r.auto)
		}
		fmt.Fprintf(stderr, "offload plan: %s\n", r.plan)
		if m, closeModel, err = openOffloaded(ctx, dir, scfg, r, off.noMeasure, stderr); err != nil {
			return nil, nil, nil, err
		}
		offRun = r
	} else {
		if m, err = model.Load(dir); err != nil {
			return nil, nil, nil, err
		}
		closeModel = m.Close
	}
	if precision == "fast" {
		m.SetPrecision(model.Fast)
	}
	return m, offRun, closeModel, nil
}

// loadTokenizer finds the checkpoint's tokenizer: tokenizer.json in dir, or
// moesys' byte-level one for byte-vocabulary models.
func loadTokenizer(dir string, cfg *model.Config) (tokenizer.Tokenizer, error) {
	if _, err := os.Stat(filepath.Join(dir, tokenizer.FileName)); err == nil {
		return tokenizer.Load(dir)
	}
	if cfg.V == tokenizer.ByteVocab {
		return &tokenizer.Byte{}, nil
	}
	return nil, fmt.Errorf("%s has no %s and its vocabulary (%d) is not byte-level", dir, tokenizer.FileName, cfg.V)
}

func runGenerate(args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("model", "", "checkpoint directory (config.json, safetensors, tokenizer.json), an offload layout, or a training run (its latest checkpoint)")
	prompt := fs.String("prompt", "", "prompt text")
	p := sample.Defaults()
	fs.Float64Var(&p.Temperature, "temperature", 0.8, "sampling temperature; 0 = greedy")
	fs.IntVar(&p.TopK, "top-k", 0, "keep the k most likely tokens (0 = off)")
	fs.Float64Var(&p.TopP, "top-p", 0.95, "nucleus mass (1 = off)")
	fs.Float64Var(&p.MinP, "min-p", 0, "drop tokens below min-p x the top probability (0 = off)")
	fs.Float64Var(&p.RepetitionPenalty, "repetition-penalty", 1, "HF/CTRL repetition penalty (1 = off)")
	fs.Uint64Var(&p.Seed, "seed", 0, "sampling seed (same seed, same text)")
	fs.IntVar(&p.MaxTokens, "max-tokens", 128, "most tokens to generate")
	var stops stringList
	fs.Var(&stops, "stop", "stop string (repeatable)")
	noBOS := fs.Bool("no-special", false, "do not add the tokenizer's special tokens (BOS) around the prompt")
	precision := fs.String("precision", "fast", "exact (f32 products) or fast (bf16 dot products for prefill)")
	asJSON := fs.Bool("json", false, "print one JSON object with the text and speeds (and the offload plan and report) instead of streaming")
	var off offloadFlags
	off.register(fs)
	var dev deviceFlags
	dev.register(fs)
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "Usage: moesys generate --model DIR --prompt TEXT [sampling flags] [--device cuda [--compute bf16|f32]] [--json]")
		fmt.Fprintln(w, "       moesys generate --model DIR --offload POLICY --expert-mem BYTES [--cache NAME] [--dry-run] [--no-measure] ...")
		fmt.Fprintln(w, "\nStreams the continuation to stdout, then prefill and decode tokens/s to stderr.")
		fmt.Fprintln(w, "\nOffloaded (--offload, or DIR in the layout `moesys convert` writes): the routed experts")
		fmt.Fprintln(w, "stay in DIR/experts.bin, read with O_DIRECT into --expert-mem bytes of slots as the")
		fmt.Fprintln(w, "policy says; everything else is loaded. The planner prints its plan first (--dry-run:")
		fmt.Fprintln(w, "only that); a budget below the policy's minimum is an error naming the minimum. The")
		fmt.Fprintln(w, "output equals the resident run's. After the run a report: tokens/s against the disk's")
		fmt.Fprintln(w, "bound (its read bandwidth, measured at --read-depth first, over the bytes read per token),")
		fmt.Fprintln(w, "bytes per token, slot hit rate, predictor precision/recall, stall time, overlap and peak")
		fmt.Fprintln(w, "expert memory (in --json too).")
		fmt.Fprintln(w, "\nOn a GPU (--device cuda): the weights go to device memory in --compute precision; with")
		fmt.Fprintln(w, "--offload the slots are device memory, filled over PCIe from pinned host RAM (--host-tier")
		fmt.Fprintln(w, "pinned) or from disk through pinned bounce buffers (--host-tier disk). Without a GPU, or a")
		fmt.Fprintln(w, "binary built without cgo, it says so in one line and runs on the CPU.")
		fmt.Fprintln(w, "\nFlags:")
		fs.VisitAll(func(f *flag.Flag) { fmt.Fprintf(w, "  --%-19s %s (default %q)\n", f.Name, f.Usage, f.DefValue) })
		fmt.Fprintln(w, "\nExamples:\n  moesys generate --model testdata/hf/mixtral_f32 --prompt hello --temperature 0")
		fmt.Fprintln(w, "  moesys generate --model ~/models/OLMoE-1B-7B --prompt 'The capital of France' --top-p 0.9 --seed 7 --json")
		fmt.Fprintln(w, "  moesys convert --model ~/models/OLMoE-1B-7B --out ~/models/olmoe.offload")
		fmt.Fprintln(w, "  moesys generate --model ~/models/olmoe.offload --offload ondemand --expert-mem 2GiB --dry-run")
		fmt.Fprintln(w, "  moesys generate --model ~/models/olmoe.offload --offload ondemand --expert-mem 1.5G --prompt hello --temperature 0")
		fmt.Fprintln(w, "  moesys generate --model ~/models/olmoe.offload --device cuda --offload pregated --expert-mem 4GiB --prompt hello")
	}
	if done, err := parseFlags(fs, args, "generate", usage, stdout, stderr); done {
		return err
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "moesys generate: --model is required")
		fmt.Fprintln(stderr)
		usage(stderr)
		return errUsage
	}
	*dir = modelDir(*dir, "generating with", stderr)
	p.StopStrings = stops
	if err := dev.check(); err != nil {
		return err
	}
	ctx := context.Background()
	var cfg *model.Config
	var newSeq func(maxT int) (seqRunner, error)
	var offRun *offloadRun
	var closeModel func() error
	note := kernel.Note()
	if dev.device == "cuda" && !off.dryRun {
		gr, err := openGPU(ctx, fs, *dir, &off, &dev, stderr)
		if err != nil {
			return err
		}
		if gr != nil { // nil: no GPU, the notice is out, run on the CPU
			cfg, newSeq, offRun, closeModel, note = gr.cfg, gr.newSeq, gr.off, gr.close, ""
		}
	}
	if newSeq == nil {
		m, or, cm, err := openModel(ctx, fs, *dir, &off, 1, *precision, *asJSON, stdout, stderr)
		if err != nil || m == nil { // m == nil: --dry-run printed the plan
			return err
		}
		cfg, offRun, closeModel = m.Cfg, or, cm
		newSeq = func(maxT int) (seqRunner, error) { return cpuSeq{m.NewSession(maxT)}, nil }
	}
	defer func() { err = errors.Join(err, closeModel()) }()
	tok, err := loadTokenizer(*dir, cfg)
	if err != nil {
		return err
	}
	p.EOS = append(append([]int32(nil), tok.EOS()...), cfg.EOS...)
	sampler, err := sample.New(p)
	if err != nil {
		return err
	}
	ids := tok.Encode(*prompt)
	if !*noBOS {
		ids = tok.EncodeSpecial(*prompt)
	}
	if len(ids) == 0 {
		return errors.New("empty prompt: give --prompt text (or drop --no-special to start from BOS)")
	}
	maxT := len(ids) + p.MaxTokens
	if p.MaxTokens == 0 {
		maxT = len(ids) + 4096
	}
	if cfg.MaxPos > 0 {
		maxT = min(maxT, cfg.MaxPos)
	}
	if len(ids) >= maxT {
		return fmt.Errorf("prompt of %d tokens leaves no room in the %d-position context", len(ids), maxT)
	}
	if note != "" {
		fmt.Fprintln(stderr, note)
	}
	s, err := newSeq(maxT)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.Close()) }()
	stopper := sample.NewStopper(p)
	dec := tokenizer.NewDecoder(tok, true)
	var text strings.Builder
	emit := func(piece string) {
		text.WriteString(piece)
		if !*asJSON && piece != "" {
			fmt.Fprint(stdout, piece)
		}
	}

	t0 := time.Now()
	logits, err := s.ForwardContext(ctx, ids)
	if err != nil {
		return err
	}
	ttft := time.Since(t0)
	var prefillReport offload.Report
	if offRun != nil {
		prefillReport = offRun.interval("prefill", len(ids), ttft)
	}
	history := append([]int32(nil), ids...)
	V := cfg.V
	var decodeTime time.Duration
	var n int
	for {
		next := sampler.Next(logits[len(logits)-V:], history)
		history = append(history, next)
		n++
		out, done := stopper.Push(next, dec.Push(next))
		emit(out)
		if done || s.Position() >= maxT {
			break
		}
		t := time.Now()
		if logits, err = s.ForwardContext(ctx, []int32{next}); err != nil {
			return err
		}
		decodeTime += time.Since(t)
	}
	if stopper.Reason() == sample.StopNone {
		emit(stopper.Flush())
	}
	res := generateResult{Text: text.String(), PromptTokens: len(ids), Tokens: n, StopReason: stopper.Reason().String(),
		TTFTMillis: ttft.Seconds() * 1000, PrefillTPS: float64(len(ids)) / ttft.Seconds()}
	if n > 1 {
		res.DecodeTPS = float64(n-1) / decodeTime.Seconds()
	}
	if offRun != nil && off.report {
		res.Offload = &offloadResult{Plan: offRun.planResult(), OpenBytesRead: offRun.open.BytesRead,
			Prefill: prefillReport, Decode: offRun.interval("decode", n-1, decodeTime)}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintln(stdout)
	fmt.Fprintf(stderr, "prompt %d tokens: prefill %.1f tokens/s (time to first token %.0f ms); generated %d tokens: decode %.1f tokens/s; stop: %s\n",
		len(ids), res.PrefillTPS, res.TTFTMillis, n, res.DecodeTPS, res.StopReason)
	if res.Offload != nil {
		printOffloadReport(stderr, res.Offload)
	}
	return nil
}

// modelDir returns the directory a --model flag names: a model or
// checkpoint directory (it has config.json) as it is; a training run's
// output directory, or its latest file, as the run's latest checkpoint,
// which it tells on stderr ("<doing> DIR (the run's latest checkpoint)").
// Anything else is returned as given, for the loader to report.
func modelDir(dir, doing string, stderr io.Writer) string {
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return dir
	}
	ckpt, err := train.ResolveCheckpoint(dir)
	if err != nil {
		return dir
	}
	fmt.Fprintf(stderr, "%s %s (the run's latest checkpoint)\n", doing, ckpt)
	return ckpt
}
