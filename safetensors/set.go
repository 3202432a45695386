package safetensors

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
)

// Set is a checkpoint that may span several files (shards), looked up by
// tensor name as one. Its methods have the same contracts as File's; views
// are valid until the Set is closed.
type Set struct {
	files []*File          // one per shard, in shard-name order
	owner map[string]*File // tensor name -> the shard holding it
	names []string         // sorted
	meta  map[string]string
}

// Location says where a tensor's bytes lie on disk, for readers that bypass
// the mapping (e.g. O_DIRECT into aligned buffers).
type Location struct {
	Path   string // the file holding the tensor
	Offset int64  // absolute file offset of its first byte
	Size   int64  // bytes
}

// OpenModel opens the checkpoint in directory dir: the shards named by
// IndexFile if dir has one, else ModelFile. An error wrapping
// fs.ErrNotExist says dir has neither.
func OpenModel(dir string) (*Set, error) {
	idx := filepath.Join(dir, IndexFile)
	_, err := os.Stat(idx)
	switch {
	case err == nil:
		return OpenIndex(idx)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	single := filepath.Join(dir, ModelFile)
	if _, err := os.Stat(single); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("safetensors: no %s or %s in %s: %w", ModelFile, IndexFile, dir, fs.ErrNotExist)
	}
	f, err := Open(single)
	if err != nil {
		return nil, err
	}
	s := &Set{files: []*File{f}, owner: make(map[string]*File, len(f.byName)), meta: f.Metadata()}
	for name := range f.byName {
		s.owner[name] = f
	}
	s.names = f.Names()
	return s, nil
}

// OpenIndex opens the sharded checkpoint described by the index file at
// path; shards are looked up in the index's directory. It checks that the
// index and the shards agree: every listed shard opens, every tensor is in
// the shard the index names, no tensor is in two shards, and no shard holds
// a tensor the index does not list. Errors wrap ErrIndex (or the shard's
// own error). The Set's Metadata is the index's, with non-string values as
// JSON text ("total_size" -> "3498640").
func OpenIndex(path string) (*Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	meta, weightMap, err := parseIndex(b)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	shardNames := slices.Sorted(maps.Values(weightMap))
	shardNames = slices.Compact(shardNames)
	s := &Set{owner: make(map[string]*File, len(weightMap)), meta: meta}
	dir := filepath.Dir(path)
	byShard := map[string]*File{}
	for _, sn := range shardNames {
		f, err := Open(filepath.Join(dir, sn))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("open %s: %w: shard %q: %w", path, ErrIndex, sn, err)
		}
		s.files = append(s.files, f)
		byShard[sn] = f
		for _, t := range f.hdr.Tensors {
			if other, dup := s.owner[t.Name]; dup {
				s.Close()
				return nil, fmt.Errorf("open %s: %w: tensor %q is in shards %s and %s", path, ErrIndex, t.Name, other.path, f.path)
			}
			if _, listed := weightMap[t.Name]; !listed {
				s.Close()
				return nil, fmt.Errorf("open %s: %w: shard %s holds tensor %q, which the index does not list", path, ErrIndex, f.path, t.Name)
			}
			s.owner[t.Name] = f
		}
	}
	for name, sn := range weightMap {
		if got := s.owner[name]; got != byShard[sn] {
			s.Close()
			if got == nil {
				return nil, fmt.Errorf("open %s: %w: tensor %q is not in its shard %s", path, ErrIndex, name, sn)
			}
			return nil, fmt.Errorf("open %s: %w: index puts tensor %q in %s, found in %s", path, ErrIndex, name, sn, got.path)
		}
	}
	s.names = slices.Sorted(maps.Keys(s.owner))
	return s, nil
}

// Shards returns the paths of the files in the set, in a new slice.
func (s *Set) Shards() []string {
	paths := make([]string, len(s.files))
	for i, f := range s.files {
		paths[i] = f.path
	}
	return paths
}

// Names returns every tensor name, sorted, in a new slice the caller owns.
func (s *Set) Names() []string { return slices.Clone(s.names) }

// Info returns the description of the named tensor (Offset relative to its
// shard's data buffer); its Shape is shared and read-only.
func (s *Set) Info(name string) (TensorInfo, bool) {
	f, ok := s.owner[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Info(name)
}

// Locate returns where the named tensor's bytes lie on disk.
func (s *Set) Locate(name string) (Location, bool) {
	f, ok := s.owner[name]
	if !ok {
		return Location{}, false
	}
	t, _ := f.Info(name)
	return Location{Path: f.path, Offset: f.hdr.DataStart + t.Offset, Size: t.Size}, true
}

// Metadata returns a copy of the checkpoint's metadata: the index's for a
// sharded checkpoint, the file's "__metadata__" for a single file; nil if
// none.
func (s *Set) Metadata() map[string]string { return maps.Clone(s.meta) }

// shard returns the file holding name.
func (s *Set) shard(name string) (*File, error) {
	f, ok := s.owner[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	return f, nil
}

// Bytes is File.Bytes on the shard holding name; valid until Close.
func (s *Set) Bytes(name string) ([]byte, error) {
	f, err := s.shard(name)
	if err != nil {
		return nil, err
	}
	return f.Bytes(name)
}

// F32 is File.F32 on the shard holding name; a view valid until Close, or a
// caller-owned copy if misaligned.
func (s *Set) F32(name string) ([]float32, error) {
	f, err := s.shard(name)
	if err != nil {
		return nil, err
	}
	return f.F32(name)
}

// U16 is File.U16 on the shard holding name; a view valid until Close, or a
// caller-owned copy if misaligned.
func (s *Set) U16(name string) ([]uint16, error) {
	f, err := s.shard(name)
	if err != nil {
		return nil, err
	}
	return f.U16(name)
}

// Close unmaps every shard; all views become invalid. Closing twice is a
// no-op.
func (s *Set) Close() error {
	var errs []error
	for _, f := range s.files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
