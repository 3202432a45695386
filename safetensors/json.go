package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Strict JSON reading for headers and indexes. encoding/json's map decoding
// silently keeps the last of duplicate keys and accepts any number syntax for
// integers via float64; headers are untrusted input, so they are walked token
// by token instead: duplicates are rejected and integers must be plain
// non-negative decimals. The decoder must have UseNumber set.

// readObject reads one JSON object, calling field for each key with the
// decoder positioned at the key's value; field must consume exactly that
// value. Duplicate keys are an error. A JSON null is an error unless
// allowNull, in which case it reports ok == false.
func readObject(dec *json.Decoder, allowNull bool, field func(key string) error) (ok bool, err error) {
	tok, err := dec.Token()
	if err != nil {
		return false, jsonError(err)
	}
	if tok == nil && allowNull {
		return false, nil
	}
	if d, isDelim := tok.(json.Delim); !isDelim || d != '{' {
		return false, fmt.Errorf("want a JSON object, got %s", describe(tok))
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return false, jsonError(err)
		}
		key, isString := tok.(string)
		if !isString { // cannot happen with encoding/json, which only yields string keys
			return false, fmt.Errorf("want an object key, got %s", describe(tok))
		}
		if seen[key] {
			return false, fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = true
		if err := field(key); err != nil {
			return false, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return false, jsonError(err)
	}
	return true, nil
}

// readString reads one JSON string.
func readString(dec *json.Decoder) (string, error) {
	tok, err := dec.Token()
	if err != nil {
		return "", jsonError(err)
	}
	s, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("want a string, got %s", describe(tok))
	}
	return s, nil
}

// readInts reads a JSON array of non-negative decimal integers no larger than
// max.
func readInts(dec *json.Decoder, max uint64) ([]int64, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonError(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, fmt.Errorf("want an array of integers, got %s", describe(tok))
	}
	out := []int64{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonError(err)
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("want a non-negative integer, got %s", describe(tok))
		}
		v, err := strconv.ParseUint(string(num), 10, 64)
		if err != nil || v > max {
			return nil, fmt.Errorf("want a non-negative integer <= %d, got %s", max, num)
		}
		out = append(out, int64(v))
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, jsonError(err)
	}
	return out, nil
}

// readEnd checks that nothing but whitespace follows the top-level value.
func readEnd(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err == io.EOF {
		return nil
	}
	if err != nil {
		return jsonError(err)
	}
	return fmt.Errorf("trailing data after the top-level object: %s", describe(tok))
}

// jsonError turns the decoder's end-of-input into a readable error.
func jsonError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("unexpected end of JSON")
	}
	return fmt.Errorf("invalid JSON: %v", err)
}

// describe names a JSON token for error messages.
func describe(tok json.Token) string {
	switch v := tok.(type) {
	case nil:
		return "null"
	case json.Delim:
		switch v {
		case '{':
			return "an object"
		case '[':
			return "an array"
		}
		return fmt.Sprintf("%q", string(v))
	case string:
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		return fmt.Sprintf("string %q", v)
	case json.Number:
		return "number " + string(v)
	case bool:
		return fmt.Sprintf("%v", v)
	}
	return fmt.Sprintf("%v", tok)
}

// appendString appends s as a JSON string escaped exactly as serde_json
// (HF's writer) escapes it: quote, backslash and control characters only,
// the short forms \b \f \n \r \t where they exist, else \u00xx. s must be
// valid UTF-8.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
