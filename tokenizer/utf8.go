package tokenizer

import "unicode/utf8"

// replacement is U+FFFD, what invalid UTF-8 becomes.
const replacement = "\uFFFD"

// validUTF8 returns s with every maximal invalid subsequence replaced by one
// U+FFFD, as Rust's String::from_utf8_lossy does (and so HF tokenizers'
// decoders): a truncated 3-byte sequence is one U+FFFD, two stray 0xFF bytes
// are two. Valid input is returned as is, without copying.
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return string(appendValidUTF8(make([]byte, 0, len(s)+8), s))
}

// appendValidUTF8 appends s to dst, repaired as validUTF8 describes.
func appendValidUTF8(dst []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			dst = append(dst, c)
			i++
			continue
		}
		// Length of the sequence c starts and the range its second byte must
		// lie in (Unicode Table 3-7, well-formed byte sequences).
		n, lo, hi := 0, byte(0x80), byte(0xBF)
		switch {
		case c >= 0xC2 && c <= 0xDF:
			n = 2
		case c == 0xE0:
			n, lo = 3, 0xA0
		case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
			n = 3
		case c == 0xED:
			n, hi = 3, 0x9F
		case c == 0xF0:
			n, lo = 4, 0x90
		case c >= 0xF1 && c <= 0xF3:
			n = 4
		case c == 0xF4:
			n, hi = 4, 0x8F
		default: // continuation byte or a byte that never starts a character
			dst = append(dst, replacement...)
			i++
			continue
		}
		j := i + 1
		if j < len(s) && s[j] >= lo && s[j] <= hi {
			j++
			for j < i+n && j < len(s) && s[j] >= 0x80 && s[j] <= 0xBF {
				j++
			}
		}
		if j == i+n {
			dst = append(dst, s[i:j]...)
		} else {
			dst = append(dst, replacement...)
		}
		i = j
	}
	return dst
}
