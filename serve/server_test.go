package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moesys/moesys/tokenizer"
)

// A greedy completion, whole and streamed, is the text one Session
// generates for the prompt, with OpenAI's shapes, usage and finish
// reason.
func TestCompletions(t *testing.T) {
	_, hs := newTestServer(t, nil)
	prompt := "func main() {"
	want, finish, n := reference(t, (&tokenizer.Byte{}).EncodeSpecial(prompt), 12, 256)

	code, hdr, body := post(t, hs, "/v1/completions", fmt.Sprintf(`{"model": %q, "prompt": %q, "max_tokens": 12, "temperature": 0}`, testModelName, prompt))
	if code != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d %s: %s", code, hdr.Get("Content-Type"), body)
	}
	var c Completion
	decodeJSON(t, body, &c)
	if c.Object != "text_completion" || !strings.HasPrefix(c.ID, "cmpl-") || c.Model != testModelName || c.Created == 0 || len(c.Choices) != 1 {
		t.Fatalf("response %s", body)
	}
	ch := c.Choices[0]
	if ch.Text != want || *ch.FinishReason != finish.String() {
		t.Errorf("text %q (%s), want %q (%s)", ch.Text, *ch.FinishReason, want, finish)
	}
	if u := c.Usage; u == nil || u.PromptTokens != len(prompt) || u.CompletionTokens != n || u.TotalTokens != len(prompt)+n {
		t.Errorf("usage %+v, want %d + %d", c.Usage, len(prompt), n)
	}

	// The same request streamed, with usage.
	code, hdr, body = post(t, hs, "/v1/completions", fmt.Sprintf(`{"model": %q, "prompt": [%q], "max_tokens": 12, "temperature": 0,
		"stream": true, "stream_options": {"include_usage": true}}`, testModelName, prompt))
	if code != http.StatusOK || hdr.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d %s: %s", code, hdr.Get("Content-Type"), body)
	}
	events := sseEvents(t, body)
	if len(events) < 3 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("events %q", events)
	}
	var text strings.Builder
	for i, ev := range events[:len(events)-2] {
		var c Completion
		decodeJSON(t, []byte(ev), &c)
		last := i == len(events)-3
		if c.Object != "text_completion" || len(c.Choices) != 1 || c.Usage != nil || (c.Choices[0].FinishReason != nil) != last {
			t.Fatalf("chunk %d: %s", i, ev)
		}
		text.WriteString(c.Choices[0].Text)
		if last && *c.Choices[0].FinishReason != finish.String() {
			t.Errorf("finish %s, want %s", *c.Choices[0].FinishReason, finish)
		}
	}
	if text.String() != want {
		t.Errorf("streamed %q, want %q", text.String(), want)
	}
	var usage Completion
	decodeJSON(t, []byte(events[len(events)-2]), &usage)
	if len(usage.Choices) != 0 || usage.Usage == nil || usage.Usage.CompletionTokens != n {
		t.Errorf("usage chunk %s", events[len(events)-2])
	}
}

