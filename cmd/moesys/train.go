package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/internal/atomicfile"
	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/train"
)

func init() {
	register("train", "train a MoE model (presets, config files, resume, pre-gate conversion)", runTrain)
}

// trainFile is the --config file: an optional base preset, the model as
// config.json fields, and any training option.
type trainFile struct {
	Preset string          `json:"preset"`
	Model  json.RawMessage `json:"model"`
	train.Options
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func runTrain(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	preset := fs.String("preset", "tiny", "built-in configuration: "+strings.Join(train.PresetNames(), ", "))
	config := fs.String("config", "", "JSON config file: {\"preset\": ..., \"model\": {config.json fields}, training options...}")
	data := fs.String("data", "", "training text: a file, a directory, or - for stdin (default: the Go standard library sources in GOROOT)")
	glob := fs.String("glob", "", "file name pattern when --data is a directory (default *; *.go for the default corpus)")
	valFrac := fs.Float64("val-fraction", 0, "share of the data held out for validation (default 0.05)")
	out := fs.String("out", "", "output directory for checkpoints (default runs/PRESET)")
	resume := fs.String("resume", "", "resume from a checkpoint directory or a run's output directory")
	from := fs.String("from", "", "with --convert-pregate: the conventional checkpoint to convert")
	convert := fs.Bool("convert-pregate", false, "convert --from into a pre-gated model and fine-tune it; reports routing agreement and validation loss")
	var tasks taskFlags
	fs.Var(&tasks, "task", "a task of a multi-task run, repeatable: NAME=DATA,batch=N[,cost=C] (DATA as --data, \"default\" for the default corpus; cost: relative cost of one sequence, default 1); --batch becomes the tasks' sum")
	taskFFN := fs.Int("task-ffn", 0, "multi-task: hidden size of each task expert (default the expert FFN size)")
	taskPlacement := fs.String("task-placement", "elastic", "multi-task over several ranks: elastic (ranks by workload) or one-per-task")
	logPath := fs.String("log", "", "write JSON log lines (one per step and evaluation) to this file")
	sampleN := fs.Int("sample", 0, "after training, generate this many bytes from the final checkpoint")
	prompt := fs.String("prompt", "func ", "prompt for --sample")
	threads := fs.Int("threads", 0, "compute threads (default: all cores)")
	alltoall := fs.String("alltoall", "", "expert exchange of a parallel run: flat, hierarchical (inside each node, then between nodes) or auto (default auto)")
	perNode := fs.Int("ranks-per-node", 0, "ranks per node for --alltoall hierarchical (default: from MPI's shared-memory split; in-process ranks are one node)")
	bucketMB := fs.Float64("bucket-mb", 0, "fused gradient all-reduce bucket size in MiB (default 4)")
	shardDense := fs.Bool("shard-dense", false, "shard the dense parameters (attention, norms, routers, embedding, head) over the ranks, ZeRO-3 style: each rank keeps 1/W of their weights, gradients and optimizer state, gathers each layer's weights one layer ahead of its use and reduce-scatters its gradients (path 1 of 2D prefetch); needs --ranks > 1 or mpirun; with --storage, both paths of 2D prefetch run; not with --task or tied embeddings; checkpoints are ordinary and resume with or without it")
	embedPartition := fs.Bool("embed-partition", false, "split the embedding table along the hidden dimension over the ranks (each keeps [vocab, d_model/W] of its weights, gradients and optimizer state; all-to-alls of ids, rows and gradients), e.g. moesys train --preset tiny --ranks 2 --embed-partition; needs --ranks > 1 or mpirun and d_model divisible by the rank count; not with --shard-dense (which shards the embedding already) or tied embeddings; checkpoints hold the whole table and resume with or without it")
	ranks := fs.Int("ranks", 1, "in-process ranks of data + expert parallel training (experts sharded over them); under mpirun each process is one rank instead")
	// Overrides of the preset's options (0 / empty: keep).
	steps := fs.Int("steps", 0, "optimizer steps")
	lr := fs.Float64("lr", 0, "peak learning rate (--convert-pregate: default a tenth of the checkpoint's)")
	batch := fs.Int("batch", 0, "sequences per micro-batch")
	seq := fs.Int("seq", 0, "tokens per sequence")
	accum := fs.Int("accum", 0, "micro-batches per optimizer step (gradient accumulation)")
	seed := fs.Uint64("seed", 0, "seed for initialisation, batches and router jitter")
	pregate := fs.Int("pregate", -1, "pre-gate distance 1-3 (0 = conventional gates); for --convert-pregate default 1")
	bf16 := fs.Bool("bf16", false, "bf16 weights over an fp32 master copy")
	recompute := fs.Bool("recompute", false, "recompute activations in backward (less memory)")
	evalEvery := fs.Int("eval-every", -1, "steps between validation losses")
	saveEvery := fs.Int("save-every", -1, "steps between checkpoints (0 = only at the end)")
	keep := fs.Int("keep", -1, "checkpoints to keep (0 = all)")
	asJSON := fs.Bool("json", false, "print the run summary as JSON")
	storage := fs.String("storage", "", "hierarchical storage: keep the experts' parameters and optimizer state (fp32 masters, AdamW moments, deferred gradients) in DIR on the SSD tier, hot experts cached in RAM, working copies of two layers' experts in the compute tier; with --ranks or mpirun each rank keeps its own experts' in files of its own in DIR")
	sparseMem := fs.String("sparse-mem", "", "with --storage: RAM for cached expert state and one layer's deferred gradients (e.g. 256MiB), per rank; at least one MoE layer's experts")
	denseMem := fs.String("dense-mem", "", "with --storage: RAM for dense state and the compute tier (two layers' experts' working copies), per rank; the plan is refused if they do not fit (default unchecked)")
	planOnly := fs.Bool("plan", false, "with --storage: print where everything lives and exit (a dry run)")
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "Usage: moesys train [--preset NAME | --config FILE] [--data PATH] [--out DIR] [overrides]")
		fmt.Fprintln(w, "       moesys train --resume DIR [--steps N]")
		fmt.Fprintln(w, "       moesys train --from CKPT --convert-pregate [--pregate 1] [--steps N]")
		fmt.Fprintln(w, "\nTrains a decoder-only MoE transformer on byte-level text with AdamW, showing")
		fmt.Fprintln(w, "loss, tokens/s and ETA. Checkpoints (Hugging Face safetensors + config.json,")
		fmt.Fprintln(w, "optimizer state, trainer state) are written atomically every --save-every steps,")
		fmt.Fprintln(w, "at the end, and on SIGINT/SIGTERM (the step in flight finishes first).")
		fmt.Fprintln(w, "\nPresets:")
		for _, n := range train.PresetNames() {
			fmt.Fprintf(w, "  %-14s %s\n", n, train.Presets[n].About)
		}
		fmt.Fprintln(w, "\nFlags:")
		fs.VisitAll(func(f *flag.Flag) { fmt.Fprintf(w, "  --%-16s %s (default %q)\n", f.Name, f.Usage, f.DefValue) })
		fmt.Fprintln(w, "\nExamples:")
		fmt.Fprintln(w, "  moesys train --preset tiny --sample 200")
		fmt.Fprintln(w, "  moesys train --preset small --data ~/corpus --glob '*.txt' --steps 5000 --log run.jsonl")
		fmt.Fprintln(w, "  moesys train --resume runs/small --steps 8000")
		fmt.Fprintln(w, "  moesys train --from runs/tiny --convert-pregate --steps 100 --out runs/tiny-pregated")
		fmt.Fprintln(w, "  moesys train --preset tiny --ranks 4                 # 4 in-process ranks, 2 experts each")
		fmt.Fprintln(w, "  moesys train --preset tiny --ranks 2 --shard-dense   # dense parameters sharded too (ZeRO-3)")
		fmt.Fprintln(w, "  moesys train --preset tiny --ranks 2 --embed-partition   # embedding split by columns over the ranks")
		fmt.Fprintln(w, "  moesys train --preset small --bf16 --storage /ssd/moesys --sparse-mem 48MiB --plan")
		fmt.Fprintln(w, "                                                       # where the state lives (expert state on SSD, 25% cached)")
		fmt.Fprintln(w, "  moesys train --preset small --bf16 --ranks 2 --shard-dense --storage /ssd/moesys --sparse-mem 24MiB")
		fmt.Fprintln(w, "                                                       # both paths of 2D prefetch: dense shards gathered, expert state from SSD")
		fmt.Fprintln(w, "  mpirun -np 2 moesys train --preset tiny --out runs/tiny-mpi   # one rank per process (Open MPI)")
		fmt.Fprintln(w, "  moesys generate --model runs/tiny/step-00000300 --prompt 'func main() {'")
	}
	if done, err := parseFlags(fs, args, "train", usage, stdout, stderr); done {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "moesys train: unexpected argument %q\n\n", fs.Arg(0))
		usage(stderr)
		return errUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *convert && *from == "" {
		return errors.New("--convert-pregate needs --from CKPT")
	}
	if *from != "" && !*convert {
		return errors.New("--from is only used with --convert-pregate (to continue a run, use --resume)")
	}
	if *resume != "" && (set["config"] || set["preset"] || *convert) {
		return errors.New("--resume takes the checkpoint's own configuration: drop --preset/--config/--convert-pregate")
	}
	if *threads > 0 {
		kernel.SetThreads(*threads)
	}
	if r := os.Getenv("OMPI_COMM_WORLD_RANK"); dist.UnderMPI() && r != "0" {
		stderr = io.Discard // rank 0 reports; the others' errors still reach main
	}
	if *ranks < 1 {
		return fmt.Errorf("--ranks %d: want at least 1", *ranks)
	}
	if (*ranks > 1 || dist.UnderMPI()) && *convert {
		return errors.New("--convert-pregate runs in one process: drop --ranks (and mpirun)")
	}

	// Options: preset, config file, or the checkpoint's; then overrides.
	var o train.Options
	var err error
	name := *preset
	var ckpt string
	switch {
	case *resume != "":
		if ckpt, err = train.ResolveCheckpoint(*resume); err != nil {
			return err
		}
		var step int
		if o, step, err = train.ReadCheckpointOptions(ckpt); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "resuming %s at step %d\n", ckpt, step)
		if *out == "" {
			*out = filepath.Dir(ckpt)
		}
	case *convert:
		if ckpt, err = train.ResolveCheckpoint(*from); err == nil {
			o, _, err = train.ReadCheckpointOptions(ckpt)
		} else if _, serr := os.Stat(filepath.Join(*from, "config.json")); serr == nil {
			// A plain Hugging Face checkpoint: train it with the preset's options.
			ckpt = *from
			o, err = train.PresetOptions(name)
		}
		if err != nil {
			return err
		}
		name = filepath.Base(filepath.Clean(*from)) + "-pregated"
	case *config != "":
		if o, err = readTrainFile(*config); err != nil {
			return err
		}
		name = strings.TrimSuffix(filepath.Base(*config), filepath.Ext(*config))
	default:
		if o, err = train.PresetOptions(name); err != nil {
			return err
		}
	}
	over := func(flagName string, apply func()) {
		if set[flagName] {
			apply()
		}
	}
	if *convert && !set["lr"] {
		// Fine-tuning a trained model: a tenth of its peak learning rate
		// (the full peak from fresh optimizer state undoes its training).
		o.LR, o.MinLR = o.LR/10, o.LR/100
	}
	over("steps", func() { o.Steps = *steps })
	over("lr", func() { o.LR, o.MinLR = *lr, *lr/10 })
	over("batch", func() { o.Batch = *batch })
	over("seq", func() { o.Seq = *seq })
	over("accum", func() { o.Accum = *accum })
	over("seed", func() { o.Seed = *seed })
	over("bf16", func() { o.BF16 = *bf16 })
	over("recompute", func() { o.Recompute = *recompute })
	over("eval-every", func() { o.EvalEvery = *evalEvery })
	over("save-every", func() { o.SaveEvery = *saveEvery })
	over("keep", func() { o.KeepLast = *keep })
	over("alltoall", func() { o.AllToAll = *alltoall })
	over("ranks-per-node", func() { o.RanksPerNode = *perNode })
	over("bucket-mb", func() { o.BucketBytes = int(*bucketMB * (1 << 20)) })
	over("shard-dense", func() { o.ShardDense = *shardDense })
	if o.ShardDense && *ranks <= 1 && !dist.UnderMPI() {
		if set["shard-dense"] {
			return errors.New("--shard-dense shards the dense parameters over the ranks of a parallel run: add --ranks N (N > 1) or run under mpirun; one process has nothing to shard over")
		}
		o.ShardDense = false // a sharded run's checkpoint, resumed in one process: nothing to shard over
	}
	over("embed-partition", func() { o.EmbedPartition = *embedPartition })
	if o.EmbedPartition && *ranks <= 1 && !dist.UnderMPI() {
		if set["embed-partition"] {
			return errors.New("--embed-partition splits the embedding over the ranks of a parallel run: add --ranks N (N > 1) or run under mpirun; one process has nothing to split over")
		}
		o.EmbedPartition = false // a partitioned run's checkpoint (whole table), resumed in one process
	}
	if o.EmbedPartition && o.ShardDense {
		return errors.New("--embed-partition with --shard-dense: both split the embedding over the ranks (--shard-dense shards it with the other dense parameters); use one or the other")
	}
	if set["pregate"] && !*convert {
		if *resume != "" {
			return errors.New("--pregate cannot change a resumed model; convert it with --from CKPT --convert-pregate")
		}
		o.Model.PregateDist = *pregate
	}
	if len(tasks) > 0 {
		if *resume != "" {
			return errors.New("--task cannot change a resumed run's tasks (they come from its checkpoint)")
		}
		o.MultiTask(tasks, *taskFFN)
		o.TaskPlacement = *taskPlacement
	}
	if err := o.Validate(); err != nil {
		return err
	}
	if *storage != "" || *sparseMem != "" || *denseMem != "" || *planOnly {
		if err := storageOptions(&o, *storage, *sparseMem, *denseMem, *ranks, stderr); err != nil {
			return err
		}
		if *planOnly {
			return nil
		}
	}
	if *out == "" {
		*out = filepath.Join("runs", name)
	}
	if err := checkWritable(*out); err != nil {
		return err
	}

	// Data.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var corpora []*train.Corpus // one per task of a multi-task run
	for _, t := range o.Tasks {
		path := t.Data
		if path == "default" {
			path = ""
		}
		c, err := train.LoadCorpus(ctx, train.DataSpec{Path: path, Glob: *glob, ValFraction: *valFrac}, os.Stdin)
		if err != nil {
			return fmt.Errorf("task %s: %w", t.Name, err)
		}
		fmt.Fprintf(stderr, "task %s: batch %d, %s\n", t.Name, t.Batch, c.Source)
		corpora = append(corpora, c)
	}
	var corpus *train.Corpus
	if len(corpora) > 0 {
		corpus = corpora[0]
	} else if corpus, err = train.LoadCorpus(ctx, train.DataSpec{Path: *data, Glob: *glob, ValFraction: *valFrac}, os.Stdin); err != nil {
		return err
	}
	if err := corpus.Check(o.Seq); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "data: %s: %d training and %d validation tokens\n", corpus.Source, len(corpus.Train), len(corpus.Val))
	fmt.Fprintln(stderr, kernel.Note())
	if *ranks > 1 || dist.UnderMPI() {
		pr := parallelRun{o: o, corpus: corpus, corpora: corpora, ckpt: ckpt, out: *out, log: *logPath, ranks: *ranks, threads: *threads, stderr: stderr}
		s, err := pr.run(ctx)
		if err != nil || s == nil {
			return err // s nil: not rank 0
		}
		return finishRun(*s, *out, *asJSON, true, *sampleN, *prompt, stdout, stderr)
	}

	// The trainer.
	var tr *train.Trainer
	var orig *model.Net
	var report reportPregate
	switch {
	case len(corpora) > 0 && *resume != "":
		tr, err = train.ResumeMultiTask(ckpt, o, corpora, nil)
	case len(corpora) > 0:
		tr, err = train.NewMultiTaskTrainer(o, corpora, nil)
	case *resume != "":
		tr, err = train.Resume(ckpt, o, corpus)
	case *convert:
		if orig, err = model.LoadNet(ckpt, o.Seq); err != nil {
			return err
		}
		dist := 1
		if set["pregate"] {
			dist = *pregate
		}
		conv, cerr := train.ConvertPregate(orig, dist, o.Seq)
		if cerr != nil {
			return cerr
		}
		val, verr := train.ValBatches(corpus.Val, o.Batch, o.Seq, max(o.EvalBatches, 1))
		if verr != nil {
			return verr
		}
		report.Distance = dist
		if report.Before, err = train.RoutingAgreement(ctx, orig, conv, val, o.Seq); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "converted %s to pre-gates at distance %d: routing agreement %.1f%% (exact top-%d set), %.1f%% (expert overlap); val loss %.4f (original %.4f)\n",
			ckpt, dist, 100*report.Before.ExactSet, o.Model.K, 100*report.Before.Overlap, report.Before.ValConv, report.Before.ValOrig)
		tr, err = train.NewTrainerFrom(o, corpus, conv)
	default:
		tr, err = train.NewTrainer(o, corpus)
	}
	if err != nil {
		return err
	}
	defer tr.Close()
	c := tr.Net.Cfg
	fmt.Fprintf(stderr, "model: %d layers (%d MoE), d_model %d, %d experts top-%d, %s parameters; batch %d x seq %d x accum %d; %d steps -> %s\n",
		c.L, len(c.MoELayers()), c.D, c.E, c.K, humanCount(int64(tr.Net.NumParams())), o.Batch, o.Seq, o.Accum, o.Steps, *out)

	rc := train.RunConfig{Out: *out, Progress: stderr, TTY: isTerminal(stderr)}
	if *logPath != "" {
		f, err := os.Create(*logPath)
		if err != nil {
			return fmt.Errorf("--log: %w", err)
		}
		defer f.Close()
		rc.Log = f
	}
	s, err := tr.Run(ctx, rc)
	if err != nil {
		return err
	}
	if *convert {
		printRun(s, *out, stderr)
		val, err := train.ValBatches(corpus.Val, o.Batch, o.Seq, max(o.EvalBatches, 1))
		if err != nil {
			return err
		}
		if report.After, err = train.RoutingAgreement(ctx, orig, tr.Net, val, o.Seq); err != nil {
			return err
		}
		report.Steps = s.Steps
		fmt.Fprintf(stderr, "after fine-tuning: routing agreement %.1f%% (exact set), %.1f%% (overlap); val loss %.4f (original %.4f)\n",
			100*report.After.ExactSet, 100*report.After.Overlap, report.After.ValConv, report.After.ValOrig)
		b, _ := json.MarshalIndent(report, "", "  ")
		if err := atomicfile.WriteFile(filepath.Join(*out, "pregate_report.json"), append(b, '\n')); err != nil {
			return err
		}
	}
	if *convert && *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			train.Summary
			Pregate reportPregate `json:"pregate"`
		}{s, report})
	}
	return finishRun(s, *out, *asJSON, !*convert, *sampleN, *prompt, stdout, stderr)
}

