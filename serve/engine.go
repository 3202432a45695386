package serve

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/sample"
	"github.com/moesys/moesys/tokenizer"
)

// DefaultPrefillChunk is EngineConfig.PrefillChunk's default: 256 prompt
// tokens keep a pass that admits a long prompt to a few times a decode
// step's length on the small models, so running sequences keep streaming
// while newcomers prefill.
const DefaultPrefillChunk = 256

// rateWindow is the window of EngineStats.TokensPerSecond.
const rateWindow = 10 * time.Second

// Errors of Submit besides ErrQueueFull, ErrClosed and ErrPromptTooLong.
var (
	// ErrEmptyPrompt: the prompt has no tokens (empty text and a
	// tokenizer that adds no BOS).
	ErrEmptyPrompt = errors.New("serve: empty prompt")
	// ErrTokenRange: a prompt given as token ids holds one outside the
	// model's vocabulary.
	ErrTokenRange = errors.New("serve: token id outside the vocabulary")
)

// EngineConfig sizes an Engine.
type EngineConfig struct {
	// MaxSeqs is the most sequences in the running batch, each with a
	// KV cache of Context positions allocated at start (the pool).
	MaxSeqs int
	// MaxQueue is the most requests waiting for a free sequence; past it
	// Submit fails with ErrQueueFull.
	MaxQueue int
	// Context is the positions of one sequence: prompt plus generated
	// tokens. A prompt of Context tokens or more is refused.
	Context int
	// PrefillChunk is the most prompt tokens one pass runs over all the
	// sequences still prefilling (0: DefaultPrefillChunk); decode steps of
	// the running sequences share every pass with them.
	PrefillChunk int
}

// Engine runs generation requests with continuous batching: one
// goroutine runs passes of model.Batch over every running sequence (a
// decode step each) plus chunks of newly admitted prompts; sequences
// join when a slot is free and leave as soon as they finish or their
// request goes away, between any two passes. Each sequence owns a
// preallocated model.Session (its KV cache) while it runs.
//
// With an offloaded model (an ExpertSource), each pass's MoE blocks
// acquire the union of the experts every row of the batch routes to
// (model.Batch does this), so experts are read once per pass, not once
// per sequence.
type Engine struct {
	m     *model.Model
	tok   tokenizer.Tokenizer
	cfg   EngineConfig
	batch *model.Batch

	mu     sync.Mutex
	queue  []*Sequence
	free   []*model.Session
	closed bool

	wake   chan struct{} // cap 1: a request arrived or left
	stop   chan struct{}
	done   chan struct{}
	ctx    context.Context // the passes' context, cancelled by Close
	cancel context.CancelFunc

	// The engine goroutine's own state: the running sequences and one
	// pass's inputs.
	running []*Sequence
	pass    []*Sequence
	sess    []*model.Session
	toks    [][]int32

	queued, runningN, kvPositions                 atomic.Int64
	promptTokens, generated, passes, passFailures atomic.Int64
	rate                                          rateMeter
}

// NewEngine allocates cfg.MaxSeqs sessions of cfg.Context positions for m
// and starts the engine's goroutine; Close stops it. tok decodes the
// generated tokens into text.
func NewEngine(m *model.Model, tok tokenizer.Tokenizer, cfg EngineConfig) (*Engine, error) {
	if cfg.PrefillChunk == 0 {
		cfg.PrefillChunk = DefaultPrefillChunk
	}
	switch {
	case cfg.MaxSeqs < 1:
		return nil, fmt.Errorf("serve: max sequences %d: want at least 1", cfg.MaxSeqs)
	case cfg.MaxQueue < 0:
		return nil, fmt.Errorf("serve: max queue %d: want at least 0", cfg.MaxQueue)
	case cfg.Context < 2:
		return nil, fmt.Errorf("serve: context %d: want at least 2 positions", cfg.Context)
	case m.Cfg.MaxPos > 0 && cfg.Context > m.Cfg.MaxPos:
		return nil, fmt.Errorf("serve: context %d exceeds the model's %d positions", cfg.Context, m.Cfg.MaxPos)
	case cfg.PrefillChunk < 1:
		return nil, fmt.Errorf("serve: prefill chunk %d: want at least 1", cfg.PrefillChunk)
	}
	e := &Engine{m: m, tok: tok, cfg: cfg, batch: m.NewBatch(), wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	for range cfg.MaxSeqs {
		e.free = append(e.free, m.NewSession(cfg.Context))
	}
	go e.loop()
	return e, nil
}

// Config returns the engine's configuration (defaults filled in).
func (e *Engine) Config() EngineConfig { return e.cfg }

// KVBytes is the memory of the sessions' KV caches: MaxSeqs x Context
// positions x layers x keys and values (f32).
func (e *Engine) KVBytes() int64 {
	c := e.m.Cfg
	return int64(e.cfg.MaxSeqs) * int64(e.cfg.Context) * int64(c.L) * 2 * int64(c.G*c.Dh) * 4
}

// Submit queues a generation of prompt under p (p.EOS and stop strings
// included) and returns its Sequence. The sequence is cancelled when ctx
// ends. Errors: ErrEmptyPrompt, ErrTokenRange, ErrPromptTooLong, an
// error wrapping sample.ErrParams, ErrQueueFull, ErrClosed.
func (e *Engine) Submit(ctx context.Context, prompt []int32, p sample.Params) (*Sequence, error) {
	switch {
	case len(prompt) == 0:
		return nil, ErrEmptyPrompt
	case len(prompt) >= e.cfg.Context:
		return nil, fmt.Errorf("%w: %d tokens leave no room in the %d-position context", ErrPromptTooLong, len(prompt), e.cfg.Context)
	}
	for i, id := range prompt {
		if id < 0 || int(id) >= e.m.Cfg.V {
			return nil, fmt.Errorf("%w: token %d (position %d) is not in [0, %d)", ErrTokenRange, id, i, e.m.Cfg.V)
		}
	}
	sampler, err := sample.New(p)
	if err != nil {
		return nil, err
	}
	s := &Sequence{e: e, ctx: ctx, arrived: time.Now(), prompt: prompt, history: slices.Clone(prompt), next: make([]int32, 1),
		sampler: sampler, stopper: sample.NewStopper(p), dec: tokenizer.NewDecoder(e.tok, true), notify: make(chan struct{}, 1)}
	s.upd.PromptTokens = len(prompt)
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		return nil, ErrClosed
	case len(e.queue)-len(e.free) >= e.cfg.MaxQueue:
		e.mu.Unlock()
		return nil, ErrQueueFull
	}
	e.queue = append(e.queue, s)
	s.queued = true
	e.queued.Store(int64(len(e.queue)))
	e.mu.Unlock()
	e.kick()
	return s, nil
}

