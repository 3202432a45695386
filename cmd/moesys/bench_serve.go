package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/train"
)

func init() {
	benchSuites["serve"] = struct {
		summary string
		run     func(opts benchOptions, progress io.Writer) ([]benchResult, error)
	}{"moesys serve over loopback: batched vs single-client throughput, errors and latency under 64 clients", benchServe}
}

// Settings of the serve benchmark.
const (
	benchServeSlots    = 8    // --max-seqs: the 8 concurrent clients each get a sequence
	benchServeQueue    = 64   // --max-queue: 64 load clients fit running + queued, so none may see 429
	benchServeContext  = 1024 // --ctx
	benchServeMaxToks  = 32   // tokens per throughput request
	benchLoadClients   = 64
	benchLoadDuration  = 60 * time.Second
	benchLoadQuick     = 15 * time.Second
	benchPhase         = 8 * time.Second // one throughput phase
	benchPhaseQuick    = 4 * time.Second
	benchRequestLimit  = 2 * time.Minute // client timeout of one request
	benchServeName     = "small"
	benchThroughputRun = 3 // alternating rounds of 1 and 8 clients (--quick: 1)
)

// benchPrompt is the prompt of the throughput requests (Go source, which
// the byte-level model's vocabulary covers).
const benchPrompt = "package main\n\nimport \"fmt\"\n\nfunc main() {\n"

// defaultServeModel returns the cached random checkpoint of the train
// preset "small" (d_model 256, 4 layers, 8 experts top-2, byte vocabulary),
// writing it on first use.
func defaultServeModel(progress io.Writer) (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "moesys", "small-preset-bf16-random")
	if _, err := os.Stat(filepath.Join(dir, "config.json")); err == nil {
		return dir, nil
	}
	o, err := train.PresetOptions("small")
	if err != nil {
		return "", err
	}
	cfg, err := o.Model.MarshalHF()
	if err != nil {
		return "", err
	}
	fmt.Fprintf(progress, "writing a random small-preset bf16 checkpoint to %s (once)\n", dir)
	return dir, model.WriteRandom(dir, cfg, model.RandomOptions{Seed: 1})
}

// benchServer is a `moesys serve` child process on a loopback port.
type benchServer struct {
	cmd    *exec.Cmd
	url    string
	stderr bytes.Buffer
	ended  chan struct{}
}

func startBenchServer(dir string, progress io.Writer) (*benchServer, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "serve", "--model", dir, "--name", benchServeName, "--addr", "127.0.0.1:0",
		"--max-seqs", strconv.Itoa(benchServeSlots), "--max-queue", strconv.Itoa(benchServeQueue), "--ctx", strconv.Itoa(benchServeContext))
	cmd.Env = append(os.Environ(), "MOESYS_TEST_MAIN=1") // lets a test binary run as the command too
	pipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &benchServer{cmd: cmd, ended: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		defer close(s.ended)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			s.stderr.WriteString(sc.Text() + "\n")
			if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				addr <- a
			}
		}
	}()
	select {
	case s.url = <-addr:
		fmt.Fprintf(progress, "serve: %s (pid %d)\n", s.url, cmd.Process.Pid)
		return s, nil
	case <-s.ended:
		cmd.Wait()
		return nil, fmt.Errorf("moesys serve exited: %s", s.stderr.String())
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		cmd.Wait()
		return nil, errors.New("moesys serve did not start listening within 2 minutes")
	}
}

// peakRSS reads the server's peak resident memory (VmHWM) in bytes.
func (s *benchServer) peakRSS() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// stop sends SIGTERM and waits; a non-zero exit is an error.
func (s *benchServer) stop() error {
	s.cmd.Process.Signal(syscall.SIGTERM)
	<-s.ended
	if err := s.cmd.Wait(); err != nil {
		return fmt.Errorf("moesys serve after SIGTERM: %v\n%s", err, s.stderr.String())
	}
	return nil
}

