package tokenizer

import (
	"errors"
	"slices"
	"testing"
)

func TestByte(t *testing.T) {
	plain := &Byte{}
	chat, err := NewByte(ByteConfig{Specials: []string{"<bos>", "<eos>", "<eos2>"}, BOS: "<bos>", EOS: []string{"<eos>", "<eos2>"}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		tok     *Byte
		text    string
		ids     []int32
		decoded string // "" means text
	}{
		{"ascii", plain, "hi", ints('h', 'i'), ""},
		{"utf-8 bytes", plain, "é🙂", ints(0xC3, 0xA9, 0xF0, 0x9F, 0x99, 0x82), ""},
		{"no specials unless configured", plain, "<eos>", ints('<', 'e', 'o', 's', '>'), ""},
		// Invalid input encodes losslessly; decoding repairs it.
		{"invalid UTF-8", plain, "a\xffb", ints('a', 0xFF, 'b'), "a\uFFFDb"},
		{"special in the middle", chat, "a<eos>b", ints('a', 257, 'b'), ""},
		// Longest match: "<eos2>" rather than "<eos>" then "2>".
		{"longest special", chat, "<eos2>", ints(258), ""},
		{"empty", chat, "", nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.tok.Encode(c.text); !slices.Equal(got, c.ids) {
				t.Errorf("Encode(%q) = %v, want %v", c.text, got, c.ids)
			}
			want := c.decoded
			if want == "" {
				want = c.text
			}
			if got := c.tok.Decode(c.ids); got != want {
				t.Errorf("Decode(%v) = %q, want %q", c.ids, got, want)
			}
		})
	}

	if plain.VocabSize() != 256 || chat.VocabSize() != 259 {
		t.Errorf("VocabSize %d, %d", plain.VocabSize(), chat.VocabSize())
	}
	if _, ok := plain.BOS(); ok || plain.EOS() != nil || plain.IsSpecial(255) {
		t.Error("plain Byte has specials")
	}
	if id, ok := chat.BOS(); !ok || id != 256 {
		t.Errorf("BOS = %d, %v", id, ok)
	}
	if got := chat.EOS(); !slices.Equal(got, ints(257, 258)) {
		t.Errorf("EOS = %v", got)
	}
	if got := chat.EncodeSpecial("hi"); !slices.Equal(got, ints(256, 'h', 'i')) {
		t.Errorf("EncodeSpecial = %v", got)
	}
	if !chat.IsSpecial(256) || chat.IsSpecial(259) || chat.IsSpecial(65) {
		t.Error("IsSpecial wrong")
	}
	if got := chat.Decode(ints(256, -1, 300, 'x')); got != "<bos>x" {
		t.Errorf("Decode with unknown ids = %q", got)
	}
}

func TestNewByteErrors(t *testing.T) {
	for name, c := range map[string]ByteConfig{
		"empty special":     {Specials: []string{""}},
		"duplicate special": {Specials: []string{"<a>", "<a>"}},
		"unknown BOS":       {Specials: []string{"<a>"}, BOS: "<b>"},
		"unknown EOS":       {EOS: []string{"<b>"}},
	} {
		if _, err := NewByte(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", name, err)
		}
	}
}
