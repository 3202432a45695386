package main

import "testing"

func TestSizeLabel(t *testing.T) {
	for n, want := range map[int]string{4 << 10: "4KiB", 64 << 20: "64MiB", 1 << 20: "1MiB", 1536: "1536B", 3 << 10: "3KiB", 0: "0B"} {
		if got := sizeLabel(n); got != want {
			t.Errorf("sizeLabel(%d) = %q, want %q", n, got, want)
		}
	}
}