func benchServe(opts benchOptions, progress io.Writer) (res []benchResult, err error) {
	dir := opts.model
	if dir == "" {
		if dir, err = defaultServeModel(progress); err != nil {
			return nil, err
		}
	}
	srv, err := startBenchServer(dir, progress)
	if err != nil {
		return nil, err
	}
	defer func() {
		if srv.cmd.ProcessState == nil {
			err = errors.Join(err, srv.stop())
		}
	}()
	client := &http.Client{Timeout: benchRequestLimit, Transport: &http.Transport{MaxIdleConnsPerHost: benchLoadClients}}

	// Throughput: 1 client, then 8, alternating; generated tokens/s of each
	// phase, medians.
	phase, rounds := benchPhase, benchThroughputRun
	if opts.quick {
		phase, rounds = benchPhaseQuick, 1
	}
	warm := func() error { _, err := throughputPhase(client, srv.url, 1, time.Second); return err }
	if err := warm(); err != nil {
		return nil, err
	}
	var single, batched []float64
	for r := 0; r < rounds; r++ {
		for _, clients := range []int{1, benchServeSlots} {
			tps, err := throughputPhase(client, srv.url, clients, phase)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(progress, "round %d: %d client(s): %.1f generated tokens/s\n", r+1, clients, tps)
			if clients == 1 {
				single = append(single, tps)
			} else {
				batched = append(batched, tps)
			}
		}
	}
	s1, s8 := median(single), median(batched)
	res = append(res, benchResult{Name: "serve_batched_vs_single_throughput", Value: s8, Unit: "tokens/s", Bound: s1, Ratio: s8 / s1, Target: 3.0,
		Note: fmt.Sprintf("%d clients vs 1, %d-token completions, medians of %d alternating %v phases; bound = 1 client", benchServeSlots, benchServeMaxToks, rounds, phase)})

	// Errors under load.
	d := benchLoadDuration
	if opts.quick {
		d = benchLoadQuick
	}
	if opts.duration > 0 {
		d = opts.duration
	}
	fmt.Fprintf(progress, "load: %d clients for %v\n", benchLoadClients, d)
	ld := runLoad(client, srv.url, benchLoadClients, d)
	rss := srv.peakRSS()
	if err := srv.stop(); err != nil {
		ld.failures = append(ld.failures, err.Error())
	}
	fmt.Fprintf(progress, "load: %d requests (%d good, %d deliberately bad answered 4xx), %d failures\n", ld.good+ld.bad, ld.good, ld.bad, len(ld.failures))
	for i, f := range ld.failures {
		if i == 5 {
			fmt.Fprintf(progress, "  ... %d more\n", len(ld.failures)-5)
			break
		}
		fmt.Fprintf(progress, "  failure: %s\n", f)
	}
	verdict := "target 0: met"
	if len(ld.failures) > 0 {
		verdict = "target 0: NOT MET"
	}
	res = append(res,
		benchResult{Name: "serve_errors_under_load", Value: float64(len(ld.failures)), Unit: "failures",
			Note: fmt.Sprintf("%s; %d clients for %v: %d good requests, %d bad ones answered 4xx as expected", verdict, benchLoadClients, d, ld.good, ld.bad)},
		benchResult{Name: "serve_load_latency_p50", Value: percentile(ld.latency, 0.50) * 1000, Unit: "ms"},
		benchResult{Name: "serve_load_latency_p99", Value: percentile(ld.latency, 0.99) * 1000, Unit: "ms"},
		benchResult{Name: "serve_load_ttft_p50", Value: percentile(ld.ttft, 0.50) * 1000, Unit: "ms", Note: "streamed requests: first text chunk"},
		benchResult{Name: "serve_load_ttft_p99", Value: percentile(ld.ttft, 0.99) * 1000, Unit: "ms"},
		benchResult{Name: "serve_load_tokens_per_s", Value: float64(ld.tokens) / d.Seconds(), Unit: "tokens/s"},
		benchResult{Name: "serve_peak_rss", Value: float64(rss) / (1 << 20), Unit: "MiB", Note: "the server process's VmHWM"},
	)
	return res, nil
}

