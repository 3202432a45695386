package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/sample"
	"github.com/moesys/moesys/tokenizer"
)

// testModelDir is a tiny random Mixtral (vocabulary 256: the byte
// tokenizer serves it; EOS id 2).
const testModelDir = "../testdata/hf/mixtral_f32"

const testModelName = "mixtral-test"

var (
	loadOnce  sync.Once
	testModel *model.Model
	loadErr   error

	endlessOnce  sync.Once
	endlessModel *model.Model
	endlessErr   error
)

// endless loads a second copy of the test model without EOS ids: its
// generations run to max_tokens or the context, for tests that need a
// request to stay busy.
func endless(t testing.TB) *model.Model {
	t.Helper()
	endlessOnce.Do(func() {
		if endlessModel, endlessErr = model.Load(testModelDir); endlessErr == nil {
			endlessModel.Cfg.EOS = nil
		}
	})
	if endlessErr != nil {
		t.Fatal(endlessErr)
	}
	return endlessModel
}

// sharedModel loads the test model once per test binary; engines share
// its weights read-only.
func sharedModel(t testing.TB) *model.Model {
	t.Helper()
	loadOnce.Do(func() { testModel, loadErr = model.Load(testModelDir) })
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	return testModel
}

// newTestServer starts a Server over the shared model (edit adjusts its
// config) behind an httptest server; both stop at the test's end.
func newTestServer(t *testing.T, edit func(*Config)) (*Server, *httptest.Server) {
	t.Helper()
	cfg := Config{Model: sharedModel(t), Tokenizer: &tokenizer.Byte{}, Name: testModelName,
		Engine: EngineConfig{MaxSeqs: 4, MaxQueue: 16, Context: 256}}
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		hs.Close()
		s.Close()
	})
	return s, hs
}

// post sends body as JSON to path and returns the status, headers and body.
func post(t *testing.T, hs *httptest.Server, path, body string) (int, http.Header, []byte) {
	t.Helper()
	return postCtx(t, context.Background(), hs, path, body)
}

func postCtx(t *testing.T, ctx context.Context, hs *httptest.Server, path, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hs.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// reference generates from prompt ids with one Session, the loop `moesys
// generate` runs: what the engine must produce for a greedy request.
func reference(t *testing.T, ids []int32, maxTokens, context int) (string, Finish, int) {
	t.Helper()
	m := sharedModel(t)
	p := sample.Defaults()
	p.Temperature, p.MaxTokens = 0, maxTokens
	p.EOS = m.Cfg.EOS
	smp, err := sample.New(p)
	if err != nil {
		t.Fatal(err)
	}
	stop := sample.NewStopper(p)
	dec := tokenizer.NewDecoder(&tokenizer.Byte{}, true)
	s := m.NewSession(context)
	logits, err := s.Forward(ids)
	if err != nil {
		t.Fatal(err)
	}
	history := append([]int32(nil), ids...)
	var out strings.Builder
	V := m.Cfg.V
	for {
		id := smp.Next(logits[len(logits)-V:], history)
		history = append(history, id)
		text, done := stop.Push(id, dec.Push(id))
		out.WriteString(text)
		if done {
			f := FinishLength
			if stop.Reason() == sample.StopEOS || stop.Reason() == sample.StopString {
				f = FinishStop
			}
			return out.String(), f, stop.Tokens()
		}
		if s.Pos >= s.MaxT {
			out.WriteString(stop.Flush())
			return out.String(), FinishLength, stop.Tokens()
		}
		if logits, err = s.Forward([]int32{id}); err != nil {
			t.Fatal(err)
		}
	}
}

// sseEvents reads a server-sent event stream: the data of each event.
func sseEvents(t *testing.T, body []byte) []string {
	t.Helper()
	var events []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("stream line %q is not a data line", line)
		}
		events = append(events, data)
	}
	return events
}

// decodeJSON unmarshals b into v, failing the test with b on error.
func decodeJSON(t *testing.T, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
}

// errorBody is OpenAI's error object, as a client decodes it.
type errorBody struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}
