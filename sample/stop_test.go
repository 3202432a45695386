package sample

import (
	"strings"
	"testing"
)

// stopRef is the naive twin of the Stopper's matching: scanning the text one
// byte at a time, the first position where some stop string ends, cutting
// the longest one that ends there. It returns the start of the cut, or -1.
func stopRef(text string, stops []string) int {
	for end := 1; end <= len(text); end++ {
		at := -1
		for _, s := range stops {
			if s != "" && len(s) <= end && text[end-len(s):end] == s && (at < 0 || end-len(s) < at) {
				at = end - len(s)
			}
		}
		if at >= 0 {
			return at
		}
	}
	return -1
}

type push struct {
	id    int32
	piece string
}

func TestStopper(t *testing.T) {
	cases := []struct {
		name       string
		stops      []string
		eos        []int32
		max        int
		pushes     []push
		wantEmits  []string // one per push, up to and including the one that ends it
		wantFlush  string   // Flush after the last push
		wantReason StopReason
	}{
		{"stop string spans pieces", []string{"</s>"}, nil, 0,
			[]push{{1, "Hello <"}, {2, "/"}, {3, "s> world"}},
			[]string{"Hello ", "", ""}, "", StopString},
		{"stop string at the start", []string{"STOP"}, nil, 0,
			[]push{{1, "STOP"}, {2, "more"}},
			[]string{""}, "", StopString},
		{"stop string inside one piece", []string{"\n\n"}, nil, 0,
			[]push{{1, "one\n"}, {2, "two\n\nthree"}},
			[]string{"one", "\ntwo"}, "", StopString},
		{"never appears: all text emitted, the tail by Flush", []string{"<end>"}, nil, 0,
			[]push{{1, "ab"}, {2, "c<"}, {3, "d"}, {4, "e<en"}},
			[]string{"ab", "c", "<d", "e"}, "<en", StopNone},
		{"no stop strings: nothing held", nil, nil, 0,
			[]push{{1, "a<"}, {2, "b"}},
			[]string{"a<", "b"}, "", StopNone},
		{"overlapping candidates", []string{"abcd", "bce"}, nil, 0,
			[]push{{1, "ab"}, {2, "c"}, {3, "e"}},
			[]string{"", "", "a"}, "", StopString},
		{"earliest end wins", []string{"abc", "b"}, nil, 0,
			[]push{{1, "xabc"}},
			[]string{"xa"}, "", StopString},
		{"same end: the longer is cut", []string{"c", "abc"}, nil, 0,
			[]push{{1, "xa"}, {2, "bc"}},
			[]string{"x", ""}, "", StopString},
		{"self-overlapping stop string", []string{"aab"}, nil, 0,
			[]push{{1, "a"}, {2, "a"}, {3, "a"}, {4, "b"}},
			[]string{"", "", "a", ""}, "", StopString},
		{"held prefix released when the next piece breaks it", []string{"###"}, nil, 0,
			[]push{{1, "x##"}, {2, "y"}},
			[]string{"x", "##y"}, "", StopNone},
		{"UTF-8 stop string split inside a character", []string{"。"}, nil, 0,
			[]push{{1, "好\xe3"}, {2, "\x80\x82后"}},
			[]string{"好", ""}, "", StopString},
		{"EOS: piece dropped, held text emitted", []string{"</s>"}, []int32{2, 0}, 0,
			[]push{{1, "hi <"}, {2, "<eos>"}, {3, "late"}},
			[]string{"hi ", "<"}, "", StopEOS},
		{"MaxTokens flushes held text", []string{"<x"}, nil, 2,
			[]push{{1, "a"}, {2, "b<"}, {3, "c"}},
			[]string{"a", "b<"}, "", StopMaxTokens},
		{"stop string beats MaxTokens on the same token", []string{"<x"}, nil, 2,
			[]push{{1, "a<"}, {2, "xb"}},
			[]string{"a", ""}, "", StopString},
		{"EOS beats MaxTokens", nil, []int32{9}, 1,
			[]push{{9, "</s>"}},
			[]string{""}, "", StopEOS},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := Defaults()
			p.StopStrings, p.EOS, p.MaxTokens = c.stops, c.eos, c.max
			s := NewStopper(p)
			var emits []string
			done := false
			for _, u := range c.pushes {
				emit, d := s.Push(u.id, u.piece)
				if done {
					if emit != "" || !d {
						t.Fatalf("Push after the end = %q, %v; want \"\", true", emit, d)
					}
					continue
				}
				emits = append(emits, emit)
				done = d
			}
			if strings.Join(emits, "|") != strings.Join(c.wantEmits, "|") || len(emits) != len(c.wantEmits) {
				t.Errorf("emits %q, want %q", emits, c.wantEmits)
			}
			if got := s.Flush(); got != c.wantFlush {
				t.Errorf("Flush = %q, want %q", got, c.wantFlush)
			}
			if s.Reason() != c.wantReason || done != (c.wantReason != StopNone) {
				t.Errorf("reason %v (done %v), want %v", s.Reason(), done, c.wantReason)
			}
			// Unless an EOS or the limit ended it, the stop point is the
			// reference one.
			if c.wantReason != StopEOS && c.wantReason != StopMaxTokens {
				var text strings.Builder
				for _, u := range c.pushes {
					text.WriteString(u.piece)
				}
				want := text.String()
				if at := stopRef(want, c.stops); at >= 0 {
					want = want[:at]
				}
				if got := strings.Join(emits, "") + c.wantFlush; got != want {
					t.Errorf("emitted %q, reference %q", got, want)
				}
			}
		})
	}
}

