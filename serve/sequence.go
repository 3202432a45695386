package serve

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/sample"
	"github.com/moesys/moesys/tokenizer"
)

// Finish says why a sequence ended.
type Finish uint8

const (
	FinishNone   Finish = iota // still running
	FinishStop                 // an EOS token or a stop string
	FinishLength               // max_tokens, or the context is full
	FinishError                // the engine failed or closed; Update.Err says why
)

// String returns the OpenAI finish_reason: "stop", "length", or "" for
// FinishNone and FinishError.
func (f Finish) String() string {
	switch f {
	case FinishStop:
		return "stop"
	case FinishLength:
		return "length"
	}
	return ""
}

// Update is what a Sequence produced since the last Wait.
type Update struct {
	Text string // text the client may now see
	// Done: the sequence ended; Finish says why and the counts are final.
	Done             bool
	Finish           Finish
	Err              error // with FinishError
	PromptTokens     int
	CompletionTokens int
	// FirstToken is when the first token was sampled (zero before).
	FirstToken time.Time
}

// Sequence is one request's generation inside the Engine. The engine
// writes its output; the request's handler reads it with Wait. Cancel
// (or the end of the context given to Submit) takes it out of the batch.
type Sequence struct {
	e       *Engine
	ctx     context.Context
	arrived time.Time

	// Engine side (the engine goroutine only).
	prompt  []int32
	history []int32 // prompt + generated, for the repetition penalty
	fed     int     // prompt tokens run so far
	next    []int32 // the sampled token to run at the next decode step (len 1)
	sess    *model.Session
	sampler *sample.Sampler
	stopper *sample.Stopper
	dec     *tokenizer.Decoder

	cancelled atomic.Bool
	queued    bool // in e.queue (guarded by e.mu)

	mu     sync.Mutex
	text   strings.Builder // produced, not yet taken by Wait
	upd    Update          // counts and end state
	notify chan struct{}   // cap 1: something changed
}

// Wait blocks until the sequence has new text or ends, or ctx ends, and
// returns what it produced since the last Wait. When ctx ends first it
// cancels the sequence and returns ctx's error.
func (s *Sequence) Wait(ctx context.Context) (Update, error) {
	for {
		s.mu.Lock()
		if s.upd.Done && s.upd.Finish == FinishError && errors.Is(s.upd.Err, ErrCancelled) && ctx.Err() != nil {
			// The engine dropped the sequence because ctx ended before
			// this Wait saw it: report ctx's error (a timeout, not a
			// server error).
			s.mu.Unlock()
			return Update{}, ctx.Err()
		}
		if s.text.Len() > 0 || s.upd.Done {
			u := s.upd
			u.Text = s.text.String()
			s.text.Reset()
			s.mu.Unlock()
			return u, nil
		}
		s.mu.Unlock()
		select {
		case <-s.notify:
		case <-ctx.Done():
			s.Cancel()
			return Update{}, ctx.Err()
		}
	}
}

// Cancel takes the sequence out of the queue or the running batch; its
// slot is free for the next request after the current pass. Safe to call
// more than once, and after the end.
func (s *Sequence) Cancel() {
	s.cancelled.Store(true)
	s.e.dequeue(s)
	s.e.kick()
}

// emit appends text (engine side).
func (s *Sequence) emit(text string) {
	if text == "" {
		return
	}
	s.mu.Lock()
	s.text.WriteString(text)
	s.mu.Unlock()
	s.signal()
}

// progress records the token counts (engine side).
func (s *Sequence) progress(completion int, first time.Time) {
	s.mu.Lock()
	s.upd.CompletionTokens = completion
	if s.upd.FirstToken.IsZero() {
		s.upd.FirstToken = first
	}
	s.mu.Unlock()
}

// end finishes the sequence with reason f (and err for FinishError).
func (s *Sequence) end(f Finish, err error) {
	s.mu.Lock()
	if !s.upd.Done {
		s.upd.Done, s.upd.Finish, s.upd.Err = true, f, err
	}
	s.mu.Unlock()
	s.signal()
}

func (s *Sequence) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// gone reports whether the request no longer wants the sequence.
func (s *Sequence) gone() bool { return s.cancelled.Load() || s.ctx.Err() != nil }
