package train

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moesys/moesys/tokenizer"
)

// writeTree creates files (path -> content, slash-separated) under a new
// temporary directory and returns it.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// stream returns the whole token stream of c as text.
func stream(c *Corpus) string {
	var b strings.Builder
	for _, id := range slices.Concat(c.Train, c.Val) {
		b.WriteByte(byte(id))
	}
	return b.String()
}

func TestLoadCorpus(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"a.txt":          "alpha",
		"b.go":           "package b",
		"empty.txt":      "",
		"sub/c.txt":      "gamma",
		"sub/d.go":       "package d",
		".git/config":    "hidden dir",
		".hidden.txt":    "hidden file",
		"z/.env/e.txt":   "hidden nested dir",
		"z/vendor/v.txt": "vendor is kept in user dirs",
	})
	file := filepath.Join(dir, "a.txt")
	tests := []struct {
		name      string
		spec      DataSpec
		stdin     string
		want      string
		wantFiles int
		source    string // substring of Corpus.Source
		capped    bool   // Source says the cap cut the text
	}{
		{
			name: "file", spec: DataSpec{Path: file},
			want: "alpha", wantFiles: 1, source: "file " + file,
		},
		{
			name: "file ignores glob", spec: DataSpec{Path: file, Glob: "*.go"},
			want: "alpha", wantFiles: 1,
		},
		{
			name: "directory, all files", spec: DataSpec{Path: dir},
			want:      "alpha\npackage b\ngamma\npackage d\nvendor is kept in user dirs",
			wantFiles: 5, source: `files matching "*" in ` + dir,
		},
		{
			name: "directory with glob", spec: DataSpec{Path: dir, Glob: "*.go"},
			want: "package b\npackage d", wantFiles: 2, source: "(2 files, 19 B)",
		},
		{
			name: "stdin", spec: DataSpec{Path: "-"}, stdin: "from stdin\n",
			want: "from stdin\n", wantFiles: 1, source: "stdin (11 B)",
		},
		{
			name: "MaxBytes truncates a file", spec: DataSpec{Path: file, MaxBytes: 3},
			want: "alp", wantFiles: 1, capped: true,
		},
		{
			name: "MaxBytes exact fit is not capped", spec: DataSpec{Path: file, MaxBytes: 5},
			want: "alpha", wantFiles: 1,
		},
		{
			name: "MaxBytes truncates the last file of a walk", spec: DataSpec{Path: dir, MaxBytes: 13},
			want: "alpha\npackage", wantFiles: 2, source: "(2 files, 13 B, capped)", capped: true,
		},
		{
			name: "MaxBytes stops before a lone separator", spec: DataSpec{Path: dir, MaxBytes: 6},
			want: "alpha", wantFiles: 1, capped: true,
		},
		{
			name: "MaxBytes truncates stdin", spec: DataSpec{Path: "-", MaxBytes: 4}, stdin: "from stdin",
			want: "from", wantFiles: 1, capped: true,
		},
		{
			name: "stdin across read chunks", spec: DataSpec{Path: "-"}, stdin: strings.Repeat("x", 3*readChunk+7),
			want: strings.Repeat("x", 3*readChunk+7), wantFiles: 1, source: "stdin (768.0 KiB)",
		},
		{
			name: "stdin cut inside a read chunk", spec: DataSpec{Path: "-", MaxBytes: readChunk + 3}, stdin: strings.Repeat("y", 2*readChunk),
			want: strings.Repeat("y", readChunk+3), wantFiles: 1, capped: true,
		},
		{
			name: "negative MaxBytes means no cap", spec: DataSpec{Path: file, MaxBytes: -1},
			want: "alpha", wantFiles: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadCorpus(context.Background(), tt.spec, strings.NewReader(tt.stdin))
			if err != nil {
				t.Fatal(err)
			}
			if got := stream(c); got != tt.want {
				t.Errorf("stream = %q, want %q", got, tt.want)
			}
			if c.Files != tt.wantFiles {
				t.Errorf("Files = %d, want %d", c.Files, tt.wantFiles)
			}
			if !strings.Contains(c.Source, tt.source) {
				t.Errorf("Source = %q, want it to contain %q", c.Source, tt.source)
			}
			if got := strings.Contains(c.Source, "capped"); got != tt.capped {
				t.Errorf("Source = %q: capped %v, want %v", c.Source, got, tt.capped)
			}
		})
	}
}

