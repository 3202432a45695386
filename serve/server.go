package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/offload"
	"github.com/moesys/moesys/sample"
	"github.com/moesys/moesys/tokenizer"
)

// DefaultMaxBodyBytes is Config.MaxBodyBytes's default: 4 MiB holds a
// prompt filling a 32k-token context several times over.
const DefaultMaxBodyBytes = 4 << 20

// retryAfterSeconds is the Retry-After of a 429: a slot frees when a
// running sequence ends, typically within a second or two of decoding.
const retryAfterSeconds = 1

// Config configures a Server.
type Config struct {
	Model     *model.Model
	Tokenizer tokenizer.Tokenizer
	// Template renders chat conversations (nil: NewDefaultTemplate).
	Template *ChatTemplate
	// Name is the model id clients send and GET /v1/models lists.
	Name   string
	Engine EngineConfig
	// MaxBodyBytes bounds a request body (0: DefaultMaxBodyBytes); a
	// larger one answers 413.
	MaxBodyBytes int64
	// RequestTimeout bounds a generation request from arrival to its end
	// (0: none); past it the request answers 504 (or, streaming, an error
	// event) and its sequence stops.
	RequestTimeout time.Duration
	// ExpertStats returns the offload scheduler's counters for /metrics
	// (nil for a resident model).
	ExpertStats func() offload.Counts
}

// Server answers the OpenAI API over one model (see the package doc). Its
// Handler serves HTTP; Drain and Close stop it.
type Server struct {
	cfg      Config
	eng      *Engine
	met      *metrics
	handler  http.Handler
	eos      []int32
	draining atomic.Bool
}

// New starts a server's engine (allocating its KV caches) and builds its
// handler.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Model == nil || cfg.Tokenizer == nil:
		return nil, errors.New("serve: a model and a tokenizer are required")
	case cfg.Name == "":
		return nil, errors.New("serve: the model needs a name")
	case cfg.MaxBodyBytes < 0 || cfg.RequestTimeout < 0:
		return nil, errors.New("serve: negative body limit or timeout")
	}
	if cfg.Template == nil {
		cfg.Template = NewDefaultTemplate()
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	eng, err := NewEngine(cfg.Model, cfg.Tokenizer, cfg.Engine)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, eng: eng, eos: append(append([]int32(nil), cfg.Tokenizer.EOS()...), cfg.Model.Cfg.EOS...)}
	s.met = newMetrics(eng, cfg.ExpertStats)
	mux := http.NewServeMux()
	mux.Handle("/v1/completions", s.instrument("completions", http.MethodPost, s.completions))
	mux.Handle("/v1/chat/completions", s.instrument("chat_completions", http.MethodPost, s.chatCompletions))
	mux.Handle("/v1/models", s.instrument("models", http.MethodGet, s.models))
	mux.Handle("/v1/models/{id...}", s.instrument("models", http.MethodGet, s.modelByID))
	mux.Handle("/healthz", s.instrument("healthz", http.MethodGet, s.healthz))
	metricsHandler := promhttp.HandlerFor(s.met.reg, promhttp.HandlerOpts{})
	mux.Handle("/metrics", s.instrument("metrics", http.MethodGet, metricsHandler.ServeHTTP))
	mux.Handle("/", s.instrument("other", "", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: strPtr("unknown_url"),
			Message: fmt.Sprintf("unknown request URL: %s %s (see GET /v1/models, POST /v1/completions, POST /v1/chat/completions)", r.Method, r.URL.Path)})
	}))
	s.handler = mux
	return s, nil
}

// Handler returns the HTTP handler of every endpoint.
func (s *Server) Handler() http.Handler { return s.handler }

// Engine returns the server's engine.
func (s *Server) Engine() *Engine { return s.eng }

// Drain makes the server refuse new generation requests (503) and fail
// its health check, while requests already taken run to their end: the
// first step of a graceful stop (then http.Server.Shutdown, then Close).
func (s *Server) Drain() { s.draining.Store(true) }

// Close stops the engine: requests still running end with an error.
func (s *Server) Close() { s.eng.Close() }