// Close stops taking requests, ends every queued and running sequence
// with ErrClosed (a pass under way is abandoned) and stops the engine's
// goroutine. For a graceful stop, let the requests finish first.
func (e *Engine) Close() {
	e.mu.Lock()
	already := e.closed
	e.closed = true
	e.mu.Unlock()
	if !already {
		close(e.stop)
		e.cancel()
	}
	<-e.done
}

// kick wakes the engine goroutine if it is idle.
func (e *Engine) kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// dequeue removes s from the queue if it is still there, ending it.
func (e *Engine) dequeue(s *Sequence) {
	e.mu.Lock()
	if s.queued {
		s.queued = false
		e.queue = slices.DeleteFunc(e.queue, func(q *Sequence) bool { return q == s })
		e.queued.Store(int64(len(e.queue)))
		s.end(FinishError, ErrCancelled)
	}
	e.mu.Unlock()
}

func (e *Engine) loop() {
	defer close(e.done)
	for {
		e.admit()
		e.dropGone()
		if len(e.running) == 0 {
			select {
			case <-e.wake:
				continue
			case <-e.stop:
				e.shutdown()
				return
			}
		}
		select {
		case <-e.stop:
			e.shutdown()
			return
		default:
		}
		e.step()
	}
}

// admit moves queued sequences into free slots, oldest first.
func (e *Engine) admit() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for len(e.free) > 0 && len(e.queue) > 0 {
		s := e.queue[0]
		e.queue = e.queue[1:]
		s.queued = false
		if s.gone() {
			s.end(FinishError, ErrCancelled)
			continue
		}
		s.sess = e.free[len(e.free)-1]
		e.free = e.free[:len(e.free)-1]
		s.sess.Reset()
		e.running = append(e.running, s)
	}
	e.queued.Store(int64(len(e.queue)))
	e.runningN.Store(int64(len(e.running)))
}

// dropGone ends the running sequences whose request went away.
func (e *Engine) dropGone() {
	for _, s := range e.running {
		if s.gone() {
			s.end(FinishError, ErrCancelled)
			e.release(s)
		}
	}
	e.compact()
}

// release returns s's session to the pool.
func (e *Engine) release(s *Sequence) {
	e.mu.Lock()
	e.free = append(e.free, s.sess)
	e.mu.Unlock()
	s.sess = nil
}

// compact drops released sequences from running and updates the gauges.
func (e *Engine) compact() {
	e.running = slices.DeleteFunc(e.running, func(s *Sequence) bool { return s.sess == nil })
	var kv int64
	for _, s := range e.running {
		kv += int64(s.sess.Pos)
	}
	e.kvPositions.Store(kv)
	e.runningN.Store(int64(len(e.running)))
}

