package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/moesys/moesys/tensor"
)

// MaxHeaderSize is the largest JSON header accepted or written, in bytes. It
// is the reference implementation's limit (100 MB, HF's MAX_HEADER_SIZE), so
// a hostile length field cannot make a reader allocate more, and every file
// this package writes is readable by HF safetensors.
const MaxHeaderSize = 100_000_000

// lenSize is the size of the little-endian uint64 header length that starts
// every file.
const lenSize = 8

// headerAlign: the JSON header is padded with spaces so the data buffer starts
// at a multiple of 8 bytes, as HF's writer does. Tensors are laid out largest
// element first, so every tensor is then aligned for zero-copy typed views.
const headerAlign = 8

// metadataKey is the reserved header key holding string metadata.
const metadataKey = "__metadata__"

// TensorInfo describes one tensor of a file. Values returned by File and Set
// share Shape with the parsed header: treat it as read-only.
type TensorInfo struct {
	Name  string
	DType tensor.DType
	Shape tensor.Shape
	// Offset is the tensor's first byte relative to the data buffer
	// (data_offsets[0]); the absolute file position is Header.DataStart +
	// Offset.
	Offset int64
	// Size is the tensor's length in bytes: elements * DType.Size().
	Size int64
}

// Header is a parsed and validated safetensors header.
type Header struct {
	// Tensors in file order: increasing Offset, each starting where the
	// previous one ends (zero-size tensors at equal offsets by name).
	Tensors []TensorInfo
	// Metadata is the "__metadata__" object, nil if absent.
	Metadata map[string]string
	// DataStart is the file offset of the data buffer: 8 + header length.
	DataStart int64
}

// ParseHeader parses and validates the header of a safetensors file of
// fileSize bytes. b holds the start of the file: at least the 8-byte length
// and the JSON header it announces (the whole file will do). It checks what
// the reference implementation checks, and a little more:
//
//   - the header length is at most MaxHeaderSize and fits in the file;
//   - the header is UTF-8 JSON, an object starting with '{', with no
//     duplicate keys at any level;
//   - "__metadata__", if present, maps strings to strings (null is allowed);
//   - every other key is a tensor: an object with exactly "dtype" (a
//     tensor.ParseDType name), "shape" (non-negative integers) and
//     "data_offsets" ([begin, end], begin <= end);
//   - end - begin == elements(shape) * dtype size, without overflow;
//   - sorted by offset, the tensors tile the data buffer exactly: no
//     overlaps, no holes, no trailing bytes; and the buffer is not
//     truncated.
//
// Errors wrap ErrHeader or ErrTruncated. ParseHeader never panics and does
// not retain b.
func ParseHeader(b []byte, fileSize int64) (*Header, error) {
	if fileSize < lenSize || len(b) < lenSize {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d for the header length", ErrTruncated, min(fileSize, int64(len(b))), lenSize)
	}
	n := binary.LittleEndian.Uint64(b)
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("%w: header length %d exceeds the limit of %d bytes", ErrHeader, n, MaxHeaderSize)
	}
	if int64(n) > fileSize-lenSize {
		return nil, fmt.Errorf("%w: header length %d exceeds the %d bytes after the length field", ErrTruncated, n, fileSize-lenSize)
	}
	if uint64(len(b)-lenSize) < n {
		return nil, fmt.Errorf("%w: have %d header bytes of %d", ErrTruncated, len(b)-lenSize, n)
	}
	js := b[lenSize : lenSize+int(n)]
	if len(js) == 0 || js[0] != '{' {
		return nil, fmt.Errorf("%w: header does not start with '{'", ErrHeader)
	}
	if !utf8.Valid(js) {
		return nil, fmt.Errorf("%w: header is not valid UTF-8", ErrHeader)
	}
	h := &Header{DataStart: lenSize + int64(n)}
	if err := h.parseJSON(js); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHeader, err)
	}
	if err := h.checkLayout(fileSize - h.DataStart); err != nil {
		return nil, err
	}
	return h, nil
}

// parseJSON fills h.Tensors (in header order) and h.Metadata from js.
func (h *Header) parseJSON(js []byte) error {
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	_, err := readObject(dec, false, func(key string) error {
		if key == metadataKey {
			return h.parseMetadata(dec)
		}
		info, err := parseTensor(dec, key)
		if err != nil {
			return fmt.Errorf("tensor %q: %v", key, err)
		}
		h.Tensors = append(h.Tensors, info)
		return nil
	})
	if err != nil {
		return err
	}
	return readEnd(dec)
}

