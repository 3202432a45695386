package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/offload"
	"github.com/moesys/moesys/serve"
)

func init() {
	register("serve", "serve a checkpoint over the OpenAI HTTP API with continuous batching", runServe)
}

// defaultServeContext caps the default positions per sequence: every slot's
// KV cache is allocated at start, so the model's full context (32k for
// Mixtral) would cost gigabytes per slot.
const defaultServeContext = 4096

// closeGrace is how long handlers get to write their error answers once
// the shutdown bound has passed and the engine has ended their sequences.
const closeGrace = 2 * time.Second

// serveFlags are serve's own flags (the model and offload flags are
// generate's).
type serveFlags struct {
	dir, addr, name, precision      string
	maxSeqs, maxQueue, ctx, prefill int
	maxBody                         byteSize
	requestTimeout, shutdownTimeout time.Duration
	resident                        bool
	off                             offloadFlags
}

func runServe(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f serveFlags
	f.maxBody = serve.DefaultMaxBodyBytes
	fs.StringVar(&f.dir, "model", "", "checkpoint directory (config.json, safetensors, tokenizer.json, tokenizer_config.json), an offload layout, or a training run (its latest checkpoint)")
	fs.StringVar(&f.addr, "addr", "127.0.0.1:8080", "address to listen on (loopback by default; port 0 picks a free one)")
	fs.StringVar(&f.name, "name", "", "model id clients send (default: the directory's name)")
	fs.IntVar(&f.maxSeqs, "max-seqs", 8, "sequences decoded together: KV cache slots allocated at start")
	fs.IntVar(&f.maxQueue, "max-queue", 64, "requests waiting for a slot; beyond it requests get 429 with Retry-After")
	fs.IntVar(&f.ctx, "ctx", 0, fmt.Sprintf("positions per sequence, prompt and completion (default: the model's, at most %d)", defaultServeContext))
	fs.IntVar(&f.prefill, "prefill-chunk", serve.DefaultPrefillChunk, "most prompt tokens one pass takes from new requests (decode steps of running ones share every pass)")
	fs.Var(&f.maxBody, "max-body", "largest request body (bytes or 4MiB, 1MB); larger ones get 413")
	fs.DurationVar(&f.requestTimeout, "request-timeout", 10*time.Minute, "longest a generation request may take (0: no limit); past it 504")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 30*time.Second, "on SIGTERM or SIGINT, how long running requests may take to finish")
	fs.BoolVar(&f.resident, "resident", true, "copy a non-offloaded model's weights into memory at start, bf16 ones packed for the kernels with --precision fast (--resident=false: run from the file mapping)")
	fs.StringVar(&f.precision, "precision", "fast", "exact (f32 products) or fast (bf16 dot products for prefill)")
	f.off.register(fs)
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "Usage: moesys serve --model DIR [--addr HOST:PORT] [--max-seqs N] [--max-queue N] [--ctx N]")
		fmt.Fprintln(w, "                    [--offload POLICY --expert-mem BYTES ...]")
		fmt.Fprintln(w, "\nServes the OpenAI API over HTTP: POST /v1/completions, POST /v1/chat/completions")
		fmt.Fprintln(w, "(whole or streamed as server-sent events), GET /v1/models, GET /healthz, and GET /metrics")
		fmt.Fprintln(w, "(Prometheus). Requests are batched continuously: up to --max-seqs sequences decode together,")
		fmt.Fprintln(w, "new prompts prefill in the same passes, and a sequence leaves the batch as soon as it ends")
		fmt.Fprintln(w, "or its client disconnects. Chat uses the checkpoint's chat_template (tokenizer_config.json),")
		fmt.Fprintln(w, "or for checkpoints without one moesys' default: \"Role: content\" blocks, \"Assistant:\" as the")
		fmt.Fprintln(w, "generation prompt, \"\\nUser:\" as a stop string. The model and offload flags are generate's:")
		fmt.Fprintln(w, "with --offload the plan is made for --max-seqs sequences a pass, each MoE block reads the")
		fmt.Fprintln(w, "union of the experts the batch routes to, /metrics reports the expert cache, and the")
		fmt.Fprintln(w, "offload report is printed at exit. SIGTERM or SIGINT stops taking requests, lets running")
		fmt.Fprintln(w, "ones finish for up to --shutdown-timeout, and exits 0.")
		fmt.Fprintln(w, "\nFlags:")
		fs.VisitAll(func(f *flag.Flag) { fmt.Fprintf(w, "  --%-19s %s (default %q)\n", f.Name, f.Usage, f.DefValue) })
		fmt.Fprintln(w, "\nExamples:\n  moesys serve --model runs/demo    # a training run: its latest checkpoint, model id \"demo\"")
		fmt.Fprintln(w, "  curl -s localhost:8080/v1/completions -H 'Content-Type: application/json' \\")
		fmt.Fprintln(w, "       -d '{\"model\": \"demo\", \"prompt\": \"func main() {\", \"max_tokens\": 64, \"temperature\": 0}'")
		fmt.Fprintln(w, "  moesys serve --model ~/models/Qwen1.5-MoE-A2.7B-Chat --addr 0.0.0.0:8000 --max-seqs 16 --ctx 8192")
		fmt.Fprintln(w, "  moesys serve --model ~/models/olmoe.offload --offload pregated --expert-mem 2GiB --max-seqs 4")
	}
	if done, err := parseFlags(fs, args, "serve", usage, stdout, stderr); done {
		return err
	}
	if f.dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "moesys serve: --model is required")
		fmt.Fprintln(stderr)
		usage(stderr)
		return errUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return serveModel(ctx, fs, &f, stdout, stderr)
}

