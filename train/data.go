package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// Data defaults and limits.
const (
	// DefaultCorpusMaxBytes caps the default corpus (the Go standard library
	// sources: 62.4 MiB in 5,609 files with Go 1.26) when DataSpec.MaxBytes
	// is 0, so a larger future toolchain cannot grow it unnoticed: 64 Mi byte
	// tokens are plenty for the small models trained on one machine, load in
	// about a second, and keep the int32 token stream at 256 MiB of RAM.
	DefaultCorpusMaxBytes int64 = 64 << 20
	// DefaultValFraction is the share of the token stream held out for
	// validation when DataSpec.ValFraction is 0.
	DefaultValFraction = 0.05
	// MaxValFraction bounds DataSpec.ValFraction: holding out more than half
	// would train on less text than it evaluates on.
	MaxValFraction = 0.5
)

const (
	// defaultCorpusGlob selects the Go sources of GOROOT/src.
	defaultCorpusGlob = "*.go"
	// defaultDirGlob selects every regular file of a user directory.
	defaultDirGlob = "*"
	// docSeparator is the single byte put between two documents.
	docSeparator = '\n'
	// readChunk is the minimum buffer growth, in bytes, while reading a
	// document; ctx is checked once per chunk.
	readChunk = 256 << 10
)

// ErrData reports a data spec or corpus that cannot be used for training.
var ErrData = errors.New("train: bad data")

// DataSpec says where the training text comes from and how it is split.
type DataSpec struct {
	// Path is "" for the default corpus, "-" for the reader passed to
	// LoadCorpus (standard input in the CLI), or the path of a file or a
	// directory.
	//
	// The default corpus is the Go standard library sources of the
	// installed Go toolchain (GOROOT/src, every "*.go" file, _test.go files
	// included, testdata and vendor directories excluded): it exists on every
	// machine with Go, needs no download, and is the same on every run with
	// the same toolchain.
	Path string
	// Glob filters the files of a directory walk by base name
	// (filepath.Match syntax). "" means "*.go" for the default corpus and
	// "*" (every regular file) for a user directory. It is ignored for a
	// single file and for "-".
	Glob string
	// ValFraction is the share of the token stream, taken from its end,
	// held out for validation. 0 means DefaultValFraction; otherwise it must
	// lie in [0, MaxValFraction].
	ValFraction float64
	// MaxBytes caps the token stream, in bytes (= tokens, separators
	// included): files are added in walk order until the cap is reached and
	// the last one is truncated. 0 means DefaultCorpusMaxBytes for the
	// default corpus and no cap otherwise; a negative value means no cap.
	MaxBytes int64
}

// Corpus is a loaded, split token stream. Token ids are byte values
// 0..255 (tokenizer.ByteVocab = 256 ids); documents are joined with one '\n'
// byte, and training windows cross document boundaries (GPT-style packing).
type Corpus struct {
	// Train is the first part of the stream, (len(Train),) token ids. Its
	// capacity ends at its length, so appending to it never touches Val.
	Train []int32
	// Val is the last ValFraction of the stream, (len(Val),) token ids,
	// never seen by training windows.
	Val []int32
	// Source describes where the text came from, for logs, e.g.
	// "Go standard library sources in /usr/local/go/src (1,234 files, 64.0 MiB, capped)".
	Source string
	// Files is the number of non-empty documents in the stream (files read,
	// or 1 for "-").
	Files int
}

