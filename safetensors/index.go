package safetensors

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"github.com/moesys/moesys/internal/atomicfile"
)

// File names of HF checkpoints in a model directory.
const (
	// ModelFile is the single-file checkpoint.
	ModelFile = "model.safetensors"
	// IndexFile is the index of a sharded checkpoint.
	IndexFile = "model.safetensors.index.json"
)

// Index is the content of a sharded checkpoint's index file:
//
//	{"metadata": {"total_size": 3498640},
//	 "weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors", ...}}
type Index struct {
	// Metadata is free-form; HF writes {"total_size": data bytes}.
	Metadata map[string]any `json:"metadata,omitempty"`
	// WeightMap maps each tensor name to the shard file holding it, a plain
	// file name in the index's directory.
	WeightMap map[string]string `json:"weight_map"`
}

// ShardName returns HF's name for shard i (0-based) of n:
// ShardName(0, 3) == "model-00001-of-00003.safetensors".
func ShardName(i, n int) string {
	return fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n)
}

// WriteIndex atomically writes idx as JSON (2-space indent, sorted keys,
// trailing newline, as transformers writes it) to path.
func WriteIndex(path string, idx Index) error {
	for name, shard := range idx.WeightMap {
		if err := checkShardName(shard); err != nil {
			return fmt.Errorf("write index %s: %w: tensor %q: %v", path, ErrInvalid, name, err)
		}
	}
	if idx.WeightMap == nil {
		idx.WeightMap = map[string]string{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(idx); err != nil {
		return fmt.Errorf("write index %s: %w: %v", path, ErrInvalid, err)
	}
	if err := atomicfile.WriteFile(path, buf.Bytes()); err != nil {
		return fmt.Errorf("write index %s: %w", path, err)
	}
	return nil
}

// checkShardName accepts only plain file names, so an index cannot point
// outside its directory.
func checkShardName(s string) error {
	switch {
	case s == "" || s == "." || s == "..":
		return fmt.Errorf("invalid shard file name %q", s)
	case strings.ContainsAny(s, `/\`) || filepath.Base(s) != s || filepath.IsAbs(s):
		return fmt.Errorf("shard file name %q is not a plain file name", s)
	case !utf8.ValidString(s):
		return fmt.Errorf("shard file name %q is not valid UTF-8", s)
	}
	return nil
}

// parseIndex parses an index file strictly (no duplicate keys, weight_map
// required, string shard names that are plain file names). Metadata values
// are returned as strings: JSON strings unquoted, anything else as compact
// JSON text ("total_size": 123 gives "123"). Unknown top-level keys are
// ignored. Errors wrap ErrIndex.
func parseIndex(b []byte) (meta, weightMap map[string]string, err error) {
	if !utf8.Valid(b) {
		return nil, nil, fmt.Errorf("%w: not valid UTF-8", ErrIndex)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	_, err = readObject(dec, false, func(key string) error {
		switch key {
		case "metadata":
			m := map[string]string{}
			ok, err := readObject(dec, true, func(k string) error {
				var raw json.RawMessage
				if err := dec.Decode(&raw); err != nil {
					return fmt.Errorf("metadata %q: %v", k, jsonError(err))
				}
				var s string
				if json.Unmarshal(raw, &s) == nil {
					m[k] = s
					return nil
				}
				var c bytes.Buffer
				if err := json.Compact(&c, raw); err != nil {
					return fmt.Errorf("metadata %q: %v", k, jsonError(err))
				}
				m[k] = c.String()
				return nil
			})
			if err != nil {
				return fmt.Errorf("metadata: %v", err)
			}
			if ok {
				meta = m
			}
		case "weight_map":
			weightMap = map[string]string{}
			_, err := readObject(dec, false, func(name string) error {
				shard, err := readString(dec)
				if err != nil {
					return fmt.Errorf("tensor %q: %v", name, err)
				}
				if err := checkShardName(shard); err != nil {
					return fmt.Errorf("tensor %q: %v", name, err)
				}
				weightMap[name] = shard
				return nil
			})
			if err != nil {
				return fmt.Errorf("weight_map: %v", err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return fmt.Errorf("%q: %v", key, jsonError(err))
			}
		}
		return nil
	})
	if err == nil {
		err = readEnd(dec)
	}
	if err == nil && weightMap == nil {
		err = fmt.Errorf("missing weight_map")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrIndex, err)
	}
	return meta, weightMap, nil
}
