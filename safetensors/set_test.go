package safetensors

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moesys/moesys/tensor"
)

// fixtureTensors loads every tensor of a fixture into memory.
func fixtureTensors(t *testing.T, dir string) []Tensor {
	t.Helper()
	f, err := Open(filepath.Join(fixtures, dir, ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ts []Tensor
	for _, info := range f.Tensors() {
		b, _ := f.Bytes(info.Name)
		ts = append(ts, Tensor{Name: info.Name, DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), b...)})
	}
	return ts
}

func TestShardedRoundTrip(t *testing.T) {
	ts := fixtureTensors(t, "qwen2_moe")
	dir := t.TempDir()
	const maxShard = 300 << 10
	if err := WriteSharded(dir, ts, map[string]string{"format": "pt"}, maxShard); err != nil {
		t.Fatal(err)
	}
	s, err := OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkTensors(t, s, ts)
	shards := s.Shards()
	if len(shards) < 3 {
		t.Fatalf("%d shards, want several", len(shards))
	}
	var total int64
	for i, p := range shards {
		if want := filepath.Join(dir, ShardName(i, len(shards))); p != want {
			t.Errorf("shard %d = %s, want %s", i, p, want)
		}
		f, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		var size int64
		for _, info := range f.Tensors() {
			size += info.Size
		}
		if size > maxShard && len(f.Names()) > 1 {
			t.Errorf("shard %s holds %d bytes in %d tensors, over the limit", p, size, len(f.Names()))
		}
		if f.Metadata()["format"] != "pt" {
			t.Errorf("shard metadata = %v", f.Metadata())
		}
		total += size
		f.Close()
	}
	if got := s.Metadata()["total_size"]; got != strings.TrimSpace(jsonText(total)) {
		t.Errorf("total_size = %q, want %d", got, total)
	}
	// Locate points at the same bytes on disk.
	for _, name := range []string{ts[0].Name, ts[len(ts)-1].Name} {
		loc, ok := s.Locate(name)
		if !ok {
			t.Fatalf("Locate(%s) failed", name)
		}
		raw, _ := os.ReadFile(loc.Path)
		b, _ := s.Bytes(name)
		if string(raw[loc.Offset:loc.Offset+loc.Size]) != string(b) {
			t.Errorf("Locate(%s) = %+v points elsewhere", name, loc)
		}
	}
	if _, ok := s.Locate("nope"); ok {
		t.Error("Locate of a missing tensor succeeded")
	}
	if _, err := s.F32("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("F32 of a missing tensor: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Bytes(ts[0].Name); !errors.Is(err, ErrClosed) {
		t.Errorf("Bytes after Close: %v", err)
	}
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestShardedOneShard(t *testing.T) {
	ts := fixtureTensors(t, "train_tiny")
	dir := t.TempDir()
	if err := WriteSharded(dir, ts, nil, 0); err != nil {
		t.Fatal(err)
	}
	s, err := OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkTensors(t, s, ts)
	if len(s.Shards()) != 1 || filepath.Base(s.Shards()[0]) != "model-00001-of-00001.safetensors" {
		t.Errorf("shards = %v", s.Shards())
	}
}

func TestOpenModelSingleFile(t *testing.T) {
	s, err := OpenModel(filepath.Join(fixtures, "mixtral_f32"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.Names()) != 127 || len(s.Shards()) != 1 || s.Metadata()["format"] != "pt" {
		t.Errorf("%d names, shards %v, metadata %v", len(s.Names()), s.Shards(), s.Metadata())
	}
	v, err := s.F32("model.norm.weight")
	if err != nil || len(v) != 64 {
		t.Errorf("F32: %d values, %v", len(v), err)
	}
	if _, err := s.U16("model.norm.weight"); !errors.Is(err, ErrDType) {
		t.Errorf("U16 of F32: %v", err)
	}
	if info, ok := s.Info("lm_head.weight"); !ok || info.DType != tensor.F32 || !info.Shape.Equal(tensor.Shape{256, 64}) {
		t.Errorf("Info = %+v, %v", info, ok)
	}
}

func TestOpenModelEmptyDir(t *testing.T) {
	_, err := OpenModel(t.TempDir())
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), IndexFile) {
		t.Fatalf("err = %v", err)
	}
}

// TestOpenIndexRejects breaks a valid two-shard checkpoint in one way each.
func TestOpenIndexRejects(t *testing.T) {
	a := Tensor{Name: "a", DType: tensor.F32, Shape: tensor.Shape{2}, Data: make([]byte, 8)}
	b := Tensor{Name: "b", DType: tensor.U8, Shape: tensor.Shape{3}, Data: make([]byte, 3)}
	const s1, s2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
	for _, c := range []struct {
		name  string
		index string
		shard map[string][]Tensor // shard files to write
		want  error
		msg   string
	}{
		{"missing shard", `{"weight_map":{"a":"` + s1 + `","b":"gone.safetensors"}}`, map[string][]Tensor{s1: {a}}, fs.ErrNotExist, `shard "gone.safetensors"`},
		{"tensor missing from its shard", `{"weight_map":{"a":"` + s1 + `","b":"` + s2 + `","c":"` + s2 + `"}}`, nil, ErrIndex, `tensor "c" is not in its shard`},
		{"tensor in the wrong shard", `{"weight_map":{"a":"` + s2 + `","b":"` + s1 + `"}}`, map[string][]Tensor{s1: {a}, s2: {b}}, ErrIndex, "index puts tensor"},
		{"tensor in two shards", `{"weight_map":{"a":"` + s1 + `","b":"` + s2 + `"}}`, map[string][]Tensor{s1: {a}, s2: {a, b}}, ErrIndex, `tensor "a" is in shards`},
		{"unlisted tensor", `{"weight_map":{"a":"` + s1 + `"}}`, map[string][]Tensor{s1: {a, b}}, ErrIndex, `holds tensor "b", which the index does not list`},
		{"path traversal", `{"weight_map":{"a":"../` + s1 + `"}}`, nil, ErrIndex, "not a plain file name"},
		{"absolute shard", `{"weight_map":{"a":"/etc/passwd"}}`, nil, ErrIndex, "not a plain file name"},
		{"empty shard name", `{"weight_map":{"a":""}}`, nil, ErrIndex, "invalid shard file name"},
		{"invalid JSON", `{"weight_map":`, nil, ErrIndex, "unexpected end of JSON"},
		{"missing weight_map", `{"metadata":{"total_size":11}}`, nil, ErrIndex, "missing weight_map"},
		{"weight_map not an object", `{"weight_map":["a"]}`, nil, ErrIndex, "want a JSON object"},
		{"shard not a string", `{"weight_map":{"a":1}}`, nil, ErrIndex, `tensor "a": want a string`},
		{"duplicate tensor", `{"weight_map":{"a":"` + s1 + `","a":"` + s2 + `"}}`, nil, ErrIndex, `duplicate key "a"`},
		{"duplicate weight_map", `{"weight_map":{},"weight_map":{}}`, nil, ErrIndex, `duplicate key "weight_map"`},
		{"not an object", `[]`, nil, ErrIndex, "want a JSON object"},
		{"trailing data", `{"weight_map":{}} {}`, nil, ErrIndex, "trailing data"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			shards := c.shard
			if shards == nil {
				shards = map[string][]Tensor{s1: {a}, s2: {b}}
			}
			for name, ts := range shards {
				if err := WriteFile(filepath.Join(dir, name), ts, nil); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(dir, IndexFile), []byte(c.index), 0o644); err != nil {
				t.Fatal(err)
			}
			s, err := OpenModel(dir)
			if err == nil {
				s.Close()
				t.Fatal("OpenModel succeeded")
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v, want %v mentioning %q", err, c.want, c.msg)
			}
		})
	}
}

func TestIndexMetadataAndUnknownKeys(t *testing.T) {
	meta, wm, err := parseIndex([]byte(`{"metadata":{"total_size":11,"s":"x","o":{"k": [1, 2]}},"extra":[{"x":1}],"weight_map":{"a":"m.safetensors"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if meta["total_size"] != "11" || meta["s"] != "x" || meta["o"] != `{"k":[1,2]}` || wm["a"] != "m.safetensors" {
		t.Errorf("meta %v weight map %v", meta, wm)
	}
}

func TestWriteIndexFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), IndexFile)
	idx := Index{Metadata: map[string]any{"total_size": 12}, WeightMap: map[string]string{"b<": "s2", "a": "s1"}}
	if err := WriteIndex(path, idx); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	want := "{\n  \"metadata\": {\n    \"total_size\": 12\n  },\n  \"weight_map\": {\n    \"a\": \"s1\",\n    \"b<\": \"s2\"\n  }\n}\n"
	if string(got) != want {
		t.Errorf("index =\n%s\nwant\n%s", got, want)
	}
	if err := WriteIndex(path, Index{WeightMap: map[string]string{"a": "../x"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad shard name: %v", err)
	}
}