// step runs one pass: a decode step of every sequence past its prompt,
// then prompt chunks (oldest first) up to PrefillChunk tokens; then
// samples the next token of every sequence whose prompt is done.
func (e *Engine) step() {
	e.pass, e.sess, e.toks = e.pass[:0], e.sess[:0], e.toks[:0]
	for _, s := range e.running {
		if s.fed == len(s.prompt) {
			e.pass, e.sess, e.toks = append(e.pass, s), append(e.sess, s.sess), append(e.toks, s.next)
		}
	}
	budget := e.cfg.PrefillChunk
	for _, s := range e.running {
		if s.fed < len(s.prompt) && budget > 0 {
			n := min(len(s.prompt)-s.fed, budget)
			budget -= n
			e.pass, e.sess, e.toks = append(e.pass, s), append(e.sess, s.sess), append(e.toks, s.prompt[s.fed:s.fed+n])
		}
	}
	logits, err := e.batch.ForwardContext(e.ctx, e.sess, e.toks)
	if err != nil {
		e.passFailures.Add(1)
		if e.ctx.Err() != nil {
			err = ErrClosed
		} else {
			err = fmt.Errorf("serve: forward pass: %w", err)
		}
		for _, s := range e.pass {
			s.end(FinishError, err)
			e.release(s)
		}
		e.compact()
		return
	}
	e.passes.Add(1)
	V := e.m.Cfg.V
	now := time.Now()
	var sampled int64
	for i, s := range e.pass {
		n := len(e.toks[i])
		if s.fed < len(s.prompt) {
			s.fed += n
			e.promptTokens.Add(int64(n))
			if s.fed < len(s.prompt) {
				continue
			}
		}
		id := s.sampler.Next(logits[i][(n-1)*V:n*V], s.history)
		s.history = append(s.history, id)
		sampled++
		text, done := s.stopper.Push(id, s.dec.Push(id))
		s.emit(text)
		s.progress(s.stopper.Tokens(), now)
		finish := FinishNone
		switch s.stopper.Reason() {
		case sample.StopEOS, sample.StopString:
			finish = FinishStop
		case sample.StopMaxTokens:
			finish = FinishLength
		}
		if !done && s.sess.Pos >= s.sess.MaxT {
			s.emit(s.stopper.Flush()) // the context is full: no position for this token
			finish = FinishLength
		}
		if finish != FinishNone {
			s.end(finish, nil)
			e.release(s)
			continue
		}
		s.next[0] = id
	}
	e.generated.Add(sampled)
	e.rate.add(now, sampled)
	e.compact()
}

// shutdown ends everything still queued or running with ErrClosed.
func (e *Engine) shutdown() {
	e.mu.Lock()
	for _, s := range e.queue {
		s.queued = false
		s.end(FinishError, ErrClosed)
	}
	e.queue = nil
	e.queued.Store(0)
	e.mu.Unlock()
	for _, s := range e.running {
		s.end(FinishError, ErrClosed)
		e.release(s)
	}
	e.compact()
}

// EngineStats is a snapshot of the engine's gauges and counters.
type EngineStats struct {
	Queued, Running, Slots int
	// KVPositions are the KV cache positions the running sequences hold,
	// of KVCapacity (slots x context).
	KVPositions, KVCapacity int64
	// Cumulative: prompt tokens prefilled, tokens generated, passes run
	// and passes that failed.
	PromptTokens, GeneratedTokens, Passes, PassFailures int64
	// TokensPerSecond: generated tokens over the last rateWindow.
	TokensPerSecond float64
}

// Stats returns the engine's current figures; safe from any goroutine.
func (e *Engine) Stats() EngineStats {
	return EngineStats{Queued: int(e.queued.Load()), Running: int(e.runningN.Load()), Slots: e.cfg.MaxSeqs,
		KVPositions: e.kvPositions.Load(), KVCapacity: int64(e.cfg.MaxSeqs) * int64(e.cfg.Context),
		PromptTokens: e.promptTokens.Load(), GeneratedTokens: e.generated.Load(), Passes: e.passes.Load(),
		PassFailures: e.passFailures.Load(), TokensPerSecond: e.rate.perSecond(time.Now())}
}

// rateMeter counts events in one-second buckets over rateWindow, plus one
// for the current second (so it never overwrites the window's oldest).
type rateMeter struct {
	mu      sync.Mutex
	buckets [rateWindow/time.Second + 1]struct{ sec, n int64 }
}

func (r *rateMeter) add(now time.Time, n int64) {
	sec := now.Unix()
	r.mu.Lock()
	b := &r.buckets[sec%int64(len(r.buckets))]
	if b.sec != sec {
		b.sec, b.n = sec, 0
	}
	b.n += n
	r.mu.Unlock()
}

// perSecond is the events of the last complete rateWindow seconds per
// second.
func (r *rateMeter) perSecond(now time.Time) float64 {
	sec := now.Unix()
	var n int64
	r.mu.Lock()
	for _, b := range r.buckets {
		if b.sec < sec && b.sec >= sec-int64(rateWindow/time.Second) {
			n += b.n
		}
	}
	r.mu.Unlock()
	return float64(n) / rateWindow.Seconds()
}
