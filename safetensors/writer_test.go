package safetensors

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moesys/moesys/tensor"
)

var allDTypes = []tensor.DType{
	tensor.F64, tensor.F32, tensor.F16, tensor.BF16, tensor.I64, tensor.I32, tensor.I16, tensor.I8,
	tensor.U64, tensor.U32, tensor.U16, tensor.U8, tensor.Bool, tensor.F8E4M3, tensor.F8E5M2,
}

// randomTensors returns, for every dtype, tensors of odd shapes (so that a
// naive layout would misalign the next one), a scalar and an empty tensor.
func randomTensors(rng *rand.Rand) []Tensor {
	var ts []Tensor
	for _, d := range allDTypes {
		for i, shape := range []tensor.Shape{{3, 5}, {}, {0, 7}, {1 + rng.IntN(9)}} {
			data := make([]byte, shape.NumElements()*d.Size())
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			ts = append(ts, Tensor{Name: d.String() + "." + string(rune('a'+i)), DType: d, Shape: shape, Data: data})
		}
	}
	rng.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
	return ts
}

// checkTensors asserts that r holds exactly ts.
func checkTensors(t *testing.T, r interface {
	Names() []string
	Info(string) (TensorInfo, bool)
	Bytes(string) ([]byte, error)
}, ts []Tensor) {
	t.Helper()
	var want []string
	for _, x := range ts {
		want = append(want, x.Name)
		info, ok := r.Info(x.Name)
		if !ok || info.DType != x.DType || !info.Shape.Equal(x.Shape) || info.Size != int64(len(x.Data)) {
			t.Fatalf("%s: Info = %+v, %v; want %v %v", x.Name, info, ok, x.DType, x.Shape)
		}
		b, err := r.Bytes(x.Name)
		if err != nil || !bytes.Equal(b, x.Data) {
			t.Fatalf("%s: Bytes differ (%v)", x.Name, err)
		}
	}
	slices.Sort(want)
	if got := r.Names(); !slices.Equal(got, want) {
		t.Fatalf("Names = %v, want %v", got, want)
	}
}

func TestWriteFileRoundTripAllDTypes(t *testing.T) {
	ts := randomTensors(rand.New(rand.NewPCG(5, 6)))
	path := filepath.Join(t.TempDir(), "all.safetensors")
	meta := map[string]string{"format": "pt", "note": "every dtype"}
	if err := WriteFile(path, ts, meta); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	checkTensors(t, f, ts)
	if md := f.Metadata(); len(md) != 2 || md["note"] != "every dtype" {
		t.Errorf("metadata = %v", md)
	}
	if f.DataOffset()%8 != 0 {
		t.Errorf("data buffer starts at %d, not 8-aligned", f.DataOffset())
	}
	for _, info := range f.Tensors() {
		if info.Offset%int64(info.DType.Size()) != 0 {
			t.Errorf("%s at offset %d is misaligned", info.Name, info.Offset)
		}
	}
	// Typed views of the written data.
	for _, x := range ts {
		switch x.DType {
		case tensor.F32:
			v, err := f.F32(x.Name)
			if err != nil || len(v)*4 != len(x.Data) {
				t.Errorf("F32(%s): %d values, %v", x.Name, len(v), err)
			}
		case tensor.BF16, tensor.F16, tensor.U16:
			v, err := f.U16(x.Name)
			if err != nil || len(v)*2 != len(x.Data) {
				t.Errorf("U16(%s): %d values, %v", x.Name, len(v), err)
			}
		}
	}
	// No temporary files are left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(entries))
	}
}