// LoadCorpus reads the text named by spec, turns it into byte tokens and
// splits it into training and validation parts. stdin is read when
// spec.Path is "-" and may be nil otherwise. Files are read in the lexical
// order of filepath.WalkDir, so the same spec gives the same corpus on every
// run; directory walks skip symlinks and hidden entries (names starting
// with "."). ctx is checked between files and between read chunks.
//
// Errors name the path: unreadable paths wrap the os error (errors.Is with
// fs.ErrNotExist works), an invalid spec or an empty corpus wraps ErrData.
// Whether the corpus is big enough for a window length is Corpus.Check.
// The caller owns the returned slices; Train and Val share one array.
func LoadCorpus(ctx context.Context, spec DataSpec, stdin io.Reader) (*Corpus, error) {
	frac := spec.ValFraction
	if frac == 0 {
		frac = DefaultValFraction
	}
	if !(frac >= 0 && frac <= MaxValFraction) {
		return nil, fmt.Errorf("%w: ValFraction %v outside [0, %v]", ErrData, spec.ValFraction, MaxValFraction)
	}

	var (
		r      corpusReader
		source string
		err    error
	)
	switch spec.Path {
	case "":
		r.max = capBytes(spec.MaxBytes, DefaultCorpusMaxBytes)
		source, err = r.loadGoRoot(ctx, spec.Glob)
	case "-":
		if stdin == nil {
			return nil, fmt.Errorf("%w: Path %q (standard input) but no reader", ErrData, spec.Path)
		}
		r.max = capBytes(spec.MaxBytes, -1)
		if err = r.add(ctx, stdin); err != nil {
			err = fmt.Errorf("train: data stdin: %w", err)
		}
		source = "stdin"
	default:
		r.max = capBytes(spec.MaxBytes, -1)
		source, err = r.loadPath(ctx, spec.Path, spec.Glob)
	}
	if err != nil {
		return nil, err
	}
	if len(r.buf) == 0 {
		return nil, fmt.Errorf("%w: %s: corpus is empty (0 bytes of text)", ErrData, source)
	}

	tokens := make([]int32, len(r.buf))
	for i, b := range r.buf {
		tokens[i] = int32(b)
	}
	nVal := int(math.Round(float64(len(tokens)) * frac))
	nTrain := len(tokens) - nVal

	size := formatBytes(int64(len(tokens)))
	if r.capped {
		size += ", capped"
	}
	if spec.Path == "-" {
		source = fmt.Sprintf("%s (%s)", source, size)
	} else {
		source = fmt.Sprintf("%s (%s files, %s)", source, formatCount(r.docs), size)
	}
	return &Corpus{
		Train:  tokens[:nTrain:nTrain],
		Val:    tokens[nTrain:],
		Source: source,
		Files:  r.docs,
	}, nil
}

// Check reports whether the corpus holds at least one window of T tokens
// (T+1 tokens: inputs and targets shifted by one) in each of its training
// and validation parts.
func (c *Corpus) Check(T int) error {
	if T < 1 {
		return fmt.Errorf("%w: window length T=%d, want >= 1", ErrData, T)
	}
	need := T + 1
	switch {
	case len(c.Train) < need:
		return fmt.Errorf("%w: %s: training split has %d tokens, need at least %d for one window of T=%d (use more text)",
			ErrData, c.Source, len(c.Train), need, T)
	case len(c.Val) < need:
		return fmt.Errorf("%w: %s: validation split has %d tokens, need at least %d for one window of T=%d (raise ValFraction or use more text)",
			ErrData, c.Source, len(c.Val), need, T)
	}
	return nil
}

// capBytes resolves DataSpec.MaxBytes: 0 takes def, negative means no cap
// (returned as -1).
func capBytes(maxBytes, def int64) int64 {
	switch {
	case maxBytes == 0:
		return def
	case maxBytes < 0:
		return -1
	}
	return maxBytes
}

// corpusReader accumulates documents into one byte stream under a cap.
type corpusReader struct {
	max    int64 // cap on len(buf) in bytes; <= 0 for none
	buf    []byte
	docs   int  // non-empty documents in buf
	capped bool // the cap cut a document or left one out
}

// add appends one document read from r until EOF, preceded by the
// separator unless it is the first. Only what fits under the cap is kept;
// an empty document is skipped.
func (c *corpusReader) add(ctx context.Context, r io.Reader) error {
	room := int64(math.MaxInt64 - 1)
	if c.max > 0 {
		room = c.max - int64(len(c.buf))
		if c.docs > 0 {
			room-- // the separator
		}
		if room <= 0 {
			c.capped = true
			return nil
		}
	}
	before := len(c.buf)
	if c.docs > 0 {
		c.buf = append(c.buf, docSeparator)
	}
	start := len(c.buf)
	// One byte beyond the room tells a cut document from one that fits exactly.
	n, err := c.read(ctx, r, room+1)
	switch {
	case err != nil:
		c.buf = c.buf[:before]
		return err
	case n == 0:
		c.buf = c.buf[:before]
		return nil
	case n > room:
		c.buf = c.buf[:start+int(room)]
		c.capped = true
	}
	c.docs++
	return nil
}

