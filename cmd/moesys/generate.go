package main

import (
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
	"github.com/moesys/moesys/sample"
	"github.com/moesys/moesys/tokenizer"
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

func runGenerate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("model", "", "checkpoint directory (config.json, safetensors, tokenizer.json)")
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
	asJSON := fs.Bool("json", false, "print one JSON object with the text and speeds instead of streaming")
	usage := func(w io.Writer) {
		fmt.Fprintln(w, "Usage: moesys generate --model DIR --prompt TEXT [sampling flags] [--json]")
		fmt.Fprintln(w, "\nStreams the continuation to stdout, then prefill and decode tokens/s to stderr.")
		fmt.Fprintln(w, "\nFlags:")
		fs.VisitAll(func(f *flag.Flag) { fmt.Fprintf(w, "  --%-19s %s (default %q)\n", f.Name, f.Usage, f.DefValue) })
		fmt.Fprintln(w, "\nExamples:\n  moesys generate --model testdata/hf/mixtral_f32 --prompt hello --temperature 0")
		fmt.Fprintln(w, "  moesys generate --model ~/models/OLMoE-1B-7B --prompt 'The capital of France' --top-p 0.9 --seed 7 --json")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return nil
		}
		fmt.Fprintf(stderr, "moesys generate: %v\n\n", err)
		usage(stderr)
		return errUsage
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "moesys generate: --model is required")
		fmt.Fprintln(stderr)
		usage(stderr)
		return errUsage
	}
	p.StopStrings = stops
	m, err := model.Load(*dir)
	if err != nil {
		return err
	}
	defer m.Close()
	switch *precision {
	case "exact":
	case "fast":
		m.SetPrecision(model.Fast)
	default:
		return fmt.Errorf("--precision %q: want exact or fast", *precision)
	}
	tok, err := loadTokenizer(*dir, m.Cfg)
	if err != nil {
		return err
	}
	p.EOS = append(append([]int32(nil), tok.EOS()...), m.Cfg.EOS...)
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
	if m.Cfg.MaxPos > 0 {
		maxT = min(maxT, m.Cfg.MaxPos)
	}
	if len(ids) >= maxT {
		return fmt.Errorf("prompt of %d tokens leaves no room in the %d-position context", len(ids), maxT)
	}
	fmt.Fprintln(stderr, kernel.Note())
	s := m.NewSession(maxT)
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
	logits, err := s.Forward(ids)
	if err != nil {
		return err
	}
	ttft := time.Since(t0)
	context := append([]int32(nil), ids...)
	V := m.Cfg.V
	var decodeTime time.Duration
	var n int
	for {
		next := sampler.Next(logits[len(logits)-V:], context)
		context = append(context, next)
		n++
		out, done := stopper.Push(next, dec.Push(next))
		emit(out)
		if done || s.Pos >= maxT {
			break
		}
		t := time.Now()
		if logits, err = s.Forward([]int32{next}); err != nil {
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
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	fmt.Fprintln(stdout)
	fmt.Fprintf(stderr, "prompt %d tokens: prefill %.1f tokens/s (time to first token %.0f ms); generated %d tokens: decode %.1f tokens/s; stop: %s\n",
		len(ids), res.PrefillTPS, res.TTFTMillis, n, res.DecodeTPS, res.StopReason)
	return nil
}