func TestLoadCorpusDefault(t *testing.T) {
	const maxBytes = 1 << 20
	spec := DataSpec{MaxBytes: maxBytes}
	a, err := LoadCorpus(context.Background(), spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(a.Train) + len(a.Val); n != maxBytes {
		t.Errorf("%d tokens, want the cap %d (the standard library is larger)", n, maxBytes)
	}
	if a.Files < 2 {
		t.Errorf("Files = %d, want several", a.Files)
	}
	if !strings.HasPrefix(a.Source, "Go standard library sources in ") || !strings.Contains(a.Source, "1.0 MiB, capped") {
		t.Errorf("Source = %q", a.Source)
	}
	for i, id := range slices.Concat(a.Train, a.Val) {
		if id < 0 || id >= tokenizer.ByteVocab {
			t.Fatalf("token %d = %d outside [0, %d)", i, id, tokenizer.ByteVocab)
		}
	}
	if !strings.Contains(stream(a), "package ") {
		t.Error("default corpus holds no Go package clause")
	}
	b, err := LoadCorpus(context.Background(), spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Train, b.Train) || !slices.Equal(a.Val, b.Val) || a.Source != b.Source || a.Files != b.Files {
		t.Error("two loads of the default corpus differ")
	}
}

func TestGoEnvGOROOT(t *testing.T) {
	root, err := goEnvGOROOT(context.Background())
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	if !isDir(filepath.Join(root, "src")) {
		t.Errorf("go env GOROOT = %q has no src directory", root)
	}
}

func TestValFractionSplit(t *testing.T) {
	text := strings.Repeat("0123456789", 100) // 1000 tokens
	tests := []struct {
		name    string
		frac    float64
		wantVal int
	}{
		{"default", 0, 50},
		{"tenth", 0.1, 100},
		{"half", 0.5, 500},
		{"rounds", 0.0015, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadCorpus(context.Background(), DataSpec{Path: "-", ValFraction: tt.frac}, strings.NewReader(text))
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Val) != tt.wantVal || len(c.Train) != len(text)-tt.wantVal {
				t.Errorf("split %d/%d, want %d/%d", len(c.Train), len(c.Val), len(text)-tt.wantVal, tt.wantVal)
			}
			if stream(c) != text {
				t.Error("Train then Val is not the stream")
			}
			// Val is the end of the stream and appending to Train leaves it alone.
			val := slices.Clone(c.Val)
			_ = append(c.Train, -1, -1, -1)
			if !slices.Equal(c.Val, val) {
				t.Error("append to Train changed Val")
			}
		})
	}
}

func TestLoadCorpusErrors(t *testing.T) {
	dir := writeTree(t, map[string]string{"a.txt": "alpha", "empty.txt": "", ".hidden": "x"})
	missing := filepath.Join(dir, "no-such-file")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		spec    DataSpec
		stdin   io.Reader
		is      error  // errors.Is target
		mention string // substring of the message
	}{
		{name: "ValFraction negative", spec: DataSpec{Path: dir, ValFraction: -0.1}, is: ErrData, mention: "ValFraction"},
		{name: "ValFraction above half", spec: DataSpec{Path: dir, ValFraction: 0.6}, is: ErrData, mention: "0.6"},
		{name: "ValFraction NaN", spec: DataSpec{Path: dir, ValFraction: math.NaN()}, is: ErrData, mention: "NaN"},
		{name: "missing path", spec: DataSpec{Path: missing}, is: fs.ErrNotExist, mention: "train: data " + missing},
		{name: "empty file", spec: DataSpec{Path: filepath.Join(dir, "empty.txt")}, is: ErrData, mention: "empty"},
		{name: "glob matches nothing", spec: DataSpec{Path: dir, Glob: "*.go"}, is: ErrData, mention: dir},
		{name: "bad glob", spec: DataSpec{Path: dir, Glob: "["}, is: ErrData, mention: `"["`},
		{name: "empty stdin", spec: DataSpec{Path: "-"}, stdin: strings.NewReader(""), is: ErrData, mention: "stdin"},
		{name: "stdin without reader", spec: DataSpec{Path: "-"}, is: ErrData, mention: "no reader"},
		{name: "canceled walk", ctx: canceled, spec: DataSpec{Path: dir}, is: context.Canceled, mention: dir},
		{name: "canceled stdin", ctx: canceled, spec: DataSpec{Path: "-"}, stdin: strings.NewReader("abc"), is: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			_, err := LoadCorpus(ctx, tt.spec, tt.stdin)
			if !errors.Is(err, tt.is) {
				t.Fatalf("err = %v, want errors.Is %v", err, tt.is)
			}
			if !strings.HasPrefix(err.Error(), "train: ") || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("err = %q, want prefix \"train: \" and %q", err, tt.mention)
			}
		})
	}
}

