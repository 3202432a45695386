package offload

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// writeProbeLayout writes a layout of n one-page expert blocks (a slot is
// 8 KiB: each block is 4097 bytes, padded to two pages).
func writeProbeLayout(t *testing.T, n int) *Layout {
	t.Helper()
	dir := t.TempDir()
	var blocks []BlockSpec
	for e := range n {
		blocks = append(blocks, BlockSpec{Layer: 0, Expert: e, Tensors: []TensorRef{
			{Name: fmt.Sprintf("e%d", e), DType: "U8", Shape: []int{Align + 1}, Bytes: Align + 1}}})
	}
	read := func(string) ([]byte, error) { return make([]byte, Align+1), nil }
	if _, err := WriteLayout(dir, blocks, read); err != nil {
		t.Fatal(err)
	}
	lay, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	return lay
}

// recordStore records the reads it serves and the most it had in flight.
type recordStore struct {
	Store
	delay time.Duration

	mu       sync.Mutex
	reads    [][2]int64 // offset, length
	inFlight int
	maxIn    int
}

func (s *recordStore) ReadAt(ctx context.Context, dst []byte, off int64) error {
	s.mu.Lock()
	s.reads = append(s.reads, [2]int64{off, int64(len(dst))})
	s.inFlight++
	s.maxIn = max(s.maxIn, s.inFlight)
	s.mu.Unlock()
	time.Sleep(s.delay)
	err := s.Store.ReadAt(ctx, dst, off)
	s.mu.Lock()
	s.inFlight--
	s.mu.Unlock()
	return err
}

func TestMeasureRead(t *testing.T) {
	lay := writeProbeLayout(t, 5) // 5 blocks of 8 KiB: 40 KiB
	for _, tc := range []struct {
		name  string
		cfg   ProbeConfig
		want  ReadProbe // Bytes, Reads, Chunk, Depth
		reads [][2]int64
	}{
		{"defaults: the whole file in slot-sized reads", ProbeConfig{},
			ReadProbe{Bytes: 40960, Reads: 5, Chunk: 8192, Depth: 5},
			[][2]int64{{0, 8192}, {8192, 8192}, {16384, 8192}, {24576, 8192}, {32768, 8192}}},
		{"part of the file, depth 2", ProbeConfig{Depth: 2, Bytes: 20000},
			ReadProbe{Bytes: 24576, Reads: 3, Chunk: 8192, Depth: 2},
			[][2]int64{{0, 8192}, {8192, 8192}, {16384, 8192}}},
		{"chunk rounded up to a page, last read short", ProbeConfig{Depth: 1, Chunk: 12000},
			ReadProbe{Bytes: 40960, Reads: 4, Chunk: 12288, Depth: 1},
			[][2]int64{{0, 12288}, {12288, 12288}, {24576, 12288}, {36864, 4096}}},
		{"chunk capped at the file", ProbeConfig{Chunk: 1 << 20},
			ReadProbe{Bytes: 40960, Reads: 1, Chunk: 40960, Depth: 1},
			[][2]int64{{0, 40960}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := OpenFileStore(lay.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer fs.Close()
			rs := &recordStore{Store: fs, delay: time.Millisecond}
			p, err := MeasureRead(context.Background(), lay, rs, tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			got := ReadProbe{Bytes: p.Bytes, Reads: p.Reads, Chunk: p.Chunk, Depth: p.Depth}
			if got != tc.want {
				t.Errorf("probe %+v, want %+v", got, tc.want)
			}
			slices.SortFunc(rs.reads, func(a, b [2]int64) int { return int(a[0] - b[0]) })
			if !slices.Equal(rs.reads, tc.reads) || rs.maxIn > tc.want.Depth {
				t.Errorf("reads %v (at most %d in flight), want %v (at most %d)", rs.reads, rs.maxIn, tc.reads, tc.want.Depth)
			}
			if p.Seconds <= 0 || p.BytesPerSecond() <= 0 {
				t.Errorf("probe %+v: no time", p)
			}
		})
	}
}

// A FileStore tells the probe whether its reads bypass the page cache.
func TestMeasureReadDirect(t *testing.T) {
	lay := writeProbeLayout(t, 1)
	fs, err := OpenFileStore(lay.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	p, err := MeasureRead(context.Background(), lay, fs, ProbeConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Direct != fs.Direct() || p.Note != fs.Note() {
		t.Fatalf("probe direct %v note %q; store direct %v note %q", p.Direct, p.Note, fs.Direct(), fs.Note())
	}
	p, err = MeasureRead(context.Background(), lay, NewMemStore(make([]byte, 2*Align)), ProbeConfig{})
	if err != nil || p.Direct || p.Bytes != 2*Align {
		t.Fatalf("memory store: %+v, %v", p, err)
	}
}

// The probe's time is the reads' time: 4 reads of 10 ms, 2 at a time,
// take at least 20 ms, so the bandwidth is at most 16 KiB / 20 ms.
func TestMeasureReadTimesReads(t *testing.T) {
	lay := writeProbeLayout(t, 2)
	fs, err := OpenFileStore(lay.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	p, err := MeasureRead(context.Background(), lay, SlowStore{Store: fs, Delay: 10 * time.Millisecond}, ProbeConfig{Depth: 2, Chunk: Align})
	if err != nil {
		t.Fatal(err)
	}
	if p.Reads != 4 || p.Seconds < 0.02 || p.BytesPerSecond() > 16384/0.02 {
		t.Fatalf("probe %+v: %.0f B/s", p, p.BytesPerSecond())
	}
	if p.String() == "" {
		t.Fatal("empty String")
	}
}

func TestMeasureReadErrors(t *testing.T) {
	lay := writeProbeLayout(t, 4)
	for _, tc := range []struct {
		name  string
		store func(Store) Store
		ctx   func() context.Context
		want  error
	}{
		{"read error", func(s Store) Store { return NewFaultStore(s, FaultError, 2) }, context.Background, ErrInjected},
		{"short read", func(s Store) Store { return NewFaultStore(s, FaultShort, 3) }, context.Background, ErrShortRead},
		{"cancelled", func(s Store) Store { return s }, func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := OpenFileStore(lay.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer fs.Close()
			_, err = MeasureRead(tc.ctx(), lay, tc.store(fs), ProbeConfig{Depth: 2})
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := MeasureRead(context.Background(), &Layout{}, nil, ProbeConfig{}); !errors.Is(err, ErrLayout) {
		t.Fatalf("empty layout: %v", err)
	}
}