// Chat completions render the default template, stop at its stop string
// and stream a role chunk first.
func TestChatCompletions(t *testing.T) {
	_, hs := newTestServer(t, nil)
	msgs := []Message{{"system", "Answer in Go."}, {"user", "Print hello."}}
	rendered, err := NewDefaultTemplate().Render(msgs)
	if err != nil {
		t.Fatal(err)
	}
	want, finish, n := reference(t, (&tokenizer.Byte{}).Encode(rendered), 10, 256)
	if strings.Contains(want, "\nUser:") {
		t.Skip("the reference contains the stop string; pick another prompt")
	}
	req := fmt.Sprintf(`{"model": %q, "messages": [{"role": "developer", "content": "Answer in Go."},
		{"role": "user", "content": [{"type": "text", "text": "Print "}, {"type": "text", "text": "hello."}]}],
		"max_completion_tokens": 10, "temperature": 0, "seed": 3, "user": "ignored", "n": 1}`, testModelName)
	code, _, body := post(t, hs, "/v1/chat/completions", req)
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	var c ChatCompletion
	decodeJSON(t, body, &c)
	if c.Object != "chat.completion" || !strings.HasPrefix(c.ID, "chatcmpl-") || len(c.Choices) != 1 {
		t.Fatalf("response %s", body)
	}
	if m := c.Choices[0].Message; m.Role != "assistant" || m.Content != want || c.Choices[0].FinishReason != finish.String() {
		t.Errorf("message %+v (%s), want %q (%s)", m, c.Choices[0].FinishReason, want, finish)
	}
	if c.Usage.PromptTokens != len(rendered) || c.Usage.CompletionTokens != n {
		t.Errorf("usage %+v", c.Usage)
	}

	code, _, body = post(t, hs, "/v1/chat/completions", strings.Replace(req, `"n": 1`, `"n": 1, "stream": true`, 1))
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	events := sseEvents(t, body)
	if len(events) < 3 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("events %q", events)
	}
	var text strings.Builder
	for i, ev := range events[:len(events)-1] {
		var c ChatChunk
		decodeJSON(t, []byte(ev), &c)
		if c.Object != "chat.completion.chunk" || len(c.Choices) != 1 {
			t.Fatalf("chunk %d: %s", i, ev)
		}
		d := c.Choices[0].Delta
		switch {
		case i == 0 && (d.Role != "assistant" || d.Content == nil || *d.Content != ""):
			t.Fatalf("first chunk %s", ev)
		case i == len(events)-2 && (c.Choices[0].FinishReason == nil || *c.Choices[0].FinishReason != finish.String() || d.Content != nil):
			t.Fatalf("last chunk %s", ev)
		case i > 0 && d.Content != nil:
			text.WriteString(*d.Content)
		}
	}
	if text.String() != want {
		t.Errorf("streamed %q, want %q", text.String(), want)
	}
}

// Concurrent requests, more than the slots, each get the text they would
// alone: sequences join and leave the batch at every step (different
// lengths), prefill chunks share passes with decode steps.
func TestConcurrentRequestsMatchAlone(t *testing.T) {
	s, hs := newTestServer(t, func(c *Config) { c.Engine.MaxSeqs, c.Engine.PrefillChunk = 3, 8 })
	type job struct {
		prompt string
		max    int
		want   string
	}
	var jobs []job
	for i := range 7 {
		p := strings.Repeat(fmt.Sprintf("x%d ", i), 1+i*3) // 3..57 bytes: several prefill chunks
		want, _, _ := reference(t, []int32((&tokenizer.Byte{}).EncodeSpecial(p)), 4+3*i, 256)
		jobs = append(jobs, job{p, 4 + 3*i, want})
	}
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stream := i%2 == 1
			code, _, body := post(t, hs, "/v1/completions", fmt.Sprintf(`{"model": %q, "prompt": %q, "max_tokens": %d, "temperature": 0, "stream": %v}`,
				testModelName, j.prompt, j.max, stream))
			if code != http.StatusOK {
				t.Errorf("job %d: status %d: %s", i, code, body)
				return
			}
			var got string
			if stream {
				for _, ev := range sseEvents(t, body) {
					var c Completion
					if ev != "[DONE]" && json.Unmarshal([]byte(ev), &c) == nil && len(c.Choices) > 0 {
						got += c.Choices[0].Text
					}
				}
			} else {
				var c Completion
				decodeJSON(t, body, &c)
				got = c.Choices[0].Text
			}
			if got != j.want {
				t.Errorf("job %d: %q, want %q", i, got, j.want)
			}
		}()
	}
	wg.Wait()
	// Answers go out before the engine loop frees the slots: the pool
	// must drain to empty, not merely be empty at this instant.
	waitFor(t, "the engine to go idle", func() bool {
		st := s.Engine().Stats()
		return st.Running == 0 && st.Queued == 0 && st.KVPositions == 0
	})
	st := s.Engine().Stats()
	if st.Passes == 0 || st.GeneratedTokens == 0 {
		t.Errorf("stats %+v", st)
	}
}

