package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/moesys/moesys/sample"
)

// Limits on what a request may ask for, beyond the body size.
const (
	// maxStops is the most stop strings a request may give (OpenAI's
	// limit).
	maxStops = 4
	// maxStopBytes bounds one stop string: the Stopper compares held text
	// against each stop string at every token, so a long one costs every
	// step; no real stop sequence comes near it.
	maxStopBytes = 1024
	// maxTemperature is the largest temperature the API accepts
	// (OpenAI's range is [0, 2]).
	maxTemperature = 2
)

// genRequest is a decoded and validated completion or chat request, the
// same for both endpoints past decoding. Params lacks the model's EOS ids
// and the template's stop strings, which the server adds.
type genRequest struct {
	Model    string
	Chat     bool
	Text     string    // completions: the prompt text (when IDs is nil)
	IDs      []int32   // completions: a prompt given as token ids
	Messages []Message // chat: the conversation, system first if any
	Params   sample.Params
	// MaxTokensSet says the request gave max_tokens; otherwise the
	// completions endpoint defaults to defaultCompletionTokens and chat
	// runs to the end of the context.
	MaxTokensSet bool
	SeedSet      bool
	Stream       bool
	IncludeUsage bool // stream_options.include_usage
}

// Message is one message of a chat conversation as the template sees it.
type Message struct {
	Role    string
	Content string
}

// defaultCompletionTokens is max_tokens of a completions request that
// gives none (OpenAI's default for the endpoint).
const defaultCompletionTokens = 16

// rawCommon holds the fields both endpoints share, as JSON types: pointers
// tell "absent or null" from a value.
type rawCommon struct {
	Model         *string  `json:"model"`
	MaxTokens     *int64   `json:"max_tokens"`
	Temperature   *float64 `json:"temperature"`
	TopP          *float64 `json:"top_p"`
	N             *int64   `json:"n"`
	Stream        *bool    `json:"stream"`
	StreamOptions *struct {
		IncludeUsage *bool `json:"include_usage"`
	} `json:"stream_options"`
	Stop             json.RawMessage    `json:"stop"`
	Seed             *int64             `json:"seed"`
	PresencePenalty  *float64           `json:"presence_penalty"`
	FrequencyPenalty *float64           `json:"frequency_penalty"`
	LogitBias        map[string]float64 `json:"logit_bias"`
	User             *string            `json:"user"`
	// Sampling extensions, named as vLLM names them.
	TopK              *int64   `json:"top_k"`
	MinP              *float64 `json:"min_p"`
	RepetitionPenalty *float64 `json:"repetition_penalty"`
}

type rawCompletion struct {
	rawCommon
	Prompt   json.RawMessage `json:"prompt"`
	Echo     *bool           `json:"echo"`
	Logprobs json.RawMessage `json:"logprobs"`
	Suffix   *string         `json:"suffix"`
	BestOf   *int64          `json:"best_of"`
}

type rawChat struct {
	rawCommon
	Messages            json.RawMessage `json:"messages"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	Logprobs            *bool           `json:"logprobs"`
	TopLogprobs         *int64          `json:"top_logprobs"`
	Tools               json.RawMessage `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
	Functions           json.RawMessage `json:"functions"`
	FunctionCall        json.RawMessage `json:"function_call"`
	ResponseFormat      *struct {
		Type *string `json:"type"`
	} `json:"response_format"`
}

// decodeCompletion decodes and validates a POST /v1/completions body.
func decodeCompletion(body []byte) (*genRequest, *apiError) {
	var r rawCompletion
	if e := unmarshalBody(body, &r); e != nil {
		return nil, e
	}
	g, e := r.common()
	if e != nil {
		return nil, e
	}
	switch {
	case r.Echo != nil && *r.Echo:
		return nil, invalid("echo", "echo is not supported")
	case !isNull(r.Logprobs):
		return nil, invalid("logprobs", "logprobs are not supported")
	case r.Suffix != nil && *r.Suffix != "":
		return nil, invalid("suffix", "suffix is not supported")
	case r.BestOf != nil && *r.BestOf != 1:
		return nil, invalid("best_of", "best_of must be 1 (one completion per request)")
	}
	if g.Text, g.IDs, e = decodePrompt(r.Prompt); e != nil {
		return nil, e
	}
	if !g.MaxTokensSet {
		g.Params.MaxTokens = defaultCompletionTokens
	}
	return g, nil
}

