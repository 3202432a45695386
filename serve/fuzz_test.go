package serve

import (
	"slices"
	"testing"
)

// FuzzDecodeRequest: no request body makes decoding panic, and whatever it
// accepts is usable: sampling parameters that pass sample's validation, at
// most maxStops non-empty stop strings, a prompt or non-empty messages of
// known roles that the default chat template renders.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model": "m", "prompt": "hello", "max_tokens": 5, "temperature": 0.7, "top_p": 0.9, "seed": -3, "stop": ["\n", "x"]}`,
		`{"model": "m", "prompt": [1, 2, 3], "stream": true, "stream_options": {"include_usage": true}}`,
		`{"model": "m", "prompt": [[7, 8]], "top_k": -1, "min_p": 0.1, "repetition_penalty": 1.2, "n": 1, "best_of": 1}`,
		`{"model": "m", "prompt": ["one"], "echo": false, "logprobs": null, "suffix": "", "user": "u", "logit_bias": {}}`,
		`{"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}], "max_completion_tokens": 9}`,
		`{"model": "m", "messages": [{"role": "developer", "content": [{"type": "text", "text": "a"}]}, {"role": "assistant", "content": null}], "tools": [], "tool_choice": "none", "response_format": {"type": "text"}}`,
		`{"model": "m", "messages": [{"role": "user", "content": "{{ x }}{% raise %}"}], "logprobs": false, "top_logprobs": 0}`,
		`{"model": 1}`, `[]`, `{"max_tokens": 1e400}`, `{"model": "m", "prompt": "\ud800"}`, `{"model":"m","stop":"` + "\x00" + `"}`,
		``, `null`, `{`, `{"model": "m", "prompt": {"a": 1}}`, `{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}`,
	} {
		f.Add([]byte(seed))
	}
	tpl := NewDefaultTemplate()
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, decode := range []func([]byte) (*genRequest, *apiError){decodeCompletion, decodeChat} {
			g, e := decode(body)
			if (g == nil) == (e == nil) {
				t.Fatalf("%q: request %v, error %v", body, g, e)
			}
			if e != nil {
				if e.Status < 400 || e.Status > 499 || e.Message == "" || e.Type != typeInvalidRequest {
					t.Fatalf("%q: error %+v", body, e)
				}
				continue
			}
			if err := g.Params.Validate(); err != nil {
				t.Fatalf("%q: accepted parameters fail validation: %v", body, err)
			}
			if g.Model == "" || len(g.Params.StopStrings) > maxStops || slices.Contains(g.Params.StopStrings, "") {
				t.Fatalf("%q: accepted %+v", body, g)
			}
			if !g.Chat {
				if g.Messages != nil || (g.IDs != nil && len(g.IDs) == 0) {
					t.Fatalf("%q: completion %+v", body, g)
				}
				continue
			}
			if len(g.Messages) == 0 {
				t.Fatalf("%q: chat without messages", body)
			}
			for _, m := range g.Messages {
				if m.Role != "system" && m.Role != "user" && m.Role != "assistant" {
					t.Fatalf("%q: role %q accepted", body, m.Role)
				}
			}
			if _, err := tpl.Render(g.Messages); err != nil {
				t.Fatalf("%q: the default template fails: %v", body, err)
			}
		}
	})
}