func TestCorpusCheck(t *testing.T) {
	c := &Corpus{Train: make([]int32, 10), Val: make([]int32, 5), Source: "test corpus"}
	tests := []struct {
		name    string
		T       int
		mention string // "" = no error
	}{
		{"fits", 4, ""},
		{"val too small", 5, "validation split has 5 tokens, need at least 6"},
		{"train too small", 10, "training split has 10 tokens, need at least 11"},
		{"zero T", 0, "T=0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Check(tt.T)
			if tt.mention == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrData) || !strings.Contains(err.Error(), tt.mention) {
				t.Fatalf("err = %v, want ErrData mentioning %q", err, tt.mention)
			}
			if tt.T > 0 && !strings.Contains(err.Error(), "test corpus") {
				t.Errorf("err = %v, want it to name the source", err)
			}
		})
	}
}

// ramp returns the tokens 0, 1, ..., n-1: a token's value is its position.
func ramp(n int) []int32 {
	s := make([]int32, n)
	for i := range s {
		s[i] = int32(i)
	}
	return s
}

func TestBatcher(t *testing.T) {
	const B, T, seed = 8, 16, 42
	tokens := ramp(1000)
	b, err := NewBatcher(tokens, B, T, seed)
	if err != nil {
		t.Fatal(err)
	}
	batch := func(b *Batcher, step int) (in, tg []int32) {
		in, tg = make([]int32, B*T), make([]int32, B*T)
		b.Batch(step, in, tg)
		return in, tg
	}

	in5, tg5 := batch(b, 5)
	batch(b, 6) // an earlier call must not matter
	again, _ := batch(b, 5)
	if !slices.Equal(in5, again) {
		t.Error("step 5 differs between calls")
	}
	fresh, _ := NewBatcher(tokens, B, T, seed)
	if in, _ := batch(fresh, 5); !slices.Equal(in5, in) {
		t.Error("step 5 differs between Batchers with the same seed")
	}
	if in6, _ := batch(b, 6); slices.Equal(in5, in6) {
		t.Error("steps 5 and 6 give the same batch")
	}
	other, _ := NewBatcher(tokens, B, T, seed+1)
	if in, _ := batch(other, 5); slices.Equal(in5, in) {
		t.Error("seeds 42 and 43 give the same batch")
	}

	// Every row is a window inside tokens, targets shifted by one.
	for step := range 50 {
		in, tg := batch(b, step)
		for r := range B {
			row, trow := in[r*T:(r+1)*T], tg[r*T:(r+1)*T]
			s := int(row[0])
			if s < 0 || s+T+1 > len(tokens) {
				t.Fatalf("step %d row %d: window [%d, %d] outside %d tokens", step, r, s, s+T, len(tokens))
			}
			if !slices.Equal(row, tokens[s:s+T]) || !slices.Equal(trow, tokens[s+1:s+T+1]) {
				t.Fatalf("step %d row %d: not a window at %d with shifted targets", step, r, s)
			}
		}
	}
	if !slices.Equal(tg5[:T-1], in5[1:T]) {
		t.Error("targets are not inputs shifted by one")
	}

	// The smallest stream has one start: every row is the whole stream.
	tiny, err := NewBatcher(ramp(T+1), B, T, seed)
	if err != nil {
		t.Fatal(err)
	}
	in, tg := batch(tiny, 3)
	for r := range B {
		if !slices.Equal(in[r*T:(r+1)*T], ramp(T)) || tg[r*T] != 1 || tg[(r+1)*T-1] != T {
			t.Fatalf("row %d of the one-window stream is wrong", r)
		}
	}
}

