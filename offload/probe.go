package offload

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Read-probe defaults: enough reads to fill the queue several times and get
// past the disk's ramp-up, yet a few hundredths of a second at 2 GB/s.
const (
	// ProbeBytes is how much a probe reads unless told otherwise, bytes.
	ProbeBytes = 64 << 20
	// ProbeChunk is the largest probe read, bytes: an NVMe queue is
	// saturated by reads of this size, and bigger blocks would only cost
	// depth x chunk of buffer memory.
	ProbeChunk = 4 << 20
)

// ProbeConfig configures MeasureRead.
type ProbeConfig struct {
	Depth int   // reads in flight; <= 0: DefaultDepth (pass the scheduler's)
	Bytes int64 // bytes to read; <= 0: ProbeBytes; at most the experts file
	// Chunk is the read size; <= 0: the layout's slot size (the
	// scheduler's read size) capped at ProbeChunk. Rounded up to Align.
	Chunk  int64
	Memory Memory // read buffers, Depth x Chunk; nil: HostMemory
}

// ReadProbe is the slow tier's measured read bandwidth: Bytes read in
// Reads reads of Chunk bytes, Depth in flight, taking Seconds.
type ReadProbe struct {
	Bytes   int64   `json:"bytes"`
	Reads   int     `json:"reads"`
	Chunk   int64   `json:"chunk_bytes"`
	Depth   int     `json:"depth"`
	Seconds float64 `json:"seconds"`
	// Direct is whether the reads bypassed the page cache (O_DIRECT); when
	// not, Note says why and the figure may be RAM's, not the disk's.
	Direct bool   `json:"direct"`
	Note   string `json:"note,omitempty"`
}

// BytesPerSecond is the measured bandwidth, or 0 before any read.
func (p ReadProbe) BytesPerSecond() float64 {
	if p.Seconds <= 0 {
		return 0
	}
	return float64(p.Bytes) / p.Seconds
}

func (p ReadProbe) String() string {
	how := "O_DIRECT"
	switch {
	case !p.Direct && p.Note != "":
		how = p.Note
	case !p.Direct:
		how = "not O_DIRECT"
	}
	return fmt.Sprintf("%.2f GB/s (%s in %d reads of %s, %d in flight; %s)",
		p.BytesPerSecond()/1e9, fmtBytes(p.Bytes), p.Reads, fmtBytes(p.Chunk), p.Depth, how)
}

// directStore is what a Store tells about page-cache bypass (FileStore).
type directStore interface {
	Direct() bool
	Note() string
}

// MeasureRead measures how fast store delivers lay's experts file: it reads
// the file from its start in Chunk-sized reads, Depth in flight through a
// Reader, as the scheduler does, for cfg.Bytes or the whole file if
// smaller. Use a store of its own (OpenFileStore(lay.Path)) before the
// scheduler starts, so the two do not share the disk.
func MeasureRead(ctx context.Context, lay *Layout, store Store, cfg ProbeConfig) (ReadProbe, error) {
	var end int64 // the blocks' extent: every aligned read below it is in the file
	for _, b := range lay.Blocks {
		end = max(end, b.Offset+b.Padded())
	}
	if end == 0 {
		return ReadProbe{}, fmt.Errorf("%w: no expert blocks to read", ErrLayout)
	}
	if cfg.Depth <= 0 {
		cfg.Depth = DefaultDepth
	}
	if cfg.Bytes <= 0 {
		cfg.Bytes = ProbeBytes
	}
	if cfg.Chunk <= 0 {
		cfg.Chunk = min(lay.SlotBytes(), ProbeChunk)
	}
	if cfg.Memory == nil {
		cfg.Memory = HostMemory{}
	}
	chunk := min((cfg.Chunk+Align-1)/Align*Align, end)
	total := min(cfg.Bytes, end)
	n := int((total + chunk - 1) / chunk)
	depth := min(cfg.Depth, n)
	p := ReadProbe{Chunk: chunk, Depth: depth, Reads: n}
	if ds, ok := store.(directStore); ok {
		p.Direct, p.Note = ds.Direct(), ds.Note()
	}

	region, err := cfg.Memory.Alloc(depth * int(chunk))
	if err != nil {
		return ReadProbe{}, fmt.Errorf("offload: read probe: %w", err)
	}
	if region == nil {
		return ReadProbe{}, errors.New("offload: read probe: the memory has no host region to read into")
	}
	defer cfg.Memory.Free(region)
	reader := NewReader(store, ReaderConfig{Depth: depth})
	defer reader.Close()

	// Read i goes into buffer i % depth once read i - depth has left it:
	// depth reads stay in flight until the last ones. Waits are without
	// ctx: every read ends (a queued one is dropped when ctx ends), and a
	// buffer is not reused or freed while the reader owns it.
	wait := func(pd *Pending) error { return pd.Wait(context.Background()) }
	pend := make([]*Pending, 0, n)
	start := time.Now()
	for i := range n {
		if i >= depth {
			if err = wait(pend[i-depth]); err != nil {
				break
			}
		}
		off := int64(i) * chunk
		size := min(chunk, end-off)
		buf := region[int64(i%depth)*chunk:]
		pend = append(pend, reader.Submit(ctx, Request{Dst: buf[:size], Off: off}))
		p.Bytes += size
	}
	for _, pd := range pend {
		if werr := wait(pd); werr != nil && err == nil {
			err = werr
		}
	}
	p.Seconds = time.Since(start).Seconds()
	if err != nil {
		return ReadProbe{}, fmt.Errorf("offload: read probe of %s: %w", lay.Path, err)
	}
	return p, nil
}