func TestStopReasonString(t *testing.T) {
	for r, want := range map[StopReason]string{StopNone: "none", StopEOS: "eos", StopString: "stop_string", StopMaxTokens: "max_tokens", 9: "StopReason(?)"} {
		if r.String() != want {
			t.Errorf("%d: %q, want %q", r, r.String(), want)
		}
	}
}

// FuzzStopper: any text, any split into pieces, up to three stop strings.
// Never panics; at every step emitted text + held text is the text so far
// (or, once stopped, emitted text is the text before the stop string); the
// client never sees anything past the reference stop point; held text is
// always a proper prefix of a stop string.
func FuzzStopper(f *testing.F) {
	f.Add("Hello </s> world", []byte{3, 2, 1, 5}, "</s>", "", "")
	f.Add("abce", []byte{2, 1, 1}, "abcd", "bce", "")
	f.Add("aaab", []byte{1}, "aab", "", "")
	f.Add("xabc", []byte{4}, "abc", "b", "c")
	f.Add("no stop here<", []byte{5, 7}, "<stop>", "\n\n", "")
	f.Add("好。后", []byte{4, 1}, "。", "", "")
	f.Fuzz(func(t *testing.T, text string, cuts []byte, s1, s2, s3 string) {
		var stops []string
		for _, s := range []string{s1, s2, s3} {
			if s != "" {
				stops = append(stops, s)
			}
		}
		p := Defaults()
		p.StopStrings = stops
		st := NewStopper(p)

		at := stopRef(text, stops)
		want := text
		if at >= 0 {
			want = text[:at]
		}

		var emitted strings.Builder
		pos, done := 0, false
		for i := 0; pos < len(text) && !done; i++ {
			n := len(text) - pos
			if i < len(cuts) {
				n = min(n, int(cuts[i])%8) // zero-length pieces included
			}
			emit, d := st.PushText(text[pos : pos+n])
			pos += n
			done = d
			emitted.WriteString(emit)
			if !strings.HasPrefix(want, emitted.String()) {
				t.Fatalf("after %d bytes emitted %q, beyond the stop point: want %q", pos, emitted.String(), want)
			}
			held := st.Held()
			if done {
				if held != "" {
					t.Fatalf("stopped with held text %q", held)
				}
				break
			}
			if got := emitted.String() + held; got != text[:pos] {
				t.Fatalf("emitted %q + held %q != text so far %q", emitted.String(), held, text[:pos])
			}
			if held != "" {
				ok := false
				for _, s := range stops {
					ok = ok || (len(s) > len(held) && strings.HasPrefix(s, held))
				}
				if !ok {
					t.Fatalf("held %q is not a proper prefix of any of %q", held, stops)
				}
			}
		}
		if done != (at >= 0) {
			t.Fatalf("done = %v, reference stop at %d (text %q, stops %q)", done, at, text, stops)
		}
		emitted.WriteString(st.Flush())
		if emitted.String() != want {
			t.Fatalf("emitted %q, want %q (text %q, stops %q)", emitted.String(), want, text, stops)
		}
	})
}