// Every malformed, unsupported or impossible request answers the right
// 4xx with OpenAI's error object naming the field.
func TestRequestErrors(t *testing.T) {
	_, hs := newTestServer(t, func(c *Config) { c.MaxBodyBytes = 4096; c.Engine.Context = 64 })
	mixtral := fmt.Sprintf(`{"model": %q, `, testModelName)
	for _, tc := range []struct {
		name, path, body string
		status           int
		param, code      string
		msg              string
	}{
		{"empty body", "/v1/completions", "", 400, "", "", "empty"},
		{"not json", "/v1/completions", "{model:", 400, "", "", "not valid JSON"},
		{"trailing garbage", "/v1/completions", mixtral + `"prompt": "x"} {}`, 400, "", "", "not valid JSON"},
		{"array body", "/v1/completions", `[1, 2]`, 400, "", "", "must be a JSON object"},
		{"no model", "/v1/completions", `{"prompt": "x"}`, 400, "model", "", "model is required"},
		{"model not a string", "/v1/completions", `{"model": 7, "prompt": "x"}`, 400, "model", "", "must be a string"},
		{"unknown model", "/v1/completions", `{"model": "gpt-4", "prompt": "x"}`, 404, "model", "model_not_found", "does not exist"},
		{"unknown model chat", "/v1/chat/completions", `{"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}`, 404, "model", "model_not_found", "gpt-4"},
		{"max_tokens string", "/v1/completions", mixtral + `"prompt": "x", "max_tokens": "10"}`, 400, "max_tokens", "", "must be an integer"},
		{"max_tokens float", "/v1/completions", mixtral + `"prompt": "x", "max_tokens": 1.5}`, 400, "max_tokens", "", "must be an integer"},
		{"max_tokens zero", "/v1/completions", mixtral + `"prompt": "x", "max_tokens": 0}`, 400, "max_tokens", "", "at least 1"},
		{"temperature high", "/v1/completions", mixtral + `"prompt": "x", "temperature": 2.5}`, 400, "temperature", "", "[0, 2]"},
		{"top_p zero", "/v1/completions", mixtral + `"prompt": "x", "top_p": 0}`, 400, "top_p", "", "(0, 1]"},
		{"stream not bool", "/v1/completions", mixtral + `"prompt": "x", "stream": "yes"}`, 400, "stream", "", "must be a boolean"},
		{"stream_options without stream", "/v1/completions", mixtral + `"prompt": "x", "stream_options": {"include_usage": true}}`, 400, "stream_options", "", "stream: true"},
		{"n 2", "/v1/completions", mixtral + `"prompt": "x", "n": 2}`, 400, "n", "", "n must be 1"},
		{"best_of", "/v1/completions", mixtral + `"prompt": "x", "best_of": 3}`, 400, "best_of", "", "best_of"},
		{"echo", "/v1/completions", mixtral + `"prompt": "x", "echo": true}`, 400, "echo", "", "echo"},
		{"logprobs", "/v1/completions", mixtral + `"prompt": "x", "logprobs": 2}`, 400, "logprobs", "", "logprobs"},
		{"suffix", "/v1/completions", mixtral + `"prompt": "x", "suffix": "y"}`, 400, "suffix", "", "suffix"},
		{"presence penalty", "/v1/completions", mixtral + `"prompt": "x", "presence_penalty": 0.5}`, 400, "presence_penalty", "", "repetition_penalty"},
		{"logit bias", "/v1/completions", mixtral + `"prompt": "x", "logit_bias": {"50": 1}}`, 400, "logit_bias", "", "not supported"},
		{"repetition penalty", "/v1/completions", mixtral + `"prompt": "x", "repetition_penalty": 0}`, 400, "repetition_penalty", "", "> 0"},
		{"stop not strings", "/v1/completions", mixtral + `"prompt": "x", "stop": [1]}`, 400, "stop", "", "array of strings"},
		{"five stops", "/v1/completions", mixtral + `"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}`, 400, "stop", "", "at most 4"},
		{"empty stop", "/v1/completions", mixtral + `"prompt": "x", "stop": ""}`, 400, "stop", "", "empty"},
		{"no prompt", "/v1/completions", mixtral + `"max_tokens": 3}`, 400, "prompt", "", "prompt is required"},
		{"two prompts", "/v1/completions", mixtral + `"prompt": ["a", "b"]}`, 400, "prompt", "", "one string"},
		{"prompt object", "/v1/completions", mixtral + `"prompt": {"text": "a"}}`, 400, "prompt", "", "prompt must be"},
		{"token out of range", "/v1/completions", mixtral + `"prompt": [65, 300]}`, 400, "prompt", "", "outside the vocabulary"},
		{"empty prompt", "/v1/completions", mixtral + `"prompt": ""}`, 400, "prompt", "", "no tokens"},
		{"prompt fills the context", "/v1/completions", mixtral + `"prompt": "` + strings.Repeat("a", 64) + `"}`, 400, "prompt", "context_length_exceeded", "64 tokens"},
		{"chat too long", "/v1/chat/completions", mixtral + `"messages": [{"role": "user", "content": "` + strings.Repeat("a", 64) + `"}]}`, 400, "messages", "context_length_exceeded", "context"},
		{"body too large", "/v1/completions", mixtral + `"prompt": "` + strings.Repeat("a", 5000) + `"}`, 413, "", "request_too_large", "4096 bytes"},
		{"no messages", "/v1/chat/completions", mixtral + `"max_tokens": 3}`, 400, "messages", "", "messages is required"},
		{"empty messages", "/v1/chat/completions", mixtral + `"messages": []}`, 400, "messages", "", "empty"},
		{"messages not array", "/v1/chat/completions", mixtral + `"messages": "hi"}`, 400, "messages", "", "array"},
		{"no role", "/v1/chat/completions", mixtral + `"messages": [{"content": "hi"}]}`, 400, "messages[0].role", "", "no role"},
		{"tool role", "/v1/chat/completions", mixtral + `"messages": [{"role": "tool", "content": "hi"}]}`, 400, "messages[0].role", "", "not supported"},
		{"image part", "/v1/chat/completions", mixtral + `"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}`, 400, "messages[0].content[0].type", "", "image_url"},
		{"content number", "/v1/chat/completions", mixtral + `"messages": [{"role": "user", "content": 5}]}`, 400, "messages[0].content", "", "string or an array"},
		{"tools", "/v1/chat/completions", mixtral + `"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}`, 400, "tools", "", "not supported"},
		{"tool_choice required", "/v1/chat/completions", mixtral + `"messages": [{"role": "user", "content": "x"}], "tool_choice": "required"}`, 400, "tool_choice", "", "tool_choice"},
		{"chat logprobs", "/v1/chat/completions", mixtral + `"messages": [{"role": "user", "content": "x"}], "logprobs": true}`, 400, "logprobs", "", "logprobs"},
		{"json mode", "/v1/chat/completions", mixtral + `"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}`, 400, "response_format", "", "json_object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, body := post(t, hs, tc.path, tc.body)
			if code != tc.status || hdr.Get("Content-Type") != "application/json" {
				t.Fatalf("status %d (%s), want %d: %s", code, hdr.Get("Content-Type"), tc.status, body)
			}
			var e errorBody
			decodeJSON(t, body, &e)
			if e.Error.Type != typeInvalidRequest || !strings.Contains(e.Error.Message, tc.msg) {
				t.Errorf("error %s: want type %s and a message containing %q", body, typeInvalidRequest, tc.msg)
			}
			if got := deref(e.Error.Param); got != tc.param {
				t.Errorf("param %q, want %q (%s)", got, tc.param, body)
			}
			if got := deref(e.Error.Code); got != tc.code {
				t.Errorf("code %q, want %q (%s)", got, tc.code, body)
			}
		})
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// A template's raise_exception answers 400 with the template's message.
func TestChatTemplateException(t *testing.T) {
	src := "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}"
	tpl, err := ParseChatTemplate(src, "", "")
	if err != nil {
		t.Fatal(err)
	}
	_, hs := newTestServer(t, func(c *Config) { c.Template = tpl })
	code, _, body := post(t, hs, "/v1/chat/completions", fmt.Sprintf(`{"model": %q, "max_tokens": 2, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}`, testModelName))
	var e errorBody
	decodeJSON(t, body, &e)
	if code != 400 || deref(e.Error.Code) != "chat_template_error" || !strings.HasSuffix(e.Error.Message, "System role not supported") {
		t.Fatalf("status %d: %s", code, body)
	}
	code, _, body = post(t, hs, "/v1/chat/completions", fmt.Sprintf(`{"model": %q, "max_tokens": 2, "messages": [{"role": "user", "content": "u"}]}`, testModelName))
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
}

func TestMethodsModelsHealthAndUnknownPaths(t *testing.T) {
	s, hs := newTestServer(t, nil)
	get := func(path string) (int, []byte) {
		resp, err := hs.Client().Get(hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	code, body := get("/v1/models")
	var list ModelList
	decodeJSON(t, body, &list)
	if code != 200 || list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != testModelName || list.Data[0].MaxModelLen != 256 || list.Data[0].Object != "model" {
		t.Fatalf("models %d: %s", code, body)
	}
	if code, body = get("/v1/models/" + testModelName); code != 200 {
		t.Fatalf("model %d: %s", code, body)
	}
	if code, body = get("/v1/models/other"); code != 404 || !strings.Contains(string(body), "model_not_found") {
		t.Fatalf("other model %d: %s", code, body)
	}
	if code, body = get("/v1/completions"); code != 405 || !strings.Contains(string(body), "use POST") {
		t.Fatalf("GET completions %d: %s", code, body)
	}
	if code, body = get("/v1/nothing"); code != 404 || !strings.Contains(string(body), "unknown_url") {
		t.Fatalf("unknown path %d: %s", code, body)
	}
	if code, body = get("/healthz"); code != 200 || !strings.Contains(string(body), `"ok"`) {
		t.Fatalf("healthz %d: %s", code, body)
	}
	if code, _, body := post(t, hs, "/healthz", "{}"); code != 405 {
		t.Fatalf("POST healthz %d: %s", code, body)
	}
	s.Drain()
	if code, body = get("/healthz"); code != 503 {
		t.Fatalf("healthz draining %d: %s", code, body)
	}
	code, hdr, body := post(t, hs, "/v1/completions", fmt.Sprintf(`{"model": %q, "prompt": "x"}`, testModelName))
	if code != 503 || hdr.Get("Retry-After") == "" || !strings.Contains(string(body), "shutting_down") {
		t.Fatalf("completion while draining %d: %s", code, body)
	}
}

// startStream starts a streaming completion that runs until the end of
// the context and returns once its first chunk arrived; cancel ends it
// from the client side.
func startStream(t *testing.T, hs string, client *http.Client) (cancel func(), done chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hs+"/v1/completions",
		strings.NewReader(fmt.Sprintf(`{"model": %q, "prompt": "long", "max_tokens": 100000, "stream": true}`, testModelName)))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatal(err)
	}
	done = make(chan struct{})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		for {
			if _, err := resp.Body.Read(buf); err != nil {
				return
			}
		}
	}()
	return cancel, done
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// With every slot busy and no queue, a request answers 429 with
// Retry-After; a client that disconnects frees its slot at once, and the
// next request runs.
func TestQueueFullAndDisconnect(t *testing.T) {
	s, hs := newTestServer(t, func(c *Config) {
		c.Model, c.Engine.MaxSeqs, c.Engine.MaxQueue, c.Engine.Context = endless(t), 1, 0, 4096
	})
	cancel, done := startStream(t, hs.URL, hs.Client())
	code, hdr, body := post(t, hs, "/v1/completions", fmt.Sprintf(`{"model": %q, "prompt": "x", "max_tokens": 2}`, testModelName))
	var e errorBody
	decodeJSON(t, body, &e)
	if code != 429 || hdr.Get("Retry-After") != "1" || e.Error.Type != typeRateLimit || deref(e.Error.Code) != "queue_full" {
		t.Fatalf("status %d Retry-After %q: %s", code, hdr.Get("Retry-After"), body)
	}
	cancel()
	<-done
	waitFor(t, "the slot to free", func() bool { return s.Engine().Stats().Running == 0 })
	if code, _, body := post(t, hs, "/v1/completions", fmt.Sprintf(`{"model": %q, "prompt": "x", "max_tokens": 2}`, testModelName)); code != 200 {
		t.Fatalf("after the disconnect: status %d: %s", code, body)
	}
}

// A request queued behind a busy slot whose client leaves is removed from
// the queue.
func TestQueuedRequestCancelled(t *testing.T) {
	s, hs := newTestServer(t, func(c *Config) {
		c.Model, c.Engine.MaxSeqs, c.Engine.MaxQueue, c.Engine.Context = endless(t), 1, 4, 4096
	})
	cancel, done := startStream(t, hs.URL, hs.Client())
	defer func() { cancel(); <-done }()
	ctx, stop := context.WithCancel(context.Background())
	go func() {
		waitFor(t, "the request to queue", func() bool { return s.Engine().Stats().Queued == 1 })
		stop()
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, hs.URL+"/v1/completions", strings.NewReader(fmt.Sprintf(`{"model": %q, "prompt": "x"}`, testModelName)))
	if _, err := hs.Client().Do(req); err == nil {
		t.Fatal("the cancelled request got an answer")
	}
	waitFor(t, "the queue to empty", func() bool { return s.Engine().Stats().Queued == 0 })
}

// Past the request timeout a request answers 504, or a streamed one ends
// with an error event, and its slot frees.
func TestRequestTimeout(t *testing.T) {
	s, hs := newTestServer(t, func(c *Config) { c.Model, c.RequestTimeout, c.Engine.Context = endless(t), 100*time.Millisecond, 4096 })
	long := fmt.Sprintf(`{"model": %q, "prompt": "x", "max_tokens": 100000`, testModelName)
	code, _, body := post(t, hs, "/v1/completions", long+"}")
	var e errorBody
	decodeJSON(t, body, &e)
	if code != 504 || deref(e.Error.Code) != "request_timeout" {
		t.Fatalf("status %d: %s", code, body)
	}
	code, _, body = post(t, hs, "/v1/completions", long+`, "stream": true}`)
	events := sseEvents(t, body)
	if code != 200 || len(events) == 0 || !strings.Contains(events[len(events)-1], "request_timeout") {
		t.Fatalf("stream %d: %q", code, events)
	}
	waitFor(t, "the slots to free", func() bool { return s.Engine().Stats().Running == 0 })
}

// /metrics speaks the Prometheus text format with the server's figures.
func TestMetrics(t *testing.T) {
	s, hs := newTestServer(t, nil)
	post(t, hs, "/v1/completions", fmt.Sprintf(`{"model": %q, "prompt": "abc", "max_tokens": 3}`, testModelName))
	post(t, hs, "/v1/completions", fmt.Sprintf(`{"model": %q, "prompt": "abc", "stream": true}`, testModelName))
	post(t, hs, "/v1/completions", `{"model": "nope", "prompt": "abc"}`)
	// A sequence's answer is sent before the engine loop frees its slot
	// and updates the gauges: wait for the engine to go idle.
	waitFor(t, "the engine to go idle", func() bool { st := s.Engine().Stats(); return st.Running == 0 && st.KVPositions == 0 })
	resp, err := hs.Client().Get(hs.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Errorf("content type %q", resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		`moesys_requests_total{code="200",endpoint="completions"} 2`,
		`moesys_requests_total{code="404",endpoint="completions"} 1`,
		`moesys_request_duration_seconds_count{endpoint="completions"} 3`,
		`moesys_time_to_first_token_seconds_count{endpoint="completions"} 2`,
		"moesys_queue_depth 0", "moesys_running_sequences 0", "moesys_sequence_slots 4",
		"moesys_kv_pool_positions 1024", "moesys_kv_pool_usage_ratio 0",
		"moesys_prompt_tokens_total 6", "moesys_generation_tokens_per_second",
		"moesys_generated_tokens_total", "moesys_engine_passes_total", "process_resident_memory_bytes",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(text, "moesys_expert_cache") {
		t.Error("a resident model reports expert cache metrics")
	}
}
