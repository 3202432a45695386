package serve

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// stream answers with server-sent events: one chunk per piece of text as
// the engine produces it (the chat stream's first chunk carries the
// role), a last chunk with finish_reason, a usage chunk if the request
// asked for one, then "data: [DONE]". An error after the headers went out
// is sent as an event holding the error object, and the stream ends
// without [DONE]. A failed write (the client left) cancels the sequence.
func (a *answer) stream() {
	h := a.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	a.w.WriteHeader(http.StatusOK)
	if a.g.Chat && !a.event(a.chatChunk(&ChatDelta{Role: "assistant", Content: new(string)}, nil, nil)) {
		return
	}
	for {
		u, err := a.seq.Wait(a.ctx)
		if err != nil {
			if a.r.Context().Err() == nil {
				a.errorEvent(a.endError(err))
			}
			return
		}
		a.w.firstToken = u.FirstToken
		if u.Text != "" && !a.event(a.chunk(u.Text, nil)) {
			return
		}
		if !u.Done {
			continue
		}
		if u.Finish == FinishError {
			a.errorEvent(a.endError(u.Err))
			return
		}
		reason := u.Finish.String()
		if !a.event(a.chunk("", &reason)) {
			return
		}
		if a.g.IncludeUsage {
			usage := newUsage(u.PromptTokens, u.CompletionTokens)
			var last any = Completion{ID: a.id, Object: "text_completion", Created: a.created, Model: a.s.cfg.Name,
				Choices: []CompletionChoice{}, Usage: &usage}
			if a.g.Chat {
				last = a.chatChunk(nil, nil, &usage)
			}
			if !a.event(last) {
				return
			}
		}
		a.write("data: [DONE]\n\n")
		return
	}
}

// chunk is the stream's chunk for a piece of text, or the last chunk
// (text "" and the finish reason).
func (a *answer) chunk(text string, finish *string) any {
	if a.g.Chat {
		d := &ChatDelta{}
		if finish == nil {
			d.Content = &text
		}
		return a.chatChunk(d, finish, nil)
	}
	return Completion{ID: a.id, Object: "text_completion", Created: a.created, Model: a.s.cfg.Name,
		Choices: []CompletionChoice{{Text: text, FinishReason: finish}}}
}

// chatChunk is a chat stream chunk: one choice with delta (nil: no
// choices, the usage chunk).
func (a *answer) chatChunk(delta *ChatDelta, finish *string, usage *Usage) ChatChunk {
	c := ChatChunk{ID: a.id, Object: "chat.completion.chunk", Created: a.created, Model: a.s.cfg.Name, Choices: []ChatChunkChoice{}, Usage: usage}
	if delta != nil {
		c.Choices = append(c.Choices, ChatChunkChoice{Delta: *delta, FinishReason: finish})
	}
	return c
}

// event sends v as one server-sent event; false when the client is gone.
func (a *answer) event(v any) bool {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("serve: marshal %T: %v", v, err))
	}
	return a.write("data: " + string(b) + "\n\n")
}

// errorEvent sends e as an event ({"error": {...}}).
func (a *answer) errorEvent(e *apiError) {
	a.event(struct {
		Error *apiError `json:"error"`
	}{e})
}

// write sends s and flushes it; on failure it cancels the sequence.
func (a *answer) write(s string) bool {
	if _, err := a.w.Write([]byte(s)); err != nil {
		a.seq.Cancel()
		return false
	}
	a.w.Flush()
	return true
}