func (h *Header) parseMetadata(dec *json.Decoder) error {
	m := map[string]string{}
	ok, err := readObject(dec, true, func(key string) error {
		v, err := readString(dec)
		if err != nil {
			return fmt.Errorf("%s value %q: %v", metadataKey, key, err)
		}
		m[key] = v
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: %v", metadataKey, err)
	}
	if ok {
		h.Metadata = m
	}
	return nil
}

// parseTensor reads one tensor entry and checks it on its own.
func parseTensor(dec *json.Decoder, name string) (TensorInfo, error) {
	info := TensorInfo{Name: name}
	var shape, offsets []int64
	var haveDType bool
	_, err := readObject(dec, false, func(key string) error {
		var err error
		switch key {
		case "dtype":
			var s string
			if s, err = readString(dec); err != nil {
				return fmt.Errorf("dtype: %v", err)
			}
			if info.DType, err = tensor.ParseDType(s); err != nil {
				return fmt.Errorf("unknown dtype %q", s)
			}
			haveDType = true
		case "shape":
			if shape, err = readInts(dec, math.MaxInt); err != nil {
				return fmt.Errorf("shape: %v", err)
			}
		case "data_offsets":
			if offsets, err = readInts(dec, math.MaxInt64); err != nil {
				return fmt.Errorf("data_offsets: %v", err)
			}
		default:
			return fmt.Errorf("unknown field %q", key)
		}
		return nil
	})
	switch {
	case err != nil:
		return info, err
	case !haveDType:
		return info, fmt.Errorf("missing dtype")
	case shape == nil:
		return info, fmt.Errorf("missing shape")
	case offsets == nil:
		return info, fmt.Errorf("missing data_offsets")
	case len(offsets) != 2:
		return info, fmt.Errorf("data_offsets has %d entries, want 2", len(offsets))
	case offsets[1] < offsets[0]:
		return info, fmt.Errorf("data_offsets [%d, %d] end before they begin", offsets[0], offsets[1])
	}
	info.Shape = make(tensor.Shape, len(shape))
	for i, d := range shape {
		info.Shape[i] = int(d)
	}
	info.Offset, info.Size = offsets[0], offsets[1]-offsets[0]
	want, err := byteSize(info.DType, info.Shape)
	if err != nil {
		return info, err
	}
	if want != info.Size {
		return info, fmt.Errorf("%v %v needs %d bytes, data_offsets [%d, %d] hold %d",
			info.DType, info.Shape, want, offsets[0], offsets[1], info.Size)
	}
	return info, nil
}

// byteSize returns elements(shape) * dtype size, or an error on overflow.
func byteSize(d tensor.DType, shape tensor.Shape) (int64, error) {
	if d.Size() == 0 {
		return 0, fmt.Errorf("invalid dtype %v", d)
	}
	n, err := shape.Elements()
	if err != nil {
		return 0, fmt.Errorf("shape %v: element count overflows", []int(shape))
	}
	if int64(n) > math.MaxInt64/int64(d.Size()) {
		return 0, fmt.Errorf("shape %v of %v: byte size overflows", []int(shape), d)
	}
	return int64(n) * int64(d.Size()), nil
}

// checkLayout sorts h.Tensors into file order and checks that they tile a
// data buffer of bufSize bytes exactly.
func (h *Header) checkLayout(bufSize int64) error {
	slices.SortFunc(h.Tensors, func(a, b TensorInfo) int {
		if a.Offset != b.Offset {
			return cmpInt64(a.Offset, b.Offset)
		}
		if a.Size != b.Size {
			return cmpInt64(a.Size, b.Size)
		}
		return strings.Compare(a.Name, b.Name)
	})
	var end int64
	for i, t := range h.Tensors {
		switch {
		case t.Offset < end:
			prev := h.Tensors[i-1]
			return fmt.Errorf("%w: tensor %q [%d, %d] overlaps tensor %q [%d, %d]",
				ErrHeader, t.Name, t.Offset, t.Offset+t.Size, prev.Name, prev.Offset, prev.Offset+prev.Size)
		case t.Offset > end:
			return fmt.Errorf("%w: hole of %d bytes in the data buffer at [%d, %d] before tensor %q",
				ErrHeader, t.Offset-end, end, t.Offset, t.Name)
		}
		end = t.Offset + t.Size
	}
	switch {
	case end > bufSize:
		return fmt.Errorf("%w: tensors need a data buffer of %d bytes, file has %d", ErrTruncated, end, bufSize)
	case end < bufSize:
		return fmt.Errorf("%w: %d bytes after the last tensor (data buffer %d bytes, tensors end at %d)",
			ErrHeader, bufSize-end, bufSize, end)
	}
	return nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// dtypeRank orders dtypes as the reference implementation's Dtype enum does;
// its writer lays tensors out by descending rank (so descending element
// size), then by name.
var dtypeRank = map[tensor.DType]int{
	tensor.Bool: 0, tensor.U8: 1, tensor.I8: 2, tensor.F8E5M2: 3, tensor.F8E4M3: 4,
	tensor.I16: 5, tensor.U16: 6, tensor.F16: 7, tensor.BF16: 8,
	tensor.I32: 9, tensor.U32: 10, tensor.F32: 11,
	tensor.F64: 12, tensor.I64: 13, tensor.U64: 14,
}

// layout validates specs (DType, Shape and Name; Offset and Size are
// ignored) and returns them in HF's file order with offsets and sizes filled
// in, plus the data buffer size.
func layout(specs []TensorInfo) ([]TensorInfo, int64, error) {
	out := make([]TensorInfo, len(specs))
	seen := make(map[string]bool, len(specs))
	for i, s := range specs {
		switch {
		case s.Name == metadataKey:
			return nil, 0, fmt.Errorf("%w: tensor name %q is reserved", ErrInvalid, s.Name)
		case !utf8.ValidString(s.Name):
			return nil, 0, fmt.Errorf("%w: tensor name %q is not valid UTF-8", ErrInvalid, s.Name)
		case seen[s.Name]:
			return nil, 0, fmt.Errorf("%w: duplicate tensor name %q", ErrInvalid, s.Name)
		}
		if _, ok := dtypeRank[s.DType]; !ok {
			return nil, 0, fmt.Errorf("%w: tensor %q: invalid dtype %v", ErrInvalid, s.Name, s.DType)
		}
		seen[s.Name] = true
		size, err := byteSize(s.DType, s.Shape)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: tensor %q: %v", ErrInvalid, s.Name, err)
		}
		out[i] = TensorInfo{Name: s.Name, DType: s.DType, Shape: slices.Clone(s.Shape), Size: size}
	}
	slices.SortFunc(out, func(a, b TensorInfo) int {
		if ra, rb := dtypeRank[a.DType], dtypeRank[b.DType]; ra != rb {
			return rb - ra
		}
		return strings.Compare(a.Name, b.Name)
	})
	var off int64
	for i := range out {
		if out[i].Size > math.MaxInt64-off {
			return nil, 0, fmt.Errorf("%w: total size overflows", ErrInvalid)
		}
		out[i].Offset = off
		off += out[i].Size
	}
	return out, off, nil
}

// encodeHeader returns the 8-byte length and the JSON header for tensors in
// file order, formatted byte for byte as HF's writer does: compact JSON,
// "__metadata__" first (omitted when metadata is empty, keys sorted), tensors
// in file order, padded with spaces to a multiple of 8 bytes.
func encodeHeader(tensors []TensorInfo, metadata map[string]string) ([]byte, error) {
	b := make([]byte, lenSize, lenSize+64+96*len(tensors))
	b = append(b, '{')
	if len(metadata) > 0 {
		b = appendString(b, metadataKey)
		b = append(b, ":{"...)
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			v := metadata[k]
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, fmt.Errorf("%w: metadata %q is not valid UTF-8", ErrInvalid, k)
			}
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, v)
		}
		b = append(b, '}')
		if len(tensors) > 0 {
			b = append(b, ',')
		}
	}
	for i, t := range tensors {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, t.Name)
		b = append(b, `:{"dtype":`...)
		b = appendString(b, t.DType.String())
		b = append(b, `,"shape":[`...)
		for j, d := range t.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(d), 10)
		}
		b = append(b, `],"data_offsets":[`...)
		b = strconv.AppendInt(b, t.Offset, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, t.Offset+t.Size, 10)
		b = append(b, "]}"...)
	}
	b = append(b, '}')
	for (len(b)-lenSize)%headerAlign != 0 {
		b = append(b, ' ')
	}
	n := len(b) - lenSize
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("%w: header of %d bytes exceeds the limit of %d", ErrInvalid, n, MaxHeaderSize)
	}
	binary.LittleEndian.PutUint64(b, uint64(n))
	return b, nil
}
