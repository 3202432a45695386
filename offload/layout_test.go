package offload

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTestLayout writes two blocks of small made-up tensors.
func writeTestLayout(t *testing.T) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	data := map[string][]byte{}
	var blocks []BlockSpec
	for e := 0; e < 2; e++ {
		bs := BlockSpec{Layer: 3, Expert: e}
		for i, n := range []int{10, 5000, 7} {
			name := fmt.Sprintf("l3.e%d.t%d", e, i)
			data[name] = bytes.Repeat([]byte{byte(e*16 + i + 1)}, n)
			bs.Tensors = append(bs.Tensors, TensorRef{Name: name, DType: "U8", Shape: []int{n}, Bytes: int64(n)})
		}
		blocks = append(blocks, bs)
	}
	read := func(name string) ([]byte, error) { return data[name], nil }
	if _, err := WriteLayout(dir, blocks, read); err != nil {
		t.Fatal(err)
	}
	return dir, data
}

func TestLayoutRoundTrip(t *testing.T) {
	dir, data := writeTestLayout(t)
	l, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, ok := l.Block(3, 1)
	if !ok || b.Offset != 8192 || b.Bytes != 5017 || b.Padded() != 8192 {
		t.Fatalf("block (3,1) = %+v, want offset 8192, 5017 bytes padded to 8192", b)
	}
	if _, ok := l.Block(3, 2); ok {
		t.Fatal("found a block that was never written")
	}
	seen := 0
	err = l.ReadTensors(func(tr TensorRef, got []byte) error {
		seen++
		if !bytes.Equal(got, data[tr.Name]) {
			return fmt.Errorf("%s differs", tr.Name)
		}
		return nil
	})
	if err != nil || seen != 6 {
		t.Fatalf("read %d tensors: %v", seen, err)
	}
}

func TestOpenLayoutRejects(t *testing.T) {
	cases := []struct {
		name string
		edit func(idx *Index)
		want string
	}{
		{"format", func(i *Index) { i.Format = "v0" }, "format"},
		{"misaligned", func(i *Index) { i.Blocks[1].Offset = 100 }, "does not fit"},
		{"past end", func(i *Index) { i.Blocks[1].Bytes = 1 << 20 }, "does not fit"},
		{"duplicate", func(i *Index) { i.Blocks[1].Expert = 0 }, "listed twice"},
		{"tensor gap", func(i *Index) { i.Blocks[0].Tensors[1].Offset = 11 }, "tensor"},
		{"sizes disagree", func(i *Index) { i.Blocks[0].Bytes = 5016 }, "hold"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, _ := writeTestLayout(t)
			b, err := os.ReadFile(filepath.Join(dir, IndexFile))
			if err != nil {
				t.Fatal(err)
			}
			var idx Index
			if err := json.Unmarshal(b, &idx); err != nil {
				t.Fatal(err)
			}
			c.edit(&idx)
			b, _ = json.Marshal(idx)
			if err := os.WriteFile(filepath.Join(dir, IndexFile), b, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err = OpenLayout(dir)
			if !errors.Is(err, ErrLayout) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrLayout mentioning %q", err, c.want)
			}
		})
	}
}

func FuzzOpenLayout(f *testing.F) {
	f.Add([]byte(`{"format":"moesys-offload-v1","blocks":[{"layer":0,"expert":0,"offset":0,"bytes":3,"tensors":[{"name":"a","dtype":"U8","shape":[3],"offset":0,"bytes":3}]}]}`), int64(4096))
	f.Add([]byte(`{}`), int64(0))
	f.Fuzz(func(t *testing.T, idx []byte, size int64) {
		l, err := parseLayout(idx, size)
		if err != nil {
			return
		}
		// Accepted layouts describe blocks inside the file, in order.
		var end int64
		for _, b := range l.Blocks {
			if b.Offset < end || b.Offset+b.Padded() > size || b.Offset%Align != 0 {
				t.Fatalf("accepted block %+v in a %d-byte file", b, size)
			}
			end = b.Offset + b.Padded()
		}
	})
}
