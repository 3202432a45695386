package offload

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/moesys/moesys/internal/atomicfile"
)

// Layout file names inside a layout directory.
const (
	ExpertsFile = "experts.bin"
	IndexFile   = "experts.json"
	// Align is the block alignment and size granularity: the O_DIRECT and
	// page size.
	Align = 4096
)

// ErrLayout is wrapped by every malformed-layout error.
var ErrLayout = errors.New("offload: bad layout")

// TensorRef places one tensor inside a block.
type TensorRef struct {
	Name   string `json:"name"`
	DType  string `json:"dtype"`
	Shape  []int  `json:"shape"`
	Offset int64  `json:"offset"` // from the block start
	Bytes  int64  `json:"bytes"`
}

// Block is one expert's tensors, contiguous in the experts file.
type Block struct {
	Layer   int         `json:"layer"`
	Expert  int         `json:"expert"`
	Offset  int64       `json:"offset"` // multiple of Align
	Bytes   int64       `json:"bytes"`  // data bytes (the read size is Padded)
	Tensors []TensorRef `json:"tensors"`
}

// Padded returns the block's size rounded up to Align: what one aligned
// read of the block transfers.
func (b Block) Padded() int64 { return (b.Bytes + Align - 1) / Align * Align }

// Index is the layout's JSON index.
type Index struct {
	Format string  `json:"format"` // "moesys-offload-v1"
	Blocks []Block `json:"blocks"`
}

const formatV1 = "moesys-offload-v1"

// BlockSpec names the tensors of one block and how to read their bytes.
type BlockSpec struct {
	Layer, Expert int
	Tensors       []TensorRef // Name, DType, Shape, Bytes set; Offset computed
}

// WriteLayout writes the experts file and index into dir: blocks in the
// given order, each 4 KiB aligned and padded with zeros; read(name) returns
// a tensor's bytes (it must return exactly TensorRef.Bytes). Both files are
// written atomically, the index last.
func WriteLayout(dir string, blocks []BlockSpec, read func(name string) ([]byte, error)) (*Index, error) {
	f, err := atomicfile.Create(filepath.Join(dir, ExpertsFile))
	if err != nil {
		return nil, err
	}
	idx := &Index{Format: formatV1}
	var off int64
	pad := make([]byte, Align)
	for _, bs := range blocks {
		b := Block{Layer: bs.Layer, Expert: bs.Expert, Offset: off}
		for _, t := range bs.Tensors {
			data, err := read(t.Name)
			if err != nil {
				atomicfile.Discard(f)
				return nil, err
			}
			if int64(len(data)) != t.Bytes {
				atomicfile.Discard(f)
				return nil, fmt.Errorf("%w: tensor %s has %d bytes, declared %d", ErrLayout, t.Name, len(data), t.Bytes)
			}
			if _, err := f.Write(data); err != nil {
				atomicfile.Discard(f)
				return nil, err
			}
			t.Offset = b.Bytes
			b.Bytes += t.Bytes
			b.Tensors = append(b.Tensors, t)
		}
		if n := b.Padded() - b.Bytes; n > 0 {
			if _, err := f.Write(pad[:n]); err != nil {
				atomicfile.Discard(f)
				return nil, err
			}
		}
		off += b.Padded()
		idx.Blocks = append(idx.Blocks, b)
	}
	if err := atomicfile.Commit(f, filepath.Join(dir, ExpertsFile)); err != nil {
		return nil, err
	}
	js, err := json.MarshalIndent(idx, "", " ")
	if err != nil {
		return nil, err
	}
	return idx, atomicfile.WriteFile(filepath.Join(dir, IndexFile), js)
}

// Layout is an opened layout directory.
type Layout struct {
	Index
	Path   string // the experts file
	size   int64
	blocks map[[2]int]int
}

// OpenLayout reads and validates dir's index against its experts file.
func OpenLayout(dir string) (*Layout, error) {
	b, err := os.ReadFile(filepath.Join(dir, IndexFile))
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, ExpertsFile)
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	l, err := parseLayout(b, st.Size())
	if err != nil {
		return nil, err
	}
	l.Path = path
	return l, nil
}

// parseLayout validates an index against an experts file of size bytes: the
// pure part of OpenLayout, which the fuzzer drives.
func parseLayout(b []byte, size int64) (*Layout, error) {
	l := &Layout{size: size, blocks: map[[2]int]int{}}
	if err := json.Unmarshal(b, &l.Index); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrLayout, IndexFile, err)
	}
	if l.Format != formatV1 {
		return nil, fmt.Errorf("%w: format %q, want %q", ErrLayout, l.Format, formatV1)
	}
	var next int64
	for i, blk := range l.Blocks {
		key := [2]int{blk.Layer, blk.Expert}
		if _, dup := l.blocks[key]; dup {
			return nil, fmt.Errorf("%w: layer %d expert %d listed twice", ErrLayout, blk.Layer, blk.Expert)
		}
		l.blocks[key] = i
		if blk.Offset != next || blk.Offset%Align != 0 || blk.Bytes < 0 || blk.Bytes > l.size || blk.Offset+blk.Padded() > l.size {
			return nil, fmt.Errorf("%w: block %d (layer %d expert %d) at %d+%d does not fit the %d-byte experts file in order",
				ErrLayout, i, blk.Layer, blk.Expert, blk.Offset, blk.Bytes, l.size)
		}
		var in int64
		for _, t := range blk.Tensors {
			if t.Offset != in || t.Bytes < 0 || t.Bytes > blk.Bytes {
				return nil, fmt.Errorf("%w: tensor %s at %d, want %d", ErrLayout, t.Name, t.Offset, in)
			}
			in += t.Bytes
		}
		if in != blk.Bytes {
			return nil, fmt.Errorf("%w: block %d tensors hold %d bytes, block says %d", ErrLayout, i, in, blk.Bytes)
		}
		next = blk.Offset + blk.Padded()
	}
	return l, nil
}

// Block returns the block of (layer, expert).
func (l *Layout) Block(layer, expert int) (Block, bool) {
	i, ok := l.blocks[[2]int{layer, expert}]
	if !ok {
		return Block{}, false
	}
	return l.Blocks[i], true
}

// ReadTensors reads every tensor of the layout into fn, block by block (a
// plain buffered read; the serving path uses aligned direct reads).
func (l *Layout) ReadTensors(fn func(t TensorRef, data []byte) error) error {
	f, err := os.Open(l.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, blk := range l.Blocks {
		buf := make([]byte, blk.Bytes)
		if _, err := f.ReadAt(buf, blk.Offset); err != nil && !(errors.Is(err, io.EOF) && blk.Bytes == 0) {
			return fmt.Errorf("read layer %d expert %d: %w", blk.Layer, blk.Expert, err)
		}
		for _, t := range blk.Tensors {
			if err := fn(t, buf[t.Offset:t.Offset+t.Bytes]); err != nil {
				return err
			}
		}
	}
	return nil
}

// SlotBytes is the size of a slot that holds any block: the largest
// Padded block size (0 for a layout without blocks).
func (l *Layout) SlotBytes() int64 {
	var n int64
	for _, b := range l.Blocks {
		n = max(n, b.Padded())
	}
	return n
}