// serveModel loads the model, serves until ctx ends, then stops gracefully.
func serveModel(ctx context.Context, fs *flag.FlagSet, f *serveFlags, stdout, stderr io.Writer) (err error) {
	if f.maxSeqs < 1 || f.maxQueue < 0 || f.ctx < 0 || f.prefill < 1 || f.requestTimeout < 0 || f.shutdownTimeout < 0 {
		return errors.New("--max-seqs and --prefill-chunk must be at least 1; --max-queue, --ctx and the timeouts not negative")
	}
	name := f.name
	if name == "" {
		name = filepath.Base(filepath.Clean(f.dir))
	}
	f.dir = modelDir(f.dir, "serving", stderr)
	m, offRun, closeModel, err := openModel(context.Background(), fs, f.dir, &f.off, f.maxSeqs, f.precision, false, stdout, stderr)
	if err != nil || m == nil { // m == nil: --dry-run printed the plan
		return err
	}
	defer func() { err = errors.Join(err, closeModel()) }()
	if offRun == nil && f.resident {
		// A server runs for long: copy the weights out of the file mapping
		// and, with fast precision, pack bf16 ones for the kernels, so
		// batched passes do not repack every weight at every step.
		held, err := m.MakeResident(f.precision == "fast")
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "weights resident: %s\n", humanBytes(held))
	}
	tok, err := loadTokenizer(f.dir, m.Cfg)
	if err != nil {
		return err
	}
	tpl, err := serve.LoadChatTemplate(f.dir)
	if err != nil {
		return err
	}
	positions := f.ctx
	if positions == 0 {
		positions = defaultServeContext
		if m.Cfg.MaxPos > 0 {
			positions = min(positions, m.Cfg.MaxPos)
		}
	}
	cfg := serve.Config{Model: m, Tokenizer: tok, Template: tpl, Name: name, MaxBodyBytes: int64(f.maxBody), RequestTimeout: f.requestTimeout,
		Engine: serve.EngineConfig{MaxSeqs: f.maxSeqs, MaxQueue: f.maxQueue, Context: positions, PrefillChunk: f.prefill}}
	if offRun != nil {
		cfg.ExpertStats = func() offload.Counts { return offRun.sched.Stats().Snapshot() }
	}
	srv, err := serve.New(cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, kernel.Note())
	which := "tokenizer_config.json's chat_template"
	if tpl.Default {
		which = "moesys' default chat template"
	}
	fmt.Fprintf(stderr, "model %q: %s, %d layers, %d experts top-%d, vocabulary %d; %s\n", name, m.Cfg.Arch, m.Cfg.L, m.Cfg.E, m.Cfg.K, m.Cfg.V, which)
	fmt.Fprintf(stderr, "KV pool: %d sequences x %d positions (%s); queue %d\n", f.maxSeqs, positions, humanBytes(srv.Engine().KVBytes()), f.maxQueue)
	fmt.Fprintf(stderr, "listening on http://%s\n", ln.Addr())
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 30 * time.Second}
	start := time.Now()
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// Graceful stop: refuse new requests, close the listener, let the
	// running ones finish within the bound, then end the rest.
	fmt.Fprintf(stderr, "stopping: %d running, %d queued; waiting up to %v\n", srv.Engine().Stats().Running, srv.Engine().Stats().Queued, f.shutdownTimeout)
	srv.Drain()
	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		st := srv.Engine().Stats()
		fmt.Fprintf(stderr, "stopping: %d requests still running after %v: ending them\n", st.Running+st.Queued, f.shutdownTimeout)
		srv.Close()
		// The handlers now end their answers with an error event or
		// object; let them write it before the connections close.
		gctx, gcancel := context.WithTimeout(context.Background(), closeGrace)
		if hs.Shutdown(gctx) != nil {
			hs.Close()
		}
		gcancel()
	}
	st := srv.Engine().Stats()
	fmt.Fprintf(stderr, "stopped after %v: %d prompt tokens, %d generated tokens in %d passes\n",
		time.Since(start).Round(time.Millisecond), st.PromptTokens, st.GeneratedTokens, st.Passes)
	if offRun != nil && f.off.report {
		fmt.Fprintln(stderr, offRun.interval("serve", int(st.GeneratedTokens), time.Since(start)))
	}
	return nil
}