// recorder remembers a response's status for the metrics; it passes
// Flush through for streaming.
type recorder struct {
	http.ResponseWriter
	status     int
	arrived    time.Time // generation requests: for latency and TTFT
	firstToken time.Time
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *recorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// clientClosedRequest is the status recorded (never sent) for a request
// whose client went away before the answer.
const clientClosedRequest = 499

// instrument checks the method (method "" takes any) and counts the
// request by endpoint and status.
func (s *Server) instrument(endpoint, method string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &recorder{ResponseWriter: w}
		if method != "" && r.Method != method {
			w.Header().Set("Allow", method)
			writeError(rec, &apiError{Status: http.StatusMethodNotAllowed, Type: typeInvalidRequest, Code: strPtr("method_not_allowed"),
				Message: fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, method)})
		} else {
			h(rec, r)
		}
		if rec.status == 0 {
			rec.status = clientClosedRequest
		}
		s.met.observe(endpoint, rec.status, rec.arrived, rec.firstToken)
	})
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	s.generate(w.(*recorder), r, false)
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	s.generate(w.(*recorder), r, true)
}

// generate serves both generation endpoints: decode, tokenize, submit,
// then answer in one piece or as a stream.
func (s *Server) generate(w *recorder, r *http.Request, chat bool) {
	w.arrived = time.Now()
	if s.draining.Load() {
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Code: strPtr("shutting_down"),
			Message: "the server is shutting down and takes no new requests", RetryAfter: retryAfterSeconds})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, &apiError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Code: strPtr("request_too_large"),
				Message: fmt.Sprintf("the request body exceeds the server's limit of %d bytes", tooBig.Limit)})
			return
		}
		writeError(w, invalid("", "reading the request body: %v", err))
		return
	}
	decode := decodeCompletion
	if chat {
		decode = decodeChat
	}
	g, e := decode(body)
	if e == nil && g.Model != s.cfg.Name {
		e = &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Param: strPtr("model"), Code: strPtr("model_not_found"),
			Message: fmt.Sprintf("the model %q does not exist: this server serves %q", g.Model, s.cfg.Name)}
	}
	var ids []int32
	if e == nil {
		ids, e = s.prompt(g)
	}
	if e != nil {
		writeError(w, e)
		return
	}
	p := g.Params
	p.EOS = s.eos
	if chat {
		p.StopStrings = append(p.StopStrings, s.cfg.Template.Stops...)
	}
	if !g.SeedSet {
		p.Seed = rand.Uint64()
	}
	ctx := r.Context()
	if s.cfg.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.RequestTimeout)
		defer cancel()
	}
	seq, err := s.eng.Submit(ctx, ids, p)
	if err != nil {
		writeError(w, s.submitError(err, chat))
		return
	}
	a := answer{s: s, w: w, r: r, ctx: ctx, seq: seq, g: g, created: time.Now().Unix()}
	if chat {
		a.id = "chatcmpl-" + randomID()
	} else {
		a.id = "cmpl-" + randomID()
	}
	if g.Stream {
		a.stream()
	} else {
		a.whole()
	}
}

// prompt turns the request into token ids: the completion's text with the
// tokenizer's special tokens (BOS) added, its ids as given, or the chat
// template's rendering (which writes its own special tokens).
func (s *Server) prompt(g *genRequest) ([]int32, *apiError) {
	switch {
	case g.Chat:
		text, err := s.cfg.Template.Render(g.Messages)
		if err != nil {
			return nil, invalid("messages", "%v", err).withCode("chat_template_error")
		}
		return s.cfg.Tokenizer.Encode(text), nil
	case g.IDs != nil:
		return g.IDs, nil
	}
	return s.cfg.Tokenizer.EncodeSpecial(g.Text), nil
}