// read appends at most limit bytes of r to c.buf, checking ctx before each
// chunk, and returns how many it appended.
func (c *corpusReader) read(ctx context.Context, r io.Reader, limit int64) (int64, error) {
	var n int64
	for n < limit {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if len(c.buf) == cap(c.buf) {
			c.buf = slices.Grow(c.buf, readChunk)
		}
		free := min(int64(cap(c.buf)-len(c.buf)), limit-n)
		m, err := r.Read(c.buf[len(c.buf) : len(c.buf)+int(free)])
		c.buf = c.buf[:len(c.buf)+m]
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// addFile appends the file at path as one document.
func (c *corpusReader) addFile(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("train: data %s: %w", path, err)
	}
	defer f.Close()
	if err := c.add(ctx, f); err != nil {
		return fmt.Errorf("train: data %s: %w", path, err)
	}
	return nil
}

// loadPath reads a user file or directory and returns its description.
func (c *corpusReader) loadPath(ctx context.Context, path, glob string) (string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("train: data %s: %w", path, err)
	}
	if !info.IsDir() {
		if err := c.addFile(ctx, path); err != nil {
			return "", err
		}
		return "file " + path, nil
	}
	if glob == "" {
		glob = defaultDirGlob
	}
	if err := c.walk(ctx, path, glob, nil); err != nil {
		return "", err
	}
	return fmt.Sprintf("files matching %q in %s", glob, path), nil
}

// loadGoRoot reads the default corpus and returns its description.
func (c *corpusReader) loadGoRoot(ctx context.Context, glob string) (string, error) {
	root, err := goRoot(ctx)
	if err != nil {
		return "", err
	}
	src := filepath.Join(root, "src")
	if glob == "" {
		glob = defaultCorpusGlob
	}
	skip := func(name string) bool { return name == "testdata" || name == "vendor" }
	if err := c.walk(ctx, src, glob, skip); err != nil {
		return "", err
	}
	return "Go standard library sources in " + src, nil
}

// walk adds the regular files under root whose base name matches glob, in
// lexical walk order, skipping hidden entries and directories for which
// skipDir (may be nil) is true, and stopping once the cap is reached.
func (c *corpusReader) walk(ctx context.Context, root, glob string, skipDir func(name string) bool) error {
	if _, err := filepath.Match(glob, ""); err != nil {
		return fmt.Errorf("%w: glob %q: %v", ErrData, glob, err)
	}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("train: data %s: %w", path, err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("train: data %s: %w", root, err)
		}
		if path == root {
			return nil
		}
		name := d.Name()
		if d.IsDir() {
			if strings.HasPrefix(name, ".") || (skipDir != nil && skipDir(name)) {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasPrefix(name, ".") {
			return nil
		}
		if ok, _ := filepath.Match(glob, name); !ok {
			return nil
		}
		if err := c.addFile(ctx, path); err != nil {
			return err
		}
		if c.capped {
			return fs.SkipAll
		}
		return nil
	})
	return err
}

// goRoot finds the root of the installed Go toolchain: the one this binary
// was built with if its sources are still there, else what `go env GOROOT`
// says.
func goRoot(ctx context.Context) (string, error) {
	//lint:ignore SA1019 a cheap first guess; `go env GOROOT` below is the authority.
	if root := runtime.GOROOT(); root != "" && isDir(filepath.Join(root, "src")) {
		return root, nil
	}
	root, err := goEnvGOROOT(ctx)
	if err != nil {
		return "", fmt.Errorf("train: data: find the Go standard library for the default corpus (set DataSpec.Path instead): %w", err)
	}
	return root, nil
}

// goEnvGOROOT runs `go env GOROOT`.
func goEnvGOROOT(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOROOT: %w", err)
	}
	root := strings.TrimSpace(string(out))
	if root == "" {
		return "", errors.New("go env GOROOT: empty output")
	}
	return root, nil
}

func isDir(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.IsDir()
}

// formatCount writes n with thousands separators: 3912 -> "3,912".
func formatCount(n int) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// formatBytes writes a byte count with a binary unit: "512 B", "12.3 KiB",
// "64.0 MiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 3 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGT"[i])
}

