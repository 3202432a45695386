package train

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/moesys/moesys/dist"
)

// RunConfig says where a run's outputs go.
type RunConfig struct {
	Out      string    // checkpoint directory ("" = no checkpoints)
	Log      io.Writer // JSON lines, one per step and per evaluation (nil = none)
	Progress io.Writer // human progress (nil = none)
	TTY      bool      // Progress is a terminal: redraw one status line
	// Abort, when set and done, fails the run's collectives at once: in a
	// parallel run, another rank has failed and will not join them. (The
	// run's ctx only asks for a clean stop after the step in flight.)
	Abort context.Context
}

// Summary is what a run did.
type Summary struct {
	Steps       int     `json:"steps"` // optimizer steps done in total
	FirstLoss   float64 `json:"first_loss"`
	LastLoss    float64 `json:"last_loss"`
	ValLoss     float64 `json:"val_loss"` // last validation loss
	TokensPerS  float64 `json:"tokens_per_s"`
	Seconds     float64 `json:"seconds"`
	Checkpoint  string  `json:"checkpoint,omitempty"`
	Interrupted bool    `json:"interrupted"`
}

// logLine is one JSON log record.
type logLine struct {
	Kind string `json:"kind"` // "step" or "eval"
	*StepResult
	ValLoss  *float64 `json:"val_loss,omitempty"`
	TokPerS  float64  `json:"tokens_per_s,omitempty"`
	Elapsed  float64  `json:"elapsed_s"`
	EvalStep int      `json:"eval_step,omitempty"`
}

// Run trains until Opts.Steps steps are done or ctx is cancelled. On
// cancellation (SIGINT/SIGTERM in the CLI) it finishes the current step,
// writes a checkpoint and returns with Interrupted set and no error.
// Validation runs every EvalEvery steps and at the end; checkpoints every
// SaveEvery steps and at the end.
func (t *Trainer) Run(ctx context.Context, rc RunConfig) (Summary, error) {
	o := t.Opts
	start := time.Now()
	var s Summary
	var enc *json.Encoder
	if rc.Log != nil {
		enc = json.NewEncoder(rc.Log)
	}
	// The step in flight finishes even when ctx is cancelled meanwhile
	// (SIGINT asks to stop after it, with a checkpoint); only Abort ends it.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	if rc.Abort != nil {
		defer context.AfterFunc(rc.Abort, cancel)()
	}
	if t.par != nil {
		t.par.ctx = sctx // Save's collectives
		defer func() { t.par.ctx = nil }()
	}
	startStep, tokens := t.Step, 0
	val := -1.0
	save := func() error {
		if rc.Out == "" {
			return nil
		}
		p, err := t.Save(rc.Out, o.KeepLast)
		s.Checkpoint = p
		return err
	}
	evaluate := func() error {
		ectx := ctx
		if t.par != nil {
			// The ranks must run the same collectives: none stops early.
			ectx = sctx
		}
		v, err := t.Evaluate(ectx)
		if err != nil {
			return err
		}
		val = v
		s.ValLoss = v
		if enc != nil {
			if err := enc.Encode(logLine{Kind: "eval", ValLoss: &v, EvalStep: t.Step, Elapsed: time.Since(start).Seconds()}); err != nil {
				return fmt.Errorf("train: log: %w", err)
			}
		}
		return nil
	}
	for t.Step < o.Steps {
		stop, err := t.stopRequested(ctx, sctx)
		if err != nil {
			return s, err
		}
		if stop {
			s.Interrupted = true
			break
		}
		r, err := t.TrainStep(sctx)
		if err != nil {
			return s, err
		}
		tokens += r.Tokens
		if t.Step == startStep+1 {
			s.FirstLoss = r.Loss
		}
		s.LastLoss = r.Loss
		elapsed := time.Since(start).Seconds()
		tps := float64(tokens) / elapsed
		if enc != nil {
			if err := enc.Encode(logLine{Kind: "step", StepResult: &r, TokPerS: tps, Elapsed: elapsed}); err != nil {
				return s, fmt.Errorf("train: log: %w", err)
			}
		}
		if o.EvalEvery > 0 && t.Step%o.EvalEvery == 0 && t.Step < o.Steps {
			if err := evaluate(); err != nil && ctx.Err() == nil {
				return s, err
			}
		}
		if rc.Progress != nil {
			progress(rc.Progress, rc.TTY, t.Step, o.Steps, startStep, r.Loss, val, tps, elapsed)
		}
		if o.SaveEvery > 0 && t.Step%o.SaveEvery == 0 && t.Step < o.Steps {
			if err := save(); err != nil {
				return s, err
			}
		}
	}
	if !s.Interrupted {
		if err := evaluate(); err != nil && ctx.Err() == nil {
			return s, err
		}
	}
	if rc.Progress != nil && rc.TTY {
		fmt.Fprintln(rc.Progress)
	}
	if err := save(); err != nil {
		return s, err
	}
	s.Steps = t.Step
	s.Seconds = time.Since(start).Seconds()
	if s.Seconds > 0 {
		s.TokensPerS = float64(tokens) / s.Seconds
	}
	return s, nil
}

// stopRequested reports whether ctx asks the run to stop. The ranks of a
// parallel run see a signal at different moments, so they agree: the run
// stops before a step if any rank's ctx has ended.
func (t *Trainer) stopRequested(ctx, sctx context.Context) (bool, error) {
	if t.par == nil {
		return ctx.Err() != nil, nil
	}
	stop, err := dist.Any(sctx, t.par.comm, ctx.Err() != nil)
	if err != nil {
		return false, fmt.Errorf("train: stop: %w", err)
	}
	return stop, nil
}

// progress prints a status line: a bar on a terminal, else a line every
// tenth of the run.
func progress(w io.Writer, tty bool, step, total, first int, loss, val, tps, elapsed float64) {
	done := step - first
	eta := time.Duration(float64(total-step) * elapsed / float64(max(done, 1)) * float64(time.Second)).Round(time.Second)
	valStr := ""
	if val >= 0 {
		valStr = fmt.Sprintf(" val %.4f", val)
	}
	line := fmt.Sprintf("step %d/%d loss %.4f%s | %.0f tok/s | ETA %s", step, total, loss, valStr, tps, eta)
	if tty {
		const width = 24
		fill := width * step / max(total, 1)
		fmt.Fprintf(w, "\r[%s%s] %s\x1b[K", strings.Repeat("#", fill), strings.Repeat(".", width-fill), line)
		return
	}
	every := max(total/10, 1)
	if step%every == 0 || step == total || step == first+1 {
		fmt.Fprintln(w, line)
	}
}
