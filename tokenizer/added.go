package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// addedToken is an entry of tokenizer.json's added_tokens: a string matched
// in the input before anything else and given its own id.
type addedToken struct {
	id      int32
	content string
	// match is what is searched for: content, or for normalized tokens
	// content after the normalizer (HF's normalized_cache). Decode also
	// gives this form back, as HF does.
	match   string
	special bool
	// singleWord: match only when not inside a word (no \w on either side).
	singleWord bool
	// lstrip/rstrip: the match takes the whitespace on its left/right.
	lstrip, rstrip bool
	// normalized: matched in the normalized text rather than the raw input.
	normalized bool
}

// addedMatcher finds added tokens in text: leftmost-longest, non-overlapping
// (HF builds an Aho-Corasick automaton; a byte trie walked from each
// position finds the same matches).
type addedMatcher struct {
	nodes []trieNode // nodes[0] is the root
	first [256]bool  // bytes some token starts with
}

type trieNode struct {
	next map[byte]int32
	tok  *addedToken // token ending here, if any
}

func newAddedMatcher(toks []*addedToken) *addedMatcher {
	if len(toks) == 0 {
		return nil
	}
	m := &addedMatcher{nodes: []trieNode{{}}}
	for _, t := range toks {
		if t.match == "" {
			continue
		}
		m.first[t.match[0]] = true
		n := int32(0)
		for i := 0; i < len(t.match); i++ {
			c := t.match[i]
			nx, ok := m.nodes[n].next[c]
			if !ok {
				if m.nodes[n].next == nil {
					m.nodes[n].next = make(map[byte]int32)
				}
				nx = int32(len(m.nodes))
				m.nodes[n].next[c] = nx
				m.nodes = append(m.nodes, trieNode{})
			}
			n = nx
		}
		if m.nodes[n].tok == nil {
			m.nodes[n].tok = t
		}
	}
	return m
}

// longest returns the longest token that s starts with.
func (m *addedMatcher) longest(s string) *addedToken {
	var best *addedToken
	n := int32(0)
	for i := 0; i < len(s); i++ {
		nx, ok := m.nodes[n].next[s[i]]
		if !ok {
			break
		}
		n = nx
		if t := m.nodes[n].tok; t != nil {
			best = t
		}
	}
	return best
}

// segment is a byte range of text and the added token it is, if any.
type segment struct {
	start, end int
	tok        *addedToken // nil: plain text
}

// split cuts s at the added tokens it contains (HF's
// AddedVocabulary::find_matches): a match rejected by single_word is skipped
// and the search goes on after it; lstrip/rstrip widen a match over the
// whitespace beside it. The segments tile s; none is empty except for an
// empty s.
func (m *addedMatcher) split(dst []segment, s string) []segment {
	if m == nil || s == "" {
		return append(dst, segment{0, len(s), nil})
	}
	prev := 0 // end of the last accepted match
	for i := 0; i < len(s); {
		var t *addedToken
		if m.first[s[i]] {
			t = m.longest(s[i:])
		}
		if t == nil {
			i++
			continue
		}
		start, stop := i, i+len(t.match)
		i = stop
		if t.singleWord {
			before := start == 0 || !endsWithWordChar(s[:start])
			after := stop == len(s) || !startsWithWordChar(s[stop:])
			if !before || !after {
				continue
			}
		}
		if t.lstrip {
			start = max(len(strings.TrimRightFunc(s[:start], unicode.IsSpace)), prev)
		}
		if t.rstrip {
			stop = len(s) - len(strings.TrimLeftFunc(s[stop:], unicode.IsSpace))
			i = stop
		}
		if prev < start {
			dst = append(dst, segment{prev, start, nil})
		}
		dst = append(dst, segment{start, stop, t})
		prev = stop
	}
	if prev != len(s) {
		dst = append(dst, segment{prev, len(s), nil})
	}
	return dst
}

func endsWithWordChar(s string) bool {
	r, _ := utf8.DecodeLastRuneInString(s)
	return s != "" && isWordChar(r)
}

func startsWithWordChar(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return s != "" && isWordChar(r)
}
