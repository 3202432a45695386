package tokenizer

import (
	"testing"
	"unicode/utf8"
)

func TestValidUTF8(t *testing.T) {
	// Each maximal invalid subsequence is one U+FFFD (Rust's
	// from_utf8_lossy and the Unicode recommendation).
	const r = "\uFFFD"
	cases := []struct{ name, in, want string }{
		{"valid", "héllo 世界 🙂", "héllo 世界 🙂"},
		{"empty", "", ""},
		{"stray continuation", "a\x80b", "a" + r + "b"},
		{"two bad bytes", "\xff\xfe", r + r},
		{"truncated 3-byte", "\xe4\xb8", r},
		{"truncated 4-byte then ASCII", "\xf0\x9f\x99a", r + "a"},
		{"overlong", "\xc0\xaf", r + r},
		{"surrogate", "\xed\xa0\x80", r + r + r},
		{"too large", "\xf4\x90\x80\x80", r + r + r + r},
		{"lead then lead", "\xe4\xe4\xb8\x96", r + "世"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := validUTF8(c.in)
			if got != c.want {
				t.Errorf("validUTF8(%q) = %q, want %q", c.in, got, c.want)
			}
			if !utf8.ValidString(got) {
				t.Errorf("result %q is not valid", got)
			}
		})
	}
}
