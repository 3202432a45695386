package main

import (
	"strings"
	"testing"
)

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"1048576", 1 << 20},
		{"512B", 512},
		{"4K", 4 << 10},
		{"4 KiB", 4 << 10},
		{"512MiB", 512 << 20},
		{"512mi", 512 << 20},
		{"2GiB", 2 << 30},
		{"2gib", 2 << 30},
		{"1.5G", 3 << 29},
		{"0.5T", 1 << 39},
		{"3GB", 3e9},
		{"1.5kb", 1500},
		{"0.3K", 307}, // 307.2 rounded down
		{" 7 MB ", 7e6},
		{"9223372036854775807", 1<<63 - 1},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseBytes(tc.in)
			if err != nil || got != tc.want {
				t.Fatalf("parseBytes(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseBytesErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "want a number"},
		{"GiB", "want a number"},
		{"-1", "want a number"},
		{"-2GiB", "want a number"},
		{"NaN", "want a number"},
		{"Inf", "want a number"},
		{"2XB", `unknown unit "XB"`},
		{"2 gigs", "unknown unit"},
		{"1e9", "unknown unit"},
		{"1.5", "whole number"},
		{"1.5B", "whole number"},
		{"9223372036854775808", "whole number"},
		{"8388608TiB", "more than 2^63"},
		{"1.2.3G", "bad number"},
		{".G", "bad number"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseBytes(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("parseBytes(%q) = %d, %v; want an error with %q", tc.in, got, err, tc.want)
			}
		})
	}
}

// FuzzParseBytes: any input gives a non-negative size or an error, never
// a panic, and a size printed back as plain bytes parses to itself.
func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"2GiB", "1.5G", "512 MiB", "3GB", "1048576", "-1", "1e9", ".", "9999999999T"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseBytes(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("parseBytes(%q) = %d < 0", s, n)
		}
		b := byteSize(n)
		if m, err := parseBytes(b.String()); err != nil || m != n {
			t.Fatalf("round trip of %d: %d, %v", n, m, err)
		}
	})
}