func TestWriteFileNoMetadata(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.safetensors")
	if err := WriteFile(path, nil, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if want := "\x08\x00\x00\x00\x00\x00\x00\x00{}      "; string(b) != want {
		t.Errorf("empty file = %q, want %q", b, want)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Names()) != 0 || f.Metadata() != nil {
		t.Errorf("names %v metadata %v", f.Names(), f.Metadata())
	}
}

func TestWriteFileRejects(t *testing.T) {
	f32 := func(name string, shape tensor.Shape, n int) Tensor {
		return Tensor{Name: name, DType: tensor.F32, Shape: shape, Data: make([]byte, n)}
	}
	for _, c := range []struct {
		name string
		ts   []Tensor
		meta map[string]string
		msg  string
	}{
		{"short data", []Tensor{f32("a", tensor.Shape{2}, 7)}, nil, "needs 8 bytes, Data has 7"},
		{"long data", []Tensor{f32("a", tensor.Shape{2}, 9)}, nil, "Data has 9"},
		{"duplicate", []Tensor{f32("a", tensor.Shape{1}, 4), f32("a", tensor.Shape{1}, 4)}, nil, "duplicate"},
		{"reserved", []Tensor{f32("__metadata__", tensor.Shape{1}, 4)}, nil, "reserved"},
		{"no dtype", []Tensor{{Name: "a", Shape: tensor.Shape{1}, Data: []byte{0}}}, nil, "invalid dtype"},
		{"negative shape", []Tensor{f32("a", tensor.Shape{-1}, 0)}, nil, "overflows"},
		{"bad metadata", nil, map[string]string{"k": "\xff"}, "UTF-8"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "x.safetensors")
			err := WriteFile(path, c.ts, c.meta)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, c.msg)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("failed write left %d files", len(entries))
			}
		})
	}
}

// TestWriterStreaming writes tensors out of file order, in uneven chunks.
func TestWriterStreaming(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	ts := randomTensors(rng)
	infos := make([]TensorInfo, len(ts))
	for i, x := range ts {
		infos[i] = TensorInfo{Name: x.Name, DType: x.DType, Shape: x.Shape, Offset: 12345, Size: -1} // ignored
	}
	path := filepath.Join(t.TempDir(), "stream.safetensors")
	w, err := Create(path, infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if got := w.Tensors(); len(got) != len(ts) || got[0].Offset != 0 {
		t.Fatalf("Tensors = %+v", got)
	}
	for _, x := range ts { // shuffled, so not file order
		data := x.Data
		for len(data) > 0 {
			n := 1 + rng.IntN(len(data))
			if err := w.Write(x.Name, data[:n]); err != nil {
				t.Fatal(err)
			}
			data = data[n:]
		}
		if err := w.Write(x.Name, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file visible before Close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort after Close: %v", err)
	}
	if err := w.Write(ts[0].Name, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	checkTensors(t, f, ts)

	// Same bytes as the one-shot writer.
	path2 := filepath.Join(t.TempDir(), "oneshot.safetensors")
	if err := WriteFile(path2, ts, nil); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(path)
	b, _ := os.ReadFile(path2)
	if !bytes.Equal(a, b) {
		t.Error("streamed and one-shot files differ")
	}
}

func TestWriterErrorsLeaveTargetUntouched(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	old := []byte("previous checkpoint")
	if err := os.WriteFile(path, old, 0o644); err != nil {
		t.Fatal(err)
	}
	infos := []TensorInfo{{Name: "a", DType: tensor.F32, Shape: tensor.Shape{2}}, {Name: "b", DType: tensor.U8, Shape: tensor.Shape{3}}}
	check := func() {
		t.Helper()
		if got, _ := os.ReadFile(path); !bytes.Equal(got, old) {
			t.Fatalf("target changed: %q", got)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Fatalf("%d entries in the directory, want 1", len(entries))
		}
	}

	w, err := Create(path, infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write("a", make([]byte, 5)); err != nil {
		t.Fatal(err)
	}
	if err := w.Write("a", make([]byte, 6)); !errors.Is(err, ErrInvalid) {
		t.Errorf("oversized chunk: %v", err)
	}
	if err := w.Write("c", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown tensor: %v", err)
	}
	if err := w.Write("b", make([]byte, 3)); err != nil {
		t.Fatal(err)
	}
	// "a" has only 5 of 8 bytes.
	if err := w.Close(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), `"a" has 5 of its 8 bytes`) {
		t.Errorf("Close with an incomplete tensor: %v", err)
	}
	check()
	if err := w.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v", err)
	}

	w, err = Create(path, infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write("a", make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	check()
}
