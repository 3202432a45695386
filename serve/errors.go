package serve

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Sentinel errors of the engine. Handlers turn them into HTTP statuses:
// ErrQueueFull 429, ErrClosed 503, ErrPromptTooLong 400.
var (
	// ErrQueueFull: MaxQueue requests already wait for a sequence slot.
	ErrQueueFull = errors.New("serve: request queue is full")
	// ErrClosed: the engine is shutting down and takes no new requests.
	ErrClosed = errors.New("serve: engine closed")
	// ErrPromptTooLong: the prompt leaves no position of the context for
	// a generated token.
	ErrPromptTooLong = errors.New("serve: prompt longer than the context")
	// ErrCancelled: the request's context ended (client gone, timeout)
	// before its generation did.
	ErrCancelled = errors.New("serve: request cancelled")
)

// Error types of the OpenAI API's error object.
const (
	typeInvalidRequest = "invalid_request_error"
	typeRateLimit      = "rate_limit_error"
	typeServer         = "server_error"
	typeUnavailable    = "service_unavailable"
	typeTimeout        = "timeout_error"
)

// apiError is an error answered to the client as OpenAI's error object:
// {"error": {"message", "type", "param", "code"}} with an HTTP status.
type apiError struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"` // the request field at fault, or null
	Code    *string `json:"code"`  // a machine-readable reason, or null
	// RetryAfter, in seconds, is sent as the Retry-After header when > 0.
	RetryAfter int `json:"-"`
}

func (e *apiError) Error() string { return e.Message }

// invalid returns a 400 invalid_request_error about param ("" for none).
func invalid(param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, args...), Type: typeInvalidRequest, Param: strPtr(param)}
}

// withCode sets the error's code and returns it.
func (e *apiError) withCode(code string) *apiError {
	e.Code = strPtr(code)
	return e
}

func strPtr(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// writeError answers e as JSON with its status (and Retry-After).
func writeError(w http.ResponseWriter, e *apiError) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	writeJSON(w, e.Status, struct {
		Error *apiError `json:"error"`
	}{e})
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Every value written here is made of plain structs, strings and
		// numbers: a failure is a bug.
		panic(fmt.Sprintf("serve: marshal %T: %v", v, err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
