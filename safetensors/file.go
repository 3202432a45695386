package safetensors

import (
	"fmt"
	"maps"
	"math"
	"os"
	"slices"

	"github.com/moesys/moesys/tensor"
)

// File is an open safetensors file, memory-mapped read-only. Its methods are
// safe for concurrent use, except Close, which must not run concurrently
// with any other method or while views it returned are in use.
type File struct {
	path    string
	data    []byte // the whole file; nil once closed
	release func([]byte) error
	hdr     *Header
	byName  map[string]int // index into hdr.Tensors
}

// Open maps the file at path and validates its header (see ParseHeader). A
// file that is truncated or rewritten in place by another process while
// mapped can make later reads of its views fault; write checkpoints with
// WriteFile or Create, which replace files atomically, to avoid that.
func Open(path string) (*File, error) {
	osf, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer osf.Close()
	st, err := osf.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("open %s: not a regular file", path)
	}
	size := st.Size()
	if size < lenSize {
		return nil, fmt.Errorf("open %s: %w: %d bytes, need at least %d for the header length", path, ErrTruncated, size, lenSize)
	}
	if size > math.MaxInt {
		return nil, fmt.Errorf("open %s: file of %d bytes is too large for this platform", path, size)
	}
	data, release, err := mapFile(osf, int(size))
	if err != nil {
		return nil, err
	}
	hdr, err := ParseHeader(data, size)
	if err != nil {
		release(data)
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f := &File{path: path, data: data, release: release, hdr: hdr, byName: make(map[string]int, len(hdr.Tensors))}
	for i, t := range hdr.Tensors {
		f.byName[t.Name] = i
	}
	return f, nil
}

// Path returns the path the file was opened with.
func (f *File) Path() string { return f.path }

// DataOffset returns the file offset of the data buffer, to which
// TensorInfo.Offset is relative: a tensor's bytes start at DataOffset() +
// Offset in the file (for readers that bypass the mapping, e.g. O_DIRECT).
func (f *File) DataOffset() int64 { return f.hdr.DataStart }

// Names returns the tensor names sorted lexicographically, in a new slice
// the caller owns.
func (f *File) Names() []string {
	names := make([]string, len(f.hdr.Tensors))
	for i, t := range f.hdr.Tensors {
		names[i] = t.Name
	}
	slices.Sort(names)
	return names
}

// Tensors returns every tensor's description in file order (increasing
// offset), in a new slice the caller owns; the Shapes are shared and
// read-only.
func (f *File) Tensors() []TensorInfo { return slices.Clone(f.hdr.Tensors) }

// Info returns the description of the named tensor; its Shape is shared and
// read-only.
func (f *File) Info(name string) (TensorInfo, bool) {
	i, ok := f.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.hdr.Tensors[i], true
}

// Metadata returns a copy of the header's "__metadata__" map, nil if the
// file has none.
func (f *File) Metadata() map[string]string { return maps.Clone(f.hdr.Metadata) }

// lookup returns the named tensor's description and bytes.
func (f *File) lookup(name string) (TensorInfo, []byte, error) {
	if f.data == nil {
		return TensorInfo{}, nil, fmt.Errorf("%s: %w", f.path, ErrClosed)
	}
	i, ok := f.byName[name]
	if !ok {
		return TensorInfo{}, nil, fmt.Errorf("%w: %q in %s", ErrNotFound, name, f.path)
	}
	t := f.hdr.Tensors[i]
	start := f.hdr.DataStart + t.Offset
	end := start + t.Size
	return t, f.data[start:end:end], nil
}

// Bytes returns the named tensor's raw little-endian bytes. The slice is a
// view of the read-only mapping, valid until Close; writing to it faults.
func (f *File) Bytes(name string) ([]byte, error) {
	_, b, err := f.lookup(name)
	return b, err
}

// F32 returns the named F32 tensor's values (ErrDType for any other dtype).
// Normally the slice is a read-only view of the mapping, valid until Close,
// which must not be written. If the data is not 4-byte aligned in memory
// (possible only in files whose writer did not align the data buffer) or the
// host is big-endian, the values are decoded into a new slice the caller
// owns instead.
func (f *File) F32(name string) ([]float32, error) {
	t, b, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	if t.DType != tensor.F32 {
		return nil, fmt.Errorf("%w: tensor %q in %s is %v, not F32", ErrDType, name, f.path, t.DType)
	}
	return f32View(b), nil
}

// U16 returns the raw 16-bit patterns of the named BF16, F16 or U16 tensor
// (ErrDType for any other dtype); convert with tensor.BF16ToF32 or
// tensor.F16ToF32. Ownership and alignment are as for F32, with 2-byte
// alignment.
func (f *File) U16(name string) ([]uint16, error) {
	t, b, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	switch t.DType {
	case tensor.BF16, tensor.F16, tensor.U16:
		return u16View(b), nil
	}
	return nil, fmt.Errorf("%w: tensor %q in %s is %v, not BF16, F16 or U16", ErrDType, name, f.path, t.DType)
}

// Close unmaps the file. Every view returned by Bytes, F32 and U16 becomes
// invalid: touching one afterwards faults. Closing twice is a no-op.
func (f *File) Close() error {
	if f.data == nil {
		return nil
	}
	data := f.data
	f.data = nil
	if err := f.release(data); err != nil {
		return fmt.Errorf("close %s: %w", f.path, err)
	}
	return nil
}