// printRun says how a run ended.
func printRun(s train.Summary, out string, stderr io.Writer) {
	if s.Interrupted {
		fmt.Fprintf(stderr, "interrupted: saved step %d to %s (continue with: moesys train --resume %s)\n", s.Steps, s.Checkpoint, out)
	} else {
		fmt.Fprintf(stderr, "done: %d steps, loss %.4f -> %.4f, val %.4f, %.0f tokens/s; checkpoint %s\n",
			s.Steps, s.FirstLoss, s.LastLoss, s.ValLoss, s.TokensPerS, s.Checkpoint)
	}
}

// finishRun reports a run (--json: its summary on stdout; else, when
// announce, how it ended) and generates the --sample from its checkpoint.
func finishRun(s train.Summary, out string, asJSON, announce bool, sampleN int, prompt string, stdout, stderr io.Writer) error {
	if announce {
		printRun(s, out, stderr)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	if sampleN > 0 && s.Checkpoint != "" {
		fmt.Fprintf(stderr, "sample (%d bytes, temperature 0.8):\n", sampleN)
		fmt.Fprint(stdout, prompt)
		return runGenerate([]string{"--model", s.Checkpoint, "--prompt", prompt, "--max-tokens", fmt.Sprint(sampleN),
			"--temperature", "0.8", "--seed", "1", "--precision", "exact"}, stdout, io.Discard)
	}
	return nil
}

// reportPregate is the --convert-pregate report (also pregate_report.json).
type reportPregate struct {
	Distance int             `json:"distance"`
	Steps    int             `json:"fine_tune_steps"`
	Before   train.Agreement `json:"before_fine_tuning"`
	After    train.Agreement `json:"after_fine_tuning"`
}

// readTrainFile reads a --config file.
func readTrainFile(path string) (train.Options, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return train.Options{}, fmt.Errorf("--config: %w", err)
	}
	var head struct {
		Preset string          `json:"preset"`
		Model  json.RawMessage `json:"model"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return train.Options{}, fmt.Errorf("--config %s: %v", path, err)
	}
	base := "tiny"
	if head.Preset != "" {
		base = head.Preset
	}
	o, err := train.PresetOptions(base)
	if err != nil {
		return o, fmt.Errorf("--config %s: %w", path, err)
	}
	f := trainFile{Options: o}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return o, fmt.Errorf("--config %s: %v", path, err)
	}
	o = f.Options
	if len(head.Model) > 0 {
		var fields map[string]any
		if err := json.Unmarshal(head.Model, &fields); err != nil {
			return o, fmt.Errorf("--config %s: model: %v", path, err)
		}
		if _, ok := fields["model_type"]; !ok {
			fields["model_type"] = "moesys"
		}
		if _, ok := fields["head_dim"]; !ok {
			d, _ := fields["hidden_size"].(float64)
			h, _ := fields["num_attention_heads"].(float64)
			if h > 0 && int(d)%int(h) != 0 {
				return o, fmt.Errorf("--config %s: hidden_size %v is not divisible by num_attention_heads %v", path, d, h)
			}
		}
		raw, _ := json.Marshal(fields)
		cfg, err := model.ParseConfig(raw)
		if err != nil {
			return o, fmt.Errorf("--config %s: %w", path, err)
		}
		o.Model = cfg
	}
	return o, nil
}

// checkWritable makes sure dir exists (or can be created) and takes files.
func checkWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	f, err := os.CreateTemp(dir, ".write-test-")
	if err != nil {
		return fmt.Errorf("output directory %s is not writable: %w", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// storageOptions sets o.Storage from the hierarchical-storage flags and
// prints the plan, or refuses it.
func storageOptions(o *train.Options, dir, sparse, dense string, ranks int, stderr io.Writer) error {
	if dir == "" {
		return errors.New("--sparse-mem, --dense-mem and --plan need --storage DIR")
	}
	if sparse == "" {
		return errors.New("--storage needs --sparse-mem BYTES (RAM for cached expert state)")
	}
	so := &train.StorageOptions{Dir: dir}
	var err error
	if so.SparseMem, err = parseBytes(sparse); err != nil {
		return fmt.Errorf("--sparse-mem: %w", err)
	}
	if dense != "" {
		if so.DenseMem, err = parseBytes(dense); err != nil {
			return fmt.Errorf("--dense-mem: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--storage: %w", err)
	}
	W := max(ranks, 1)
	if dist.UnderMPI() {
		if n, err := strconv.Atoi(os.Getenv("OMPI_COMM_WORLD_SIZE")); err == nil {
			W = n
		}
	}
	p, err := train.PlanStorageRanks(o.Model, o.BF16, *so, W)
	if err != nil {
		return err
	}
	fmt.Fprint(stderr, p)
	o.Storage = so
	return nil
}

// taskFlags collects repeated --task NAME=DATA,batch=N[,cost=C] flags.
type taskFlags []train.TaskSpec

func (f *taskFlags) String() string { return fmt.Sprint(*f) }

func (f *taskFlags) Set(v string) error {
	name, rest, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("want NAME=DATA,batch=N[,cost=C], got %q", v)
	}
	parts := strings.Split(rest, ",")
	t := train.TaskSpec{Name: name, Data: parts[0]}
	for _, p := range parts[1:] {
		k, val, _ := strings.Cut(p, "=")
		var err error
		switch k {
		case "batch":
			t.Batch, err = strconv.Atoi(val)
		case "cost":
			t.Cost, err = strconv.ParseFloat(val, 64)
		default:
			return fmt.Errorf("task %s: unknown field %q (want batch=N or cost=C)", name, k)
		}
		if err != nil {
			return fmt.Errorf("task %s: %s: %v", name, k, err)
		}
	}
	if t.Batch <= 0 {
		return fmt.Errorf("task %s: batch=N (> 0) is required", name)
	}
	*f = append(*f, t)
	return nil
}