// Batcher draws training batches: B windows of T+1 tokens at uniformly
// random starts in a token stream. It is stateless: the batch of a step
// depends only on (seed, step), never on earlier calls, so a run resumed at
// step s sees bit-identical batches, and Batch is safe for concurrent use.
type Batcher struct {
	tokens []int32 // (N,) token stream, read only
	b, t   int     // rows per batch, tokens per row
	seed   uint64
}

// NewBatcher returns a Batcher over tokens (usually Corpus.Train) for
// batches of B rows of T tokens. It keeps tokens, which must not change
// while the Batcher is used. It needs len(tokens) >= T+1.
func NewBatcher(tokens []int32, B, T int, seed uint64) (*Batcher, error) {
	if B < 1 || T < 1 {
		return nil, fmt.Errorf("%w: batch B=%d T=%d, want both >= 1", ErrData, B, T)
	}
	if len(tokens) < T+1 {
		return nil, fmt.Errorf("%w: %d training tokens, need at least %d for one window of T=%d", ErrData, len(tokens), T+1, T)
	}
	return &Batcher{tokens: tokens, b: B, t: T, seed: seed}, nil
}

// Batch fills inputs and targets, each (B, T) row-major, with the batch of
// step (0-based): row r is tokens[s:s+T] and targets row r is
// tokens[s+1:s+T+1], where the starts s, uniform in [0, len(tokens)-T-1],
// come from a PCG generator seeded with (seed, step). With gradient
// accumulation over A micro-batches, pass the micro-step index
// step*A + micro so that every micro-batch differs. A wrong slice length
// or a negative step panics.
func (b *Batcher) Batch(step int, inputs, targets []int32) {
	n := b.b * b.t
	if len(inputs) != n || len(targets) != n || step < 0 {
		panic(fmt.Sprintf("train: Batcher.Batch step %d: len(inputs)=%d len(targets)=%d, want B*T = %d*%d = %d",
			step, len(inputs), len(targets), b.b, b.t, n))
	}
	rng := rand.New(rand.NewPCG(b.seed, uint64(step)))
	starts := len(b.tokens) - b.t // number of valid starts
	for r := range b.b {
		s := rng.IntN(starts)
		copy(inputs[r*b.t:(r+1)*b.t], b.tokens[s:s+b.t])
		copy(targets[r*b.t:(r+1)*b.t], b.tokens[s+1:s+b.t+1])
	}
}

// ValBatch is one validation batch of consecutive windows.
type ValBatch struct {
	Inputs  []int32 // (Rows, T) row-major: Rows consecutive windows of the stream
	Targets []int32 // (Rows, T) row-major: Inputs shifted left by one token
	Rows    int     // windows in the batch: B, fewer only in the last batch
}

// ValBatches cuts tokens (usually Corpus.Val) into consecutive,
// non-overlapping windows of T tokens, window w being tokens[w*T:(w+1)*T]
// with targets tokens[w*T+1:(w+1)*T+1], and groups them into batches of B
// windows; the last batch may hold fewer. maxBatches > 0 keeps only the
// first maxBatches batches. The result is the same on every call. Inputs
// and Targets alias tokens (no copy): the caller must not modify them.
// It returns an error wrapping ErrData if not even one window fits.
func ValBatches(tokens []int32, B, T, maxBatches int) ([]ValBatch, error) {
	if B < 1 || T < 1 {
		return nil, fmt.Errorf("%w: validation batch B=%d T=%d, want both >= 1", ErrData, B, T)
	}
	windows := 0
	if len(tokens) > 0 {
		windows = (len(tokens) - 1) / T
	}
	if windows == 0 {
		return nil, fmt.Errorf("%w: %d validation tokens, need at least %d for one window of T=%d", ErrData, len(tokens), T+1, T)
	}
	nb := (windows + B - 1) / B
	if maxBatches > 0 {
		nb = min(nb, maxBatches)
	}
	batches := make([]ValBatch, nb)
	for i := range batches {
		rows := min(B, windows-i*B)
		lo, hi := i*B*T, (i*B+rows)*T
		batches[i] = ValBatch{
			Inputs:  tokens[lo:hi:hi],
			Targets: tokens[lo+1 : hi+1 : hi+1],
			Rows:    rows,
		}
	}
	return batches, nil
}