// throughputPhase runs clients loops of greedy completions for d and
// returns the generated tokens per second (from the responses' usage).
func throughputPhase(client *http.Client, url string, clients int, d time.Duration) (float64, error) {
	var mu sync.Mutex
	var tokens int64
	var firstErr error
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Since(start) < d; i++ {
				body := fmt.Sprintf(`{"model": %q, "prompt": %q, "max_tokens": %d, "temperature": 0.8, "seed": %d}`,
					benchServeName, benchPrompt, benchServeMaxToks, c*100000+i)
				code, b, err := postJSON(client, url+"/v1/completions", body)
				var r struct {
					Usage struct {
						CompletionTokens int64 `json:"completion_tokens"`
					} `json:"usage"`
				}
				if err == nil && code == 200 {
					err = json.Unmarshal(b, &r)
				} else if err == nil {
					err = fmt.Errorf("status %d: %s", code, b)
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				tokens += r.Usage.CompletionTokens
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	return float64(tokens) / time.Since(start).Seconds(), firstErr
}

func postJSON(client *http.Client, url, body string) (int, []byte, error) {
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// loadResult is what the load phase saw.
type loadResult struct {
	good, bad int
	tokens    int64
	latency   []float64 // seconds, good requests
	ttft      []float64 // seconds, good streamed requests
	failures  []string
	sync.Mutex
}

// loadCase is one kind of request of the load phase: a body and how to
// check the answer.
type loadCase struct {
	path, body string
	status     int  // for bad requests: the 4xx expected
	stream     bool // good streamed request
	chat       bool
}

// loadCases: 6 good kinds (completions and chat, whole and streamed) and
// 4 deliberately bad ones (malformed JSON, unknown model, wrong type,
// prompt longer than the context).
func loadCases() []loadCase {
	long := strings.Repeat("x", benchServeContext+10)
	msgs := `[{"role": "system", "content": "You write Go."}, {"role": "user", "content": "A loop, please."}]`
	return []loadCase{
		{path: "/v1/completions", body: fmt.Sprintf(`{"model": %q, "prompt": %q, "max_tokens": 16}`, benchServeName, benchPrompt)},
		{path: "/v1/completions", body: fmt.Sprintf(`{"model": %q, "prompt": %q, "max_tokens": 16, "stream": true}`, benchServeName, benchPrompt), stream: true},
		{path: "/v1/chat/completions", body: fmt.Sprintf(`{"model": %q, "messages": %s, "max_tokens": 16}`, benchServeName, msgs), chat: true},
		{path: "/v1/chat/completions", body: fmt.Sprintf(`{"model": %q, "messages": %s, "max_tokens": 16, "stream": true, "stream_options": {"include_usage": true}}`, benchServeName, msgs), chat: true, stream: true},
		{path: "/v1/completions", body: `{"model": "small", "prompt": "func`, status: 400},
		{path: "/v1/completions", body: fmt.Sprintf(`{"model": %q, "prompt": %q, "max_tokens": 8, "temperature": 0}`, benchServeName, benchPrompt)},
		{path: "/v1/chat/completions", body: `{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}`, status: 404},
		{path: "/v1/completions", body: fmt.Sprintf(`{"model": %q, "prompt": %q, "max_tokens": 16, "stream": true, "stop": ["}"]}`, benchServeName, benchPrompt), stream: true},
		{path: "/v1/completions", body: fmt.Sprintf(`{"model": %q, "prompt": "x", "max_tokens": "many"}`, benchServeName), status: 400},
		{path: "/v1/completions", body: fmt.Sprintf(`{"model": %q, "prompt": %q}`, benchServeName, long), status: 400},
	}
}

// runLoad runs clients loops over loadCases for d, checking every answer.
func runLoad(client *http.Client, url string, clients int, d time.Duration) *loadResult {
	cases := loadCases()
	l := &loadResult{}
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; time.Since(start) < d; i++ {
				tc := cases[i%len(cases)]
				t0 := time.Now()
				tokens, ttft, err := loadRequest(client, url, tc)
				el := time.Since(t0).Seconds()
				l.Lock()
				switch {
				case err != nil:
					l.failures = append(l.failures, fmt.Sprintf("%s %s: %v", tc.path, tc.body[:min(len(tc.body), 60)], err))
				case tc.status != 0:
					l.bad++
				default:
					l.good++
					l.tokens += tokens
					l.latency = append(l.latency, el)
					if tc.stream {
						l.ttft = append(l.ttft, ttft.Seconds())
					}
				}
				l.Unlock()
			}
		}()
	}
	wg.Wait()
	return l
}

// loadRequest sends tc and checks its answer: a bad request must get its
// 4xx with an OpenAI error object; a good one a well-formed response or a
// stream of well-formed chunks ending in [DONE], with a finish reason and
// usage.
func loadRequest(client *http.Client, url string, tc loadCase) (tokens int64, ttft time.Duration, err error) {
	t0 := time.Now()
	resp, err := client.Post(url+tc.path, "application/json", strings.NewReader(tc.body))
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if tc.status != 0 {
		b, err := io.ReadAll(resp.Body)
		var e struct {
			Error *struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		if err == nil {
			err = json.Unmarshal(b, &e)
		}
		if err != nil || resp.StatusCode != tc.status || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" {
			return 0, 0, fmt.Errorf("want %d with an error object, got %d: %s (%v)", tc.status, resp.StatusCode, b, err)
		}
		return 0, 0, nil
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return 0, 0, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	type choice struct {
		Text         *string                    `json:"text"`
		Message      *struct{ Content *string } `json:"message"`
		Delta        *struct{ Content *string } `json:"delta"`
		FinishReason *string                    `json:"finish_reason"`
	}
	type body struct {
		Object  string   `json:"object"`
		Choices []choice `json:"choices"`
		Usage   *struct {
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"usage"`
	}
	finishOK := func(f *string) bool { return f != nil && (*f == "stop" || *f == "length") }
	if !tc.stream {
		var r body
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return 0, 0, err
		}
		switch {
		case len(r.Choices) != 1 || r.Usage == nil || !finishOK(r.Choices[0].FinishReason):
			return 0, 0, fmt.Errorf("malformed response: %+v", r)
		case tc.chat && (r.Object != "chat.completion" || r.Choices[0].Message == nil || r.Choices[0].Message.Content == nil):
			return 0, 0, fmt.Errorf("malformed chat response: %+v", r)
		case !tc.chat && (r.Object != "text_completion" || r.Choices[0].Text == nil):
			return 0, 0, fmt.Errorf("malformed completion: %+v", r)
		}
		return r.Usage.CompletionTokens, 0, nil
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		return 0, 0, fmt.Errorf("stream content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var finished, done bool
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		switch {
		case !ok || done:
			return 0, 0, fmt.Errorf("stream line %q (after [DONE]: %v)", line, done)
		case data == "[DONE]":
			done = true
			continue
		}
		var r body
		if err := json.Unmarshal([]byte(data), &r); err != nil {
			return 0, 0, fmt.Errorf("chunk %q: %v", data, err)
		}
		if r.Usage != nil {
			tokens = r.Usage.CompletionTokens
		}
		for _, c := range r.Choices {
			text := c.Text
			if c.Delta != nil {
				text = c.Delta.Content
			}
			if ttft == 0 && text != nil && *text != "" {
				ttft = time.Since(t0)
			}
			if c.FinishReason != nil {
				if !finishOK(c.FinishReason) {
					return 0, 0, fmt.Errorf("finish reason %q", *c.FinishReason)
				}
				finished = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if !done || !finished {
		return 0, 0, fmt.Errorf("stream ended without a finish reason or [DONE] (finish %v, done %v)", finished, done)
	}
	if ttft == 0 {
		ttft = time.Since(t0) // no text at all (an immediate stop)
	}
	return tokens, ttft, nil
}

// percentile returns the q-quantile of xs (nearest rank; 0 for none).
func percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	i := int(q*float64(len(s)) + 0.5)
	return s[min(max(i-1, 0), len(s)-1)]
}