// decodeChat decodes and validates a POST /v1/chat/completions body.
func decodeChat(body []byte) (*genRequest, *apiError) {
	var r rawChat
	if e := unmarshalBody(body, &r); e != nil {
		return nil, e
	}
	if r.MaxCompletionTokens != nil {
		r.MaxTokens = r.MaxCompletionTokens
	}
	g, e := r.common()
	if e != nil {
		return nil, e
	}
	g.Chat = true
	switch {
	case r.Logprobs != nil && *r.Logprobs:
		return nil, invalid("logprobs", "logprobs are not supported")
	case r.TopLogprobs != nil && *r.TopLogprobs != 0:
		return nil, invalid("top_logprobs", "top_logprobs are not supported")
	case !isNull(r.Tools) && !bytes.Equal(bytes.TrimSpace(r.Tools), []byte("[]")):
		return nil, invalid("tools", "tools (function calling) are not supported")
	case !isNull(r.Functions) && !bytes.Equal(bytes.TrimSpace(r.Functions), []byte("[]")):
		return nil, invalid("functions", "functions (function calling) are not supported")
	case !isNull(r.ToolChoice) && !isJSONString(r.ToolChoice, "none", "auto"):
		return nil, invalid("tool_choice", `tool_choice must be "none" or "auto": tools are not supported`)
	case !isNull(r.FunctionCall) && !isJSONString(r.FunctionCall, "none", "auto"):
		return nil, invalid("function_call", `function_call must be "none" or "auto": functions are not supported`)
	case r.ResponseFormat != nil && r.ResponseFormat.Type != nil && *r.ResponseFormat.Type != "text":
		return nil, invalid("response_format", "response_format %q is not supported (only \"text\")", *r.ResponseFormat.Type)
	}
	if g.Messages, e = decodeMessages(r.Messages); e != nil {
		return nil, e
	}
	return g, nil
}

// unmarshalBody decodes body into v, turning JSON errors into 400s that
// say where the body is wrong.
func unmarshalBody(body []byte, v any) *apiError {
	if len(bytes.TrimSpace(body)) == 0 {
		return invalid("", "the request body is empty: send a JSON object")
	}
	err := json.Unmarshal(body, v)
	if err == nil {
		return nil
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return invalid("", "the request body is not valid JSON (at byte %d): %v", syn.Offset, err)
	case errors.As(err, &typ) && typ.Field == "":
		return invalid("", "the request body must be a JSON object, not %s", typ.Value)
	case errors.As(err, &typ):
		field := strings.TrimPrefix(typ.Field, "rawCommon.") // the embedded struct's name is no part of the API
		return invalid(field, "%s must be %s, not %s", field, jsonKind(typ.Type.Kind().String()), typ.Value)
	}
	return invalid("", "the request body is not valid JSON: %v", err)
}

// jsonKind names a Go kind as the JSON value the API expects.
func jsonKind(kind string) string {
	switch {
	case strings.HasPrefix(kind, "int"), strings.HasPrefix(kind, "uint"):
		return "an integer"
	case strings.HasPrefix(kind, "float"):
		return "a number"
	case kind == "bool":
		return "a boolean"
	case kind == "string":
		return "a string"
	case kind == "map", kind == "struct":
		return "an object"
	case kind == "slice":
		return "an array"
	}
	return kind
}