// submitError maps Submit's errors to API errors.
func (s *Server) submitError(err error, chat bool) *apiError {
	param := "prompt"
	if chat {
		param = "messages"
	}
	switch {
	case errors.Is(err, ErrPromptTooLong):
		return invalid(param, "this model's context is %d tokens per request (prompt and completion): %v", s.eng.cfg.Context, err).withCode("context_length_exceeded")
	case errors.Is(err, ErrEmptyPrompt):
		return invalid(param, "the prompt has no tokens")
	case errors.Is(err, ErrTokenRange):
		return invalid(param, "%v", err)
	case errors.Is(err, sample.ErrParams):
		return invalid("", "%v", err)
	case errors.Is(err, ErrQueueFull):
		return &apiError{Status: http.StatusTooManyRequests, Type: typeRateLimit, Code: strPtr("queue_full"), RetryAfter: retryAfterSeconds,
			Message: fmt.Sprintf("the server is at capacity (%d running, %d queued): retry shortly", s.eng.cfg.MaxSeqs, s.eng.cfg.MaxQueue)}
	case errors.Is(err, ErrClosed):
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Code: strPtr("shutting_down"),
			Message: "the server is shutting down", RetryAfter: retryAfterSeconds}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: err.Error()}
}

// endError is the API error of a sequence that ended with err, or whose
// Wait failed with err (its context ended).
func (a *answer) endError(err error) *apiError {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusGatewayTimeout, Type: typeTimeout, Code: strPtr("request_timeout"),
			Message: fmt.Sprintf("the request did not finish within the server's limit of %v", a.s.cfg.RequestTimeout)}
	case errors.Is(err, ErrClosed):
		return &apiError{Status: http.StatusServiceUnavailable, Type: typeUnavailable, Code: strPtr("shutting_down"),
			Message: "the server shut down before the request finished", RetryAfter: retryAfterSeconds}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: err.Error()}
}

func randomID() string { return fmt.Sprintf("%016x%08x", rand.Uint64(), rand.Uint32()) }

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, ModelList{Object: "list", Data: []ModelCard{s.card()}})
}

func (s *Server) modelByID(w http.ResponseWriter, r *http.Request) {
	if id := r.PathValue("id"); id != s.cfg.Name {
		writeError(w, &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Param: strPtr("model"), Code: strPtr("model_not_found"),
			Message: fmt.Sprintf("the model %q does not exist: this server serves %q", id, s.cfg.Name)})
		return
	}
	writeJSON(w, http.StatusOK, s.card())
}

func (s *Server) card() ModelCard {
	return ModelCard{ID: s.cfg.Name, Object: "model", Created: time.Now().Unix(), OwnedBy: "moesys", MaxModelLen: s.eng.cfg.Context}
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// answer writes one generation's response.
type answer struct {
	s       *Server
	w       *recorder
	r       *http.Request
	ctx     context.Context // the request's, with the timeout
	seq     *Sequence
	g       *genRequest
	id      string
	created int64
}

// whole waits for the end and answers in one JSON object.
func (a *answer) whole() {
	var text strings.Builder
	for {
		u, err := a.seq.Wait(a.ctx)
		if err != nil {
			if a.r.Context().Err() == nil { // our timeout, not the client leaving
				writeError(a.w, a.endError(err))
			}
			return
		}
		text.WriteString(u.Text)
		a.w.firstToken = u.FirstToken
		if !u.Done {
			continue
		}
		if u.Finish == FinishError {
			writeError(a.w, a.endError(u.Err))
			return
		}
		usage := newUsage(u.PromptTokens, u.CompletionTokens)
		if a.g.Chat {
			writeJSON(a.w, http.StatusOK, ChatCompletion{ID: a.id, Object: "chat.completion", Created: a.created, Model: a.s.cfg.Name,
				Choices: []ChatChoice{{Message: ChatMessage{Role: "assistant", Content: text.String()}, FinishReason: u.Finish.String()}},
				Usage:   usage})
			return
		}
		reason := u.Finish.String()
		writeJSON(a.w, http.StatusOK, Completion{ID: a.id, Object: "text_completion", Created: a.created, Model: a.s.cfg.Name,
			Choices: []CompletionChoice{{Text: text.String(), FinishReason: &reason}}, Usage: &usage})
		return
	}
}
