package sample

import (
	"bytes"
	"slices"
)

// StopReason says why a Stopper ended the generation.
type StopReason uint8

const (
	StopNone      StopReason = iota // still running
	StopEOS                         // an EOS token id was generated
	StopString                      // a stop string appeared in the text
	StopMaxTokens                   // MaxTokens tokens were generated
)

// String returns "none", "eos", "stop_string" or "max_tokens".
func (r StopReason) String() string {
	switch r {
	case StopNone:
		return "none"
	case StopEOS:
		return "eos"
	case StopString:
		return "stop_string"
	case StopMaxTokens:
		return "max_tokens"
	}
	return "StopReason(?)"
}

// Stopper decides when a streamed generation ends (EOS id, stop string,
// MaxTokens) and which text a streaming client may see so far.
//
// Stop strings are matched on the bytes of the text, across piece
// boundaries. The generation stops at the earliest point of the text where
// some stop string ends; if several end there, the longest one is cut. That
// point depends only on the text, not on how it was split into pieces. Text
// that could be the start of a stop string (the longest suffix that is a
// proper prefix of one) is held back until the next piece settles it, so
// the client never sees part of a stop string; everything before the stop
// string is emitted, the stop string and anything after it never are.
//
// Invariant: the concatenation of every emitted string, followed by Held,
// equals the text pushed so far, or, once a stop string is found, the text
// before it.
//
// A Stopper serves one stream and is not safe for concurrent use.
type Stopper struct {
	stops [][]byte
	eos   []int32
	max   int // MaxTokens, 0 = none

	n      int    // tokens pushed
	held   []byte // held-back text: a proper prefix of some stop string, or empty
	reason StopReason
}

// NewStopper returns a Stopper for p's StopStrings, EOS and MaxTokens; it
// copies what it keeps. p should have passed Validate; empty stop strings
// are ignored and a negative MaxTokens means no limit.
func NewStopper(p Params) *Stopper {
	s := &Stopper{eos: slices.Clone(p.EOS), max: max(p.MaxTokens, 0)}
	for _, t := range p.StopStrings {
		if t != "" {
			s.stops = append(s.stops, []byte(t))
		}
	}
	return s
}

// IsEOS reports whether id is one of the EOS ids.
func (s *Stopper) IsEOS(id int32) bool { return slices.Contains(s.eos, id) }

// Push takes the next generated token id and its decoded text piece and
// returns the text the client may now see and whether the generation is
// over. An EOS id ends it: its piece is dropped and the held text emitted.
// Otherwise the piece goes through PushText; if that does not stop and this
// was token number MaxTokens, the held text is emitted too and the
// generation ends. After the end, Push returns "", true.
func (s *Stopper) Push(id int32, piece string) (emit string, done bool) {
	if s.reason != StopNone {
		return "", true
	}
	s.n++
	if s.IsEOS(id) {
		s.reason = StopEOS
		return s.Flush(), true
	}
	emit, done = s.PushText(piece)
	if done {
		return emit, true
	}
	if s.max > 0 && s.n >= s.max {
		s.reason = StopMaxTokens
		return emit + s.Flush(), true
	}
	return emit, false
}

// PushText is Push for text alone (no id, no token count): it appends piece
// to the stream and returns the text that can no longer be part of a stop
// string, and whether a stop string has now appeared (then emit ends just
// before it and the Stopper is done).
func (s *Stopper) PushText(piece string) (emit string, done bool) {
	if s.reason != StopNone {
		return "", true
	}
	buf := append(s.held, piece...)

	// No stop string lies inside the old held text (it would have been
	// found already), and any occurrence that starts before it would have
	// needed a longer held suffix; so searching held+piece finds every
	// occurrence ending in piece. For a given stop string the first
	// occurrence ends first.
	at, end := -1, 0
	for _, t := range s.stops {
		i := bytes.Index(buf, t)
		if i < 0 {
			continue
		}
		if e := i + len(t); at < 0 || e < end || (e == end && i < at) {
			at, end = i, e
		}
	}
	if at >= 0 {
		emit = string(buf[:at])
		s.held = buf[:0]
		s.reason = StopString
		return emit, true
	}

	h := s.holdLen(buf)
	emit = string(buf[:len(buf)-h])
	s.held = buf[:copy(buf, buf[len(buf)-h:])]
	return emit, false
}

// holdLen returns the length of the longest suffix of buf that is a proper
// prefix of some stop string.
func (s *Stopper) holdLen(buf []byte) int {
	longest := 0
	for _, t := range s.stops {
		longest = max(longest, len(t)-1)
	}
	for h := min(longest, len(buf)); h > 0; h-- {
		tail := buf[len(buf)-h:]
		for _, t := range s.stops {
			if len(t) > h && bytes.HasPrefix(t, tail) {
				return h
			}
		}
	}
	return 0
}

// Flush returns the held-back text and forgets it. Call it when the stream
// ends for a reason the Stopper does not see (the client went away, the
// context filled up); Push calls it itself on EOS and MaxTokens.
func (s *Stopper) Flush() string {
	t := string(s.held)
	s.held = s.held[:0]
	return t
}

// Held returns a copy of the text currently held back.
func (s *Stopper) Held() string { return string(s.held) }

// Reason returns why the generation ended, StopNone while it runs.
func (s *Stopper) Reason() StopReason { return s.reason }

// Tokens returns how many tokens Push has taken (EOS included).
func (s *Stopper) Tokens() int { return s.n }