// common validates the shared fields into a genRequest.
func (r *rawCommon) common() (*genRequest, *apiError) {
	g := &genRequest{Params: sample.Defaults()}
	if r.Model == nil || *r.Model == "" {
		return nil, invalid("model", "model is required: GET /v1/models lists the served model")
	}
	g.Model = *r.Model
	if r.N != nil && *r.N != 1 {
		return nil, invalid("n", "n must be 1 (one completion per request)")
	}
	if r.MaxTokens != nil {
		if *r.MaxTokens < 1 {
			return nil, invalid("max_tokens", "max_tokens must be at least 1, not %d", *r.MaxTokens)
		}
		g.Params.MaxTokens = int(min(*r.MaxTokens, math.MaxInt32))
		g.MaxTokensSet = true
	}
	if t := r.Temperature; t != nil {
		if !(*t >= 0 && *t <= maxTemperature) {
			return nil, invalid("temperature", "temperature must be in [0, %d] (0 is greedy), not %v", maxTemperature, *t)
		}
		g.Params.Temperature = *t
	}
	if p := r.TopP; p != nil {
		if !(*p > 0 && *p <= 1) {
			return nil, invalid("top_p", "top_p must be in (0, 1], not %v", *p)
		}
		g.Params.TopP = *p
	}
	if k := r.TopK; k != nil {
		if *k < -1 {
			return nil, invalid("top_k", "top_k must be >= 0 (0 or -1 turns it off), not %d", *k)
		}
		g.Params.TopK = int(min(max(*k, 0), math.MaxInt32))
	}
	if p := r.MinP; p != nil {
		if !(*p >= 0 && *p <= 1) {
			return nil, invalid("min_p", "min_p must be in [0, 1], not %v", *p)
		}
		g.Params.MinP = *p
	}
	if p := r.RepetitionPenalty; p != nil {
		if !(*p > 0) || math.IsInf(*p, 0) {
			return nil, invalid("repetition_penalty", "repetition_penalty must be a finite number > 0 (1 turns it off), not %v", *p)
		}
		g.Params.RepetitionPenalty = *p
	}
	if p := r.PresencePenalty; p != nil && *p != 0 {
		return nil, invalid("presence_penalty", "presence_penalty is not supported (use repetition_penalty)")
	}
	if p := r.FrequencyPenalty; p != nil && *p != 0 {
		return nil, invalid("frequency_penalty", "frequency_penalty is not supported (use repetition_penalty)")
	}
	if len(r.LogitBias) > 0 {
		return nil, invalid("logit_bias", "logit_bias is not supported")
	}
	if r.Seed != nil {
		g.Params.Seed, g.SeedSet = uint64(*r.Seed), true
	}
	g.Stream = r.Stream != nil && *r.Stream
	if r.StreamOptions != nil {
		if !g.Stream {
			return nil, invalid("stream_options", "stream_options needs stream: true")
		}
		g.IncludeUsage = r.StreamOptions.IncludeUsage != nil && *r.StreamOptions.IncludeUsage
	}
	stops, e := decodeStop(r.Stop)
	if e != nil {
		return nil, e
	}
	g.Params.StopStrings = stops
	return g, nil
}

// decodeStop reads stop: null, a string, or an array of up to maxStops
// non-empty strings.
func decodeStop(raw json.RawMessage) ([]string, *apiError) {
	if isNull(raw) {
		return nil, nil
	}
	var stops []string
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		stops = []string{one}
	} else if err := json.Unmarshal(raw, &stops); err != nil {
		return nil, invalid("stop", "stop must be a string or an array of strings")
	}
	if len(stops) > maxStops {
		return nil, invalid("stop", "stop takes at most %d strings, not %d", maxStops, len(stops))
	}
	for i, s := range stops {
		switch {
		case s == "":
			return nil, invalid("stop", "stop string %d is empty", i)
		case len(s) > maxStopBytes:
			return nil, invalid("stop", "stop string %d is %d bytes long; the limit is %d", i, len(s), maxStopBytes)
		}
	}
	return stops, nil
}

