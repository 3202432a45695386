package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
)

// postProcessor is what a tokenizer.json post_processor does to a single
// sequence: ids before and after the text. Pair templates, type ids and
// offset trimming do not matter for generation and are not kept.
type postProcessor struct {
	prefix, suffix []int32
}

// wrap returns p applied around the result of inner (a Sequence runs its
// processors in order, each wrapping what the previous produced).
func (p postProcessor) wrap(inner postProcessor) postProcessor {
	return postProcessor{
		prefix: append(append([]int32(nil), p.prefix...), inner.prefix...),
		suffix: append(append([]int32(nil), inner.suffix...), p.suffix...),
	}
}

type postProcessorJSON struct {
	Type string `json:"type"`
	// TemplateProcessing
	Single        []json.RawMessage `json:"single"`
	SpecialTokens map[string]struct {
		ID  string  `json:"id"`
		IDs []int64 `json:"ids"`
	} `json:"special_tokens"`
	// RobertaProcessing, BertProcessing: [token, id]
	Cls []json.RawMessage `json:"cls"`
	Sep []json.RawMessage `json:"sep"`
	// Sequence
	Processors []json.RawMessage `json:"processors"`
}

// templatePiece is one element of a TemplateProcessing "single" list:
// {"SpecialToken": {"id": "<s>", "type_id": 0}} or {"Sequence": {"id": "A",
// "type_id": 0}}, or the string forms "<s>", "$A", "$B:1".
type templatePiece struct {
	SpecialToken *struct {
		ID string `json:"id"`
	} `json:"SpecialToken"`
	Sequence *struct {
		ID string `json:"id"`
	} `json:"Sequence"`
}

func parsePostProcessor(raw json.RawMessage, depth int) (postProcessor, error) {
	var p postProcessor
	if isNull(raw) {
		return p, nil
	}
	if depth > maxDepth {
		return p, fmt.Errorf("%w: post_processor nested deeper than %d", ErrFormat, maxDepth)
	}
	var j postProcessorJSON
	if err := json.Unmarshal(raw, &j); err != nil {
		return p, fmt.Errorf("%w: post_processor: %v", ErrFormat, err)
	}
	switch j.Type {
	case "ByteLevel":
		return p, nil
	case "TemplateProcessing":
		seenA := false
		for i, rp := range j.Single {
			special, isSeq, err := parseTemplatePiece(rp)
			if err != nil {
				return p, fmt.Errorf("%w: post_processor single[%d]: %v", ErrFormat, i, err)
			}
			if isSeq {
				if special != "A" || seenA {
					return p, fmt.Errorf("%w: post_processor: single template uses sequence %q", ErrUnsupported, special)
				}
				seenA = true
				continue
			}
			st, ok := j.SpecialTokens[special]
			if !ok {
				return p, fmt.Errorf("%w: post_processor: special token %q not in special_tokens", ErrFormat, special)
			}
			for _, id := range st.IDs {
				if id < 0 || id >= maxID {
					return p, fmt.Errorf("%w: post_processor: special token %q id %d out of range", ErrFormat, special, id)
				}
				if seenA {
					p.suffix = append(p.suffix, int32(id))
				} else {
					p.prefix = append(p.prefix, int32(id))
				}
			}
		}
		if !seenA && len(j.Single) > 0 {
			return p, fmt.Errorf("%w: post_processor: single template without $A", ErrFormat)
		}
		return p, nil
	case "RobertaProcessing", "BertProcessing":
		cls, err := parseTokenIDPair(j.Cls)
		if err != nil {
			return p, fmt.Errorf("%w: post_processor cls: %v", ErrFormat, err)
		}
		sep, err := parseTokenIDPair(j.Sep)
		if err != nil {
			return p, fmt.Errorf("%w: post_processor sep: %v", ErrFormat, err)
		}
		return postProcessor{prefix: []int32{cls}, suffix: []int32{sep}}, nil
	case "Sequence":
		for i, sub := range j.Processors {
			q, err := parsePostProcessor(sub, depth+1)
			if err != nil {
				return p, fmt.Errorf("processors[%d]: %w", i, err)
			}
			p = q.wrap(p)
		}
		return p, nil
	case "":
		return p, fmt.Errorf("%w: post_processor without type", ErrFormat)
	}
	return p, fmt.Errorf("%w: post_processor type %q", ErrUnsupported, j.Type)
}

// parseTemplatePiece returns a special token's name, or a sequence's id
// ("A", "B") with isSeq set.
func parseTemplatePiece(raw json.RawMessage) (name string, isSeq bool, err error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		s, _, _ = strings.Cut(s, ":") // drop a type id
		if rest, ok := strings.CutPrefix(s, "$"); ok {
			switch rest {
			case "", "A", "a":
				return "A", true, nil
			case "B", "b":
				return "B", true, nil
			}
			return "A", true, nil // "$1": sequence A with type id 1
		}
		return s, false, nil
	}
	var tp templatePiece
	if err := json.Unmarshal(raw, &tp); err != nil {
		return "", false, err
	}
	switch {
	case tp.SpecialToken != nil:
		return tp.SpecialToken.ID, false, nil
	case tp.Sequence != nil:
		return tp.Sequence.ID, true, nil
	}
	return "", false, fmt.Errorf("piece is neither SpecialToken nor Sequence")
}

// parseTokenIDPair reads ["</s>", 2] and returns the id.
func parseTokenIDPair(raw []json.RawMessage) (int32, error) {
	if len(raw) != 2 {
		return 0, fmt.Errorf("want [token, id], got %d elements", len(raw))
	}
	var id int64
	if err := json.Unmarshal(raw[1], &id); err != nil {
		return 0, err
	}
	if id < 0 || id >= maxID {
		return 0, fmt.Errorf("id %d out of range", id)
	}
	return int32(id), nil
}
