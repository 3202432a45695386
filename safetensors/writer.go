package safetensors

import (
	"fmt"
	"os"
	"slices"

	"github.com/moesys/moesys/internal/atomicfile"
)

// Writer streams a safetensors file whose header is fixed up front, for
// models larger than memory. Tensors may be written in any order, each in
// one or more chunks that append to it; data goes straight to its final
// place in a temporary file, which Close renames over the target once every
// tensor is complete. A Writer is not safe for concurrent use.
//
//	w, err := safetensors.Create(path, infos, map[string]string{"format": "pt"})
//	if err != nil { ... }
//	defer w.Abort() // no-op after a successful Close
//	for _, t := range infos {
//		for chunk := range chunksOf(t.Name) {
//			if err := w.Write(t.Name, chunk); err != nil { ... }
//		}
//	}
//	return w.Close()
type Writer struct {
	path    string
	f       *os.File     // the temporary file; nil once closed or aborted
	tensors []TensorInfo // file order, offsets filled in
	index   map[string]int
	written []int64 // bytes written so far per tensor
	start   int64   // file offset of the data buffer
	err     error   // first write error; sticky
}

// Create starts writing a safetensors file at path. tensors gives each
// tensor's Name, DType and Shape; their Offset and Size are ignored and
// computed. The file layout is HF's: tensors sorted by dtype (largest
// elements first) then name, packed contiguously after a header padded to 8
// bytes, so every tensor is aligned for zero-copy views. metadata becomes
// "__metadata__" (omitted when empty). Nothing appears at path until Close.
// Errors for bad names, dtypes or shapes wrap ErrInvalid.
func Create(path string, tensors []TensorInfo, metadata map[string]string) (*Writer, error) {
	laid, _, err := layout(tensors)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	hdr, err := encodeHeader(laid, metadata)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	f, err := atomicfile.Create(path)
	if err != nil {
		return nil, err
	}
	w := &Writer{
		path:    path,
		f:       f,
		tensors: laid,
		index:   make(map[string]int, len(laid)),
		written: make([]int64, len(laid)),
		start:   int64(len(hdr)),
	}
	for i, t := range laid {
		w.index[t.Name] = i
	}
	total := w.start
	if n := len(laid); n > 0 {
		total += laid[n-1].Offset + laid[n-1].Size
	}
	// Write the header and size the file up front; tensor data fills it in.
	if _, err := f.Write(hdr); err != nil {
		atomicfile.Discard(f)
		return nil, err
	}
	if err := f.Truncate(total); err != nil {
		atomicfile.Discard(f)
		return nil, err
	}
	return w, nil
}

// Tensors returns the tensors in file order with their offsets and sizes, in
// a new slice the caller owns.
func (w *Writer) Tensors() []TensorInfo { return slices.Clone(w.tensors) }

// Write appends data to the named tensor. Writing more than the tensor's
// size, or to a tensor not given to Create, is an error wrapping ErrInvalid.
// After an I/O error every later call fails; call Abort.
func (w *Writer) Write(name string, data []byte) error {
	if w.f == nil {
		return fmt.Errorf("write %s: %w", w.path, ErrClosed)
	}
	if w.err != nil {
		return w.err
	}
	i, ok := w.index[name]
	if !ok {
		return fmt.Errorf("write %s: %w: tensor %q is not in the header", w.path, ErrInvalid, name)
	}
	t := w.tensors[i]
	if int64(len(data)) > t.Size-w.written[i] {
		return fmt.Errorf("write %s: %w: tensor %q: %d more bytes after %d exceed its size %d",
			w.path, ErrInvalid, name, len(data), w.written[i], t.Size)
	}
	if _, err := w.f.WriteAt(data, w.start+t.Offset+w.written[i]); err != nil {
		w.err = fmt.Errorf("write %s: tensor %q: %w", w.path, name, err)
		return w.err
	}
	w.written[i] += int64(len(data))
	return nil
}

// Close checks that every tensor was written in full and, if so, atomically
// replaces the file at path (fsync, rename, fsync of the directory). On any
// error the temporary file is removed and path is left untouched.
func (w *Writer) Close() error {
	if w.f == nil {
		return fmt.Errorf("close %s: %w", w.path, ErrClosed)
	}
	if w.err != nil {
		w.Abort()
		return w.err
	}
	for i, t := range w.tensors {
		if w.written[i] != t.Size {
			w.Abort()
			return fmt.Errorf("close %s: %w: tensor %q has %d of its %d bytes", w.path, ErrInvalid, t.Name, w.written[i], t.Size)
		}
	}
	f := w.f
	w.f = nil
	if err := atomicfile.Commit(f, w.path); err != nil {
		return fmt.Errorf("commit %s: %w", w.path, err)
	}
	return nil
}

// Abort discards the temporary file; path is left untouched. It is a no-op
// after Close or a previous Abort, so it can be deferred.
func (w *Writer) Abort() error {
	if w.f == nil {
		return nil
	}
	f := w.f
	w.f = nil
	return atomicfile.Discard(f)
}