// decodePrompt reads a completions prompt: a string, an array holding one
// string, an array of token ids, or an array holding one array of ids.
func decodePrompt(raw json.RawMessage) (string, []int32, *apiError) {
	if isNull(raw) {
		return "", nil, invalid("prompt", "prompt is required")
	}
	var text string
	if err := json.Unmarshal(raw, &text); err == nil {
		return text, nil, nil
	}
	var ids []int32
	if err := json.Unmarshal(raw, &ids); err == nil {
		if len(ids) == 0 {
			return "", nil, invalid("prompt", "prompt is an empty array of token ids")
		}
		return "", ids, nil
	}
	var texts []string
	if err := json.Unmarshal(raw, &texts); err == nil {
		if len(texts) != 1 {
			return "", nil, invalid("prompt", "prompt must hold one string, not %d (one completion per request)", len(texts))
		}
		return texts[0], nil, nil
	}
	var lists [][]int32
	if err := json.Unmarshal(raw, &lists); err == nil {
		if len(lists) != 1 || len(lists[0]) == 0 {
			return "", nil, invalid("prompt", "prompt must hold one non-empty list of token ids, not %d lists", len(lists))
		}
		return "", lists[0], nil
	}
	return "", nil, invalid("prompt", "prompt must be a string, an array of one string, or an array of token ids (32-bit integers)")
}

// rawMessage is one chat message as sent. Content is a string, an array
// of {"type": "text", "text": ...} parts, or null.
type rawMessage struct {
	Role    *string         `json:"role"`
	Content json.RawMessage `json:"content"`
}

// decodeMessages reads the chat messages; "developer" (OpenAI's newer
// name for system instructions) becomes "system", which templates know.
func decodeMessages(raw json.RawMessage) ([]Message, *apiError) {
	if isNull(raw) {
		return nil, invalid("messages", "messages is required")
	}
	var rs []rawMessage
	if err := json.Unmarshal(raw, &rs); err != nil {
		return nil, invalid("messages", "messages must be an array of {\"role\", \"content\"} objects")
	}
	if len(rs) == 0 {
		return nil, invalid("messages", "messages is empty")
	}
	out := make([]Message, len(rs))
	for i, r := range rs {
		param := fmt.Sprintf("messages[%d]", i)
		if r.Role == nil {
			return nil, invalid(param+".role", "%s has no role", param)
		}
		role := *r.Role
		switch role {
		case "system", "user", "assistant":
		case "developer":
			role = "system"
		default:
			return nil, invalid(param+".role", "%s: role %q is not supported (system, developer, user, assistant)", param, role)
		}
		content, e := decodeContent(r.Content, param+".content")
		if e != nil {
			return nil, e
		}
		out[i] = Message{Role: role, Content: content}
	}
	return out, nil
}

// decodeContent reads a message's content: a string, text parts (joined),
// or null (empty).
func decodeContent(raw json.RawMessage, param string) (string, *apiError) {
	if isNull(raw) {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type *string `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", invalid(param, "%s must be a string or an array of text parts", param)
	}
	var b strings.Builder
	for i, p := range parts {
		switch {
		case p.Type == nil || *p.Type != "text":
			t := "none"
			if p.Type != nil {
				t = fmt.Sprintf("%q", *p.Type)
			}
			return "", invalid(fmt.Sprintf("%s[%d].type", param, i), "%s[%d]: content part type %s is not supported (only \"text\")", param, i, t)
		case p.Text == nil:
			return "", invalid(fmt.Sprintf("%s[%d].text", param, i), "%s[%d] has no text", param, i)
		}
		b.WriteString(*p.Text)
	}
	return b.String(), nil
}

// isNull reports whether raw is absent or JSON null.
func isNull(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) == 0 || bytes.Equal(t, []byte("null"))
}

// isJSONString reports whether raw is one of the given JSON strings.
func isJSONString(raw json.RawMessage, want ...string) bool {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return false
	}
	for _, w := range want {
		if s == w {
			return true
		}
	}
	return false
}