func TestBatcherPanicsOnWrongLength(t *testing.T) {
	b, err := NewBatcher(ramp(100), 2, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(r.(string), "B*T") {
			t.Errorf("recover() = %v, want a panic naming B*T", r)
		}
	}()
	b.Batch(0, make([]int32, 7), make([]int32, 8))
}

func TestNewBatcherErrors(t *testing.T) {
	tests := []struct {
		name      string
		n, B, T   int
		mentioned string
	}{
		{"zero B", 100, 0, 4, "B=0"},
		{"zero T", 100, 2, 0, "T=0"},
		{"too few tokens", 4, 2, 4, "need at least 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewBatcher(ramp(tt.n), tt.B, tt.T, 1)
			if !errors.Is(err, ErrData) || !strings.Contains(err.Error(), tt.mentioned) {
				t.Fatalf("err = %v, want ErrData mentioning %q", err, tt.mentioned)
			}
		})
	}
}

func TestValBatches(t *testing.T) {
	tests := []struct {
		name       string
		n, B, T    int
		maxBatches int
		wantRows   []int // rows per batch
	}{
		{"exact", 4*3*5 + 1, 3, 5, 0, []int{3, 3, 3, 3}},
		{"partial last", 7*5 + 1, 3, 5, 0, []int{3, 3, 1}},
		{"leftover tokens dropped", 7*5 + 5, 3, 5, 0, []int{3, 3, 1}},
		{"one window", 6, 3, 5, 0, []int{1}},
		{"maxBatches", 7*5 + 1, 3, 5, 2, []int{3, 3}},
		{"maxBatches above count", 7*5 + 1, 3, 5, 10, []int{3, 3, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tokens := ramp(tt.n)
			got, err := ValBatches(tokens, tt.B, tt.T, tt.maxBatches)
			if err != nil {
				t.Fatal(err)
			}
			rows := make([]int, len(got))
			next := 0 // position where the next window must start
			for i, vb := range got {
				rows[i] = vb.Rows
				if len(vb.Inputs) != vb.Rows*tt.T || len(vb.Targets) != vb.Rows*tt.T {
					t.Fatalf("batch %d: %d inputs, %d targets for %d rows of T=%d", i, len(vb.Inputs), len(vb.Targets), vb.Rows, tt.T)
				}
				if !slices.Equal(vb.Inputs, tokens[next:next+vb.Rows*tt.T]) ||
					!slices.Equal(vb.Targets, tokens[next+1:next+vb.Rows*tt.T+1]) {
					t.Fatalf("batch %d is not the consecutive windows from %d", i, next)
				}
				next += vb.Rows * tt.T
			}
			if !slices.Equal(rows, tt.wantRows) {
				t.Errorf("rows = %v, want %v", rows, tt.wantRows)
			}
			again, _ := ValBatches(tokens, tt.B, tt.T, tt.maxBatches)
			for i := range again {
				if !slices.Equal(again[i].Inputs, got[i].Inputs) {
					t.Fatalf("batch %d differs between calls", i)
				}
			}
		})
	}
}

func TestValBatchesErrors(t *testing.T) {
	tests := []struct {
		name    string
		n, B, T int
	}{
		{"empty", 0, 2, 4},
		{"shorter than a window", 4, 2, 4},
		{"zero B", 100, 0, 4},
		{"zero T", 100, 2, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ValBatches(ramp(tt.n), tt.B, tt.T, 0); !errors.Is(err, ErrData) {
				t.Fatalf("err = %v, want ErrData", err)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	counts := []struct {
		n    int
		want string
	}{{0, "0"}, {999, "999"}, {1000, "1,000"}, {3912, "3,912"}, {1234567, "1,234,567"}}
	for _, tt := range counts {
		if got := formatCount(tt.n); got != tt.want {
			t.Errorf("formatCount(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
	sizes := []struct {
		n    int64
		want string
	}{{512, "512 B"}, {1536, "1.5 KiB"}, {64 << 20, "64.0 MiB"}, {3 << 30, "3.0 GiB"}}
	for _, tt := range sizes {
		if got := formatBytes(tt.n); got != tt.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
