package safetensors

import (
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkOpen measures opening (mapping and validating the header of) the
// mixtral_f32 fixture and closing it.
func BenchmarkOpen(b *testing.B) {
	path := filepath.Join(fixtures, "mixtral_f32", ModelFile)
	if _, err := os.Stat(path); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		f, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkParseHeader measures header validation alone.
func BenchmarkParseHeader(b *testing.B) {
	data, err := os.ReadFile(filepath.Join(fixtures, "mixtral_f32", ModelFile))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseHeader(data, int64(len(data))); err != nil {
			b.Fatal(err)
		}
	}
}
