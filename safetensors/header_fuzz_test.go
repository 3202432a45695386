package safetensors

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseHeader feeds arbitrary headers and file sizes to ParseHeader. It
// must never panic, and whatever it accepts must be a consistent layout that
// survives re-encoding. Seeds are the fixtures' real headers and small
// headers cut from them. The real headers are 5-15 KB, and the fuzzer's
// default minimisation of each new large input takes up to a minute, so run
// it as
//
//	go test -run '^$' -fuzz FuzzParseHeader -fuzzminimizetime 1s ./safetensors
func FuzzParseHeader(f *testing.F) {
	for _, p := range []string{
		"mixtral_f32/model.safetensors",
		"mixtral_bf16/model.safetensors",
		"qwen2_moe/model.safetensors",
		"train_tiny/model.safetensors",
		"train_tiny/expected/grads.safetensors",
	} {
		b, err := os.ReadFile(filepath.Join(fixtures, p))
		if err != nil {
			f.Fatal(err)
		}
		n := lenSize + int(binary.LittleEndian.Uint64(b))
		f.Add(b[:n], uint64(len(b)-n)) // header only; the data size as its own input
		// The same file cut down to its first three tensors.
		h, err := ParseHeader(b, int64(len(b)))
		if err != nil {
			f.Fatal(err)
		}
		small := h.Tensors[:3]
		enc, err := encodeHeader(small, h.Metadata)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc, uint64(small[2].Offset+small[2].Size))
	}
	f.Add(rawFile(`{}`, 0), uint64(0))
	f.Add(rawFile(`{"__metadata__":{"a":"b"},"x":{"dtype":"BF16","shape":[0,2],"data_offsets":[0,0]},"y":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}`, 0), uint64(1))
	f.Add(rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 0), uint64(12))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, uint64(0))

	f.Fuzz(func(t *testing.T, b []byte, dataSize uint64) {
		fileSize := int64(len(b)) + int64(dataSize&(1<<40-1))
		h, err := ParseHeader(b, fileSize)
		if err != nil {
			return
		}
		// Accepted: the tensors tile the data buffer exactly.
		var end int64
		for _, ti := range h.Tensors {
			if ti.Offset != end {
				t.Fatalf("tensor %q at %d, previous ends at %d", ti.Name, ti.Offset, end)
			}
			size, err := byteSize(ti.DType, ti.Shape)
			if err != nil || size != ti.Size {
				t.Fatalf("tensor %q: size %d, want %d (%v)", ti.Name, ti.Size, size, err)
			}
			end += ti.Size
		}
		if h.DataStart+end != fileSize {
			t.Fatalf("data start %d + %d bytes != file size %d", h.DataStart, end, fileSize)
		}
		// Re-encoding gives a header that parses to the same tensors.
		enc, err := encodeHeader(h.Tensors, h.Metadata)
		if err != nil {
			t.Fatalf("re-encoding an accepted header: %v", err)
		}
		h2, err := ParseHeader(enc, int64(len(enc))+end)
		if err != nil {
			t.Fatalf("re-encoded header rejected: %v\n%s", err, enc[lenSize:])
		}
		if len(h2.Tensors) != len(h.Tensors) || len(h2.Metadata) != len(h.Metadata) {
			t.Fatalf("re-encoded header differs: %d tensors, %d metadata", len(h2.Tensors), len(h2.Metadata))
		}
		for i, ti := range h.Tensors {
			tj := h2.Tensors[i]
			if tj.Name != ti.Name || tj.DType != ti.DType || !tj.Shape.Equal(ti.Shape) || tj.Offset != ti.Offset || tj.Size != ti.Size {
				t.Fatalf("tensor %d: %+v after re-encoding, was %+v", i, tj, ti)
			}
		}
		for k, v := range h.Metadata {
			if h2.Metadata[k] != v {
				t.Fatalf("metadata %q: %q after re-encoding, was %q", k, h2.Metadata[k], v)
			}
		}
	})
}

// FuzzParseIndex: the index parser must never panic, and every shard name it
// accepts must be a plain file name.
func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"metadata":{"total_size":11},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}`))
	f.Add([]byte(`{"metadata":null,"weight_map":{},"x":[1,{"y":null}]}`))
	f.Add([]byte(`{"weight_map":{"a":"../x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, wm, err := parseIndex(b)
		if err != nil {
			return
		}
		for name, shard := range wm {
			if err := checkShardName(shard); err != nil {
				t.Fatalf("accepted shard %q for %q: %v", shard, name, err)
			}
		}
	})
}
