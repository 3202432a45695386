package safetensors

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moesys/moesys/tensor"
)

// rawFile builds a file from a JSON header (not padded) and a zeroed data
// buffer of bufSize bytes.
func rawFile(hdr string, bufSize int) []byte {
	b := make([]byte, 8, 8+len(hdr)+bufSize)
	binary.LittleEndian.PutUint64(b, uint64(len(hdr)))
	b = append(b, hdr...)
	return append(b, make([]byte, bufSize)...)
}

// withLength returns a file whose length field says n, followed by rest.
func withLength(n uint64, rest string) []byte {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, n)
	return append(b, rest...)
}

const tA = `"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}`

func TestParseHeaderMalformed(t *testing.T) {
	for _, c := range []struct {
		name string
		file []byte
		want error
		msg  string // a substring of the error message
	}{
		{"empty file", nil, ErrTruncated, "header length"},
		{"short length field", []byte{1, 0, 0, 0}, ErrTruncated, "header length"},
		{"huge header length", withLength(1<<62, "{}"), ErrHeader, "exceeds the limit"},
		{"max uint64 header length", withLength(^uint64(0), "{}"), ErrHeader, "exceeds the limit"},
		{"header just over limit", withLength(MaxHeaderSize+1, "{}"), ErrHeader, "exceeds the limit"},
		{"header longer than file", withLength(100, `{"a":1}`), ErrTruncated, "exceeds the 7 bytes"},
		{"empty header", withLength(0, ""), ErrHeader, "start with '{'"},
		{"invalid JSON", rawFile(`{"a":`, 0), ErrHeader, "unexpected end of JSON"},
		{"invalid JSON token", rawFile(`{"a":{"dtype":F32}}`, 0), ErrHeader, "invalid JSON"},
		{"not an object", rawFile(`[1,2]`, 0), ErrHeader, "start with '{'"},
		{"leading space", rawFile(` {}`, 0), ErrHeader, "start with '{'"},
		{"trailing garbage", rawFile(`{} x`, 0), ErrHeader, "invalid JSON"},
		{"two objects", rawFile(`{}{}`, 0), ErrHeader, "after the top-level object"},
		{"invalid UTF-8", rawFile("{\"a\xff\":{}}", 0), ErrHeader, "UTF-8"},
		{"tensor not an object", rawFile(`{"a":5}`, 0), ErrHeader, `tensor "a": want a JSON object`},
		{"tensor null", rawFile(`{"a":null}`, 0), ErrHeader, `tensor "a": want a JSON object, got null`},
		{"unknown dtype", rawFile(`{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}`, 8), ErrHeader, `unknown dtype "F33"`},
		{"lowercase dtype", rawFile(`{"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}`, 8), ErrHeader, `unknown dtype "f32"`},
		{"dtype not a string", rawFile(`{"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}}`, 8), ErrHeader, "dtype: want a string"},
		{"dtype deeply nested", rawFile(`{"a":{"dtype":`+strings.Repeat("[", 10000)+strings.Repeat("]", 10000)+`}}`, 0), ErrHeader, "dtype: want a string"},
		{"shape size mismatch", rawFile(`{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,15]}}`, 15), ErrHeader, "needs 16 bytes"},
		{"shape negative", rawFile(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}`, 0), ErrHeader, "non-negative integer"},
		{"shape float", rawFile(`{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}`, 8), ErrHeader, "got 2.0"},
		{"shape exponent", rawFile(`{"a":{"dtype":"U8","shape":[1e3],"data_offsets":[0,1000]}}`, 1000), ErrHeader, "got 1e3"},
		{"shape string", rawFile(`{"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}}`, 8), ErrHeader, "shape: want a non-negative integer"},
		{"shape not an array", rawFile(`{"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}`, 8), ErrHeader, "shape: want an array"},
		{"shape element overflow", rawFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}`, 0), ErrHeader, "element count overflows"},
		{"shape byte overflow", rawFile(`{"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]}}`, 0), ErrHeader, "byte size overflows"},
		{"shape dimension too big", rawFile(`{"a":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,0]}}`, 0), ErrHeader, "shape: want a non-negative integer"},
		{"negative offset", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[-1,3]}}`, 4), ErrHeader, "data_offsets: want a non-negative integer"},
		{"offset out of range", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[9223372036854775808,9223372036854775809]}}`, 0), ErrHeader, "data_offsets: want a non-negative integer"},
		{"huge in-range offsets", rawFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[9223372036854775806,9223372036854775807]}}`, 0), ErrHeader, "hole of 9223372036854775806 bytes"},
		{"end before begin", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}`, 8), ErrHeader, "end before they begin"},
		{"one offset", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4]}}`, 4), ErrHeader, "has 1 entries"},
		{"three offsets", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, 8), ErrHeader, "has 3 entries"},
		{"missing dtype", rawFile(`{"a":{"shape":[1],"data_offsets":[0,4]}}`, 4), ErrHeader, "missing dtype"},
		{"missing shape", rawFile(`{"a":{"dtype":"F32","data_offsets":[0,4]}}`, 4), ErrHeader, "missing shape"},
		{"missing offsets", rawFile(`{"a":{"dtype":"F32","shape":[1]}}`, 4), ErrHeader, "missing data_offsets"},
		{"unknown field", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}`, 4), ErrHeader, `unknown field "extra"`},
		{"duplicate field", rawFile(`{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4), ErrHeader, `duplicate key "dtype"`},
		{"duplicate tensor", rawFile(`{`+tA+`,`+tA+`}`, 8), ErrHeader, `duplicate key "a"`},
		{"offsets beyond buffer", rawFile(`{`+tA+`}`, 4), ErrTruncated, "need a data buffer of 8 bytes, file has 4"},
		{"truncated data", rawFile(`{`+tA+`,"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, 12), ErrTruncated, "file has 12"},
		{"overlap", rawFile(`{`+tA+`,"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12), ErrHeader, `"b" [4, 12] overlaps tensor "a" [0, 8]`},
		{"same offsets", rawFile(`{`+tA+`,"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, 8), ErrHeader, "overlaps"},
		{"hole", rawFile(`{`+tA+`,"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]}}`, 16), ErrHeader, "hole of 4 bytes"},
		{"leading hole", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8), ErrHeader, "hole of 4 bytes in the data buffer at [0, 4]"},
		{"trailing bytes", rawFile(`{`+tA+`}`, 12), ErrHeader, "4 bytes after the last tensor"},
		{"no tensors but data", rawFile(`{}`, 3), ErrHeader, "3 bytes after the last tensor"},
		{"metadata number", rawFile(`{"__metadata__":{"k":1}}`, 0), ErrHeader, `__metadata__ value "k": want a string`},
		{"metadata nested", rawFile(`{"__metadata__":{"k":{"x":"y"}}}`, 0), ErrHeader, "want a string, got an object"},
		{"metadata not object", rawFile(`{"__metadata__":["a"]}`, 0), ErrHeader, "__metadata__: want a JSON object"},
		{"metadata duplicate key", rawFile(`{"__metadata__":{"k":"a","k":"b"}}`, 0), ErrHeader, `duplicate key "k"`},
		{"metadata twice", rawFile(`{"__metadata__":{},"__metadata__":{}}`, 0), ErrHeader, `duplicate key "__metadata__"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, err := ParseHeader(c.file, int64(len(c.file)))
			if err == nil {
				t.Fatalf("ParseHeader succeeded: %+v", h)
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error %q does not wrap %q", err, c.want)
			}
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q does not mention %q", err, c.msg)
			}
			// Open must agree on a real file.
			path := filepath.Join(t.TempDir(), "bad.safetensors")
			if err := os.WriteFile(path, c.file, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path)
			if err == nil {
				f.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open error %q does not wrap %q or name the path", err, c.want)
			}
		})
	}
}

func TestParseHeaderPrefixTooShort(t *testing.T) {
	file := rawFile(`{`+tA+`}`, 8)
	// The caller passed fewer bytes than the length field announces.
	if _, err := ParseHeader(file[:20], int64(len(file))); !errors.Is(err, ErrTruncated) {
		t.Fatalf("err = %v, want ErrTruncated", err)
	}
}

func TestParseHeaderValid(t *testing.T) {
	for _, c := range []struct {
		name  string
		file  []byte
		want  []TensorInfo
		meta  map[string]string
		start int64
	}{
		{"no tensors", rawFile(`{}`, 0), nil, nil, 10},
		{"padded", rawFile(`{}      `, 0), nil, nil, 16},
		{"null metadata", rawFile(`{"__metadata__":null}`, 0), nil, nil, 29},
		{"empty metadata", rawFile(`{"__metadata__":{}}`, 0), nil, map[string]string{}, 27},
		{
			"file order from offsets",
			rawFile(`{"b":{"dtype":"BF16","shape":[3],"data_offsets":[4,10]},"__metadata__":{"format":"pt","x":""},"a":{"dtype":"I32","shape":[],"data_offsets":[0,4]}}`, 10),
			[]TensorInfo{
				{Name: "a", DType: tensor.I32, Shape: tensor.Shape{}, Offset: 0, Size: 4},
				{Name: "b", DType: tensor.BF16, Shape: tensor.Shape{3}, Offset: 4, Size: 6},
			},
			map[string]string{"format": "pt", "x": ""}, 0,
		},
		{
			"zero-size tensors share an offset",
			rawFile(`{"z2":{"dtype":"F32","shape":[0,3],"data_offsets":[4,4]},"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"z1":{"dtype":"F64","shape":[5,0],"data_offsets":[4,4]},"e":{"dtype":"BOOL","shape":[1],"data_offsets":[4,5]}}`, 5),
			[]TensorInfo{
				{Name: "a", DType: tensor.U8, Shape: tensor.Shape{4}, Offset: 0, Size: 4},
				{Name: "z1", DType: tensor.F64, Shape: tensor.Shape{5, 0}, Offset: 4, Size: 0},
				{Name: "z2", DType: tensor.F32, Shape: tensor.Shape{0, 3}, Offset: 4, Size: 0},
				{Name: "e", DType: tensor.Bool, Shape: tensor.Shape{1}, Offset: 4, Size: 1},
			},
			nil, 0,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, err := ParseHeader(c.file, int64(len(c.file)))
			if err != nil {
				t.Fatal(err)
			}
			if len(h.Tensors) != len(c.want) {
				t.Fatalf("tensors = %+v, want %+v", h.Tensors, c.want)
			}
			for i := range c.want {
				g, w := h.Tensors[i], c.want[i]
				if g.Name != w.Name || g.DType != w.DType || !g.Shape.Equal(w.Shape) || g.Offset != w.Offset || g.Size != w.Size {
					t.Errorf("tensor %d = %+v, want %+v", i, g, w)
				}
			}
			if (h.Metadata == nil) != (c.meta == nil) || len(h.Metadata) != len(c.meta) {
				t.Errorf("metadata = %#v, want %#v", h.Metadata, c.meta)
			}
			for k, v := range c.meta {
				if h.Metadata[k] != v {
					t.Errorf("metadata[%q] = %q, want %q", k, h.Metadata[k], v)
				}
			}
			if c.start != 0 && h.DataStart != c.start {
				t.Errorf("DataStart = %d, want %d", h.DataStart, c.start)
			}
		})
	}
}

// TestEncodeHeaderEscapes checks that names and metadata needing JSON
// escapes survive encoding and parsing, and are escaped as serde_json does.
func TestEncodeHeaderEscapes(t *testing.T) {
	names := []string{"q\"uote", `back\slash`, "new\nline", "tab\t", "ctl\x01\x1f", "<html>&", "ünïcode ✓", "\u2028", "", " "}
	var specs []TensorInfo
	for _, n := range names {
		specs = append(specs, TensorInfo{Name: n, DType: tensor.U8, Shape: tensor.Shape{1}})
	}
	laid, bufSize, err := layout(specs)
	if err != nil {
		t.Fatal(err)
	}
	meta := map[string]string{"k\"ey": "va\\lue\n", "format": "pt"}
	hdr, err := encodeHeader(laid, meta)
	if err != nil {
		t.Fatal(err)
	}
	if len(hdr)%8 != 0 {
		t.Errorf("header of %d bytes is not padded to 8", len(hdr))
	}
	for _, want := range []string{`"q\"uote"`, `"back\\slash"`, `"new\nline"`, `"tab\t"`, `"ctl\u0001\u001f"`, `"<html>&"`, `"ünïcode ✓"`, "\"\u2028\"", `{"__metadata__":{"format":"pt","k\"ey":"va\\lue\n"},`} {
		if !strings.Contains(string(hdr), want) {
			t.Errorf("header lacks %s: %s", want, hdr[8:])
		}
	}
	file := append(hdr, make([]byte, bufSize)...)
	h, err := ParseHeader(file, int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, ti := range h.Tensors {
		got[ti.Name] = true
	}
	for _, n := range names {
		if !got[n] {
			t.Errorf("name %q lost in round trip", n)
		}
	}
	for k, v := range meta {
		if h.Metadata[k] != v {
			t.Errorf("metadata %q = %q, want %q", k, h.Metadata[k], v)
		}
	}
}

func TestLayoutRejects(t *testing.T) {
	for _, c := range []struct {
		name  string
		specs []TensorInfo
		msg   string
	}{
		{"reserved name", []TensorInfo{{Name: "__metadata__", DType: tensor.F32}}, "reserved"},
		{"invalid UTF-8", []TensorInfo{{Name: "a\xff", DType: tensor.F32}}, "UTF-8"},
		{"duplicate", []TensorInfo{{Name: "a", DType: tensor.F32}, {Name: "a", DType: tensor.U8}}, "duplicate"},
		{"invalid dtype", []TensorInfo{{Name: "a"}}, "invalid dtype"},
		{"out-of-range dtype", []TensorInfo{{Name: "a", DType: tensor.DType(99)}}, "invalid dtype"},
		{"negative dim", []TensorInfo{{Name: "a", DType: tensor.F32, Shape: tensor.Shape{-2}}}, "overflows"},
		{"byte overflow", []TensorInfo{{Name: "a", DType: tensor.F64, Shape: tensor.Shape{1 << 61}}}, "byte size overflows"},
		{"total overflow", []TensorInfo{{Name: "a", DType: tensor.U8, Shape: tensor.Shape{1 << 62}}, {Name: "b", DType: tensor.U8, Shape: tensor.Shape{1 << 62}}}, "total size overflows"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := layout(c.specs)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, c.msg)
			}
		})
	}
}

// TestLayoutOrder checks HF's order: larger elements first, then by name.
func TestLayoutOrder(t *testing.T) {
	specs := []TensorInfo{
		{Name: "u8", DType: tensor.U8, Shape: tensor.Shape{3}},
		{Name: "b", DType: tensor.BF16, Shape: tensor.Shape{3}},
		{Name: "a", DType: tensor.BF16, Shape: tensor.Shape{1}},
		{Name: "f64", DType: tensor.F64, Shape: tensor.Shape{1}},
		{Name: "u64", DType: tensor.U64, Shape: tensor.Shape{1}},
		{Name: "f16", DType: tensor.F16, Shape: tensor.Shape{1}},
		{Name: "f32", DType: tensor.F32, Shape: tensor.Shape{1}},
		{Name: "i64", DType: tensor.I64, Shape: tensor.Shape{1}},
		{Name: "bool", DType: tensor.Bool, Shape: tensor.Shape{1}},
		{Name: "e4", DType: tensor.F8E4M3, Shape: tensor.Shape{1}},
	}
	laid, size, err := layout(specs)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, ti := range laid {
		order = append(order, ti.Name)
		if ti.Offset%int64(ti.DType.Size()) != 0 {
			t.Errorf("%s at offset %d is not aligned to %d", ti.Name, ti.Offset, ti.DType.Size())
		}
	}
	want := "u64 i64 f64 f32 a b f16 e4 u8 bool"
	if got := strings.Join(order, " "); got != want {
		t.Errorf("order = %s, want %s", got, want)
	}
	if size != 8*3+4+2*(3+1+1)+1+3+1 {
		t.Errorf("size = %d", size)
	}
}
