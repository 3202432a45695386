package tokenizer

// GPT-2's byte-to-unicode map, used by byte-level BPE so that every byte is a
// printable character: the 188 printable bytes '!'..'~', 0xA1..0xAC and
// 0xAE..0xFF stand for themselves, and the other 68 (controls, space, 0x7F..
// 0xA0, 0xAD) become U+0100, U+0101, ... in byte order. So ' ' is 'Ġ'
// (U+0120) and '\n' is 'Ċ' (U+010A).
var (
	byteChar [256]rune    // byte -> char
	charByte [0x144]int16 // char -> byte, -1 where the char stands for none
	// byteCharUTF8[b] is byteChar[b] encoded, to build mapped strings fast.
	byteCharUTF8 [256]string
)

func init() {
	for i := range charByte {
		charByte[i] = -1
	}
	n := rune(0)
	for b := range 256 {
		printable := (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
		c := rune(b)
		if !printable {
			c = 256 + n
			n++
		}
		byteChar[b] = c
		charByte[c] = int16(b)
		byteCharUTF8[b] = string(c)
	}
}

// appendByteLevel appends s with each byte replaced by its character.
func appendByteLevel(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		dst = append(dst, byteCharUTF8[s[i]]...)
	}
	return dst
}

// byteLevelBytes appends the bytes that the characters of token stand for.
// If some character stands for no byte, it appends token's own bytes, as HF's
// ByteLevel decoder does (e.g. for added tokens with other characters).
func byteLevelBytes(dst []byte, token string) []byte {
	start := len(dst)
	for _, c := range token {
		if c < 0 || int(c) >= len(charByte) || charByte[c] < 0 {
			return append(dst[:start], token...)
		}
		dst = append(dst, byte(charByte[c]))
	}
	return dst
}
