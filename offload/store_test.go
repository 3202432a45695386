package offload

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// alignedBuf returns n bytes starting on an Align boundary (Go heap memory
// does not move).
func alignedBuf(n int) []byte {
	b := make([]byte, n+Align)
	skip := (Align - int(uintptr(unsafe.Pointer(&b[0]))%Align)) % Align
	return b[skip : skip+n : skip+n]
}

// pattern returns n bytes that differ from block to block.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i/Align*7 + i%251)
	}
	return b
}

// writeFile writes data to a temporary file and returns its path.
func writeFile(t testing.TB, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), ExpertsFile)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMemStore(t *testing.T) {
	data := pattern(100)
	s := NewMemStore(data)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		off  int64
		n    int
		want error
	}{
		{"whole", context.Background(), 0, 100, nil},
		{"middle", context.Background(), 10, 20, nil},
		{"empty at end", context.Background(), 100, 0, nil},
		{"past end", context.Background(), 90, 20, ErrShortRead},
		{"beyond end", context.Background(), 200, 1, ErrShortRead},
		{"negative", context.Background(), -1, 1, ErrShortRead},
		{"cancelled", cancelled, 0, 1, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := make([]byte, tc.n)
			err := s.ReadAt(tc.ctx, dst, tc.off)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("ReadAt(%d bytes at %d) = %v, want %v", tc.n, tc.off, err, tc.want)
			}
			if err == nil && !bytes.Equal(dst, data[tc.off:tc.off+int64(tc.n)]) {
				t.Fatal("wrong bytes")
			}
		})
	}
	s.Close()
	if err := s.ReadAt(context.Background(), make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after Close: %v, want ErrClosed", err)
	}
}

// fileStoreCases checks a FileStore over a 3-block file.
func fileStoreCases(t *testing.T, s *FileStore, data []byte) {
	buf := alignedBuf(3 * Align)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		dst  []byte
		off  int64
		want error
		msg  string // in the error
	}{
		{"one block", context.Background(), buf[:Align], Align, nil, ""},
		{"whole file", context.Background(), buf, 0, nil, ""},
		{"empty", context.Background(), buf[:0], 0, nil, ""},
		{"past end", context.Background(), buf[:2*Align], 2 * Align, ErrShortRead, "read 8192 bytes at offset 8192: got 4096"},
		{"at end", context.Background(), buf[:Align], 3 * Align, ErrShortRead, "read 4096 bytes at offset 12288: got 0"},
		{"offset unaligned", context.Background(), buf[:Align], 512, ErrAlign, "at offset 512"},
		{"size unaligned", context.Background(), buf[:512], 0, ErrAlign, "read 512 bytes"},
		{"buffer unaligned", context.Background(), buf[512 : 512+Align], 0, ErrAlign, ""},
		{"cancelled", cancelled, buf[:Align], 0, context.Canceled, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clear(buf)
			err := s.ReadAt(tc.ctx, tc.dst, tc.off)
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("ReadAt = %v, want %v", err, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("error %q does not say %q", err, tc.msg)
			}
			if err == nil && !bytes.Equal(tc.dst, data[tc.off:tc.off+int64(len(tc.dst))]) {
				t.Fatal("wrong bytes")
			}
		})
	}
}

func TestFileStore(t *testing.T) {
	data := pattern(3 * Align)
	s, err := OpenFileStore(writeFile(t, data))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("direct %v, note %q", s.Direct(), s.Note())
	fileStoreCases(t, s, data)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.ReadAt(context.Background(), alignedBuf(Align), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after Close: %v, want ErrClosed", err)
	}
}

// TestFileStoreFallback opens through a filesystem that refuses O_DIRECT
// (as tmpfs before Linux 6.6 does): the store reads through the page cache
// and says so.
func TestFileStoreFallback(t *testing.T) {
	data := pattern(3 * Align)
	var flags []int
	noDirect := func(name string, flag int, perm os.FileMode) (*os.File, error) {
		flags = append(flags, flag)
		if flag&unix.O_DIRECT != 0 {
			return nil, &os.PathError{Op: "open", Path: name, Err: unix.EINVAL}
		}
		return os.OpenFile(name, flag, perm)
	}
	s, err := openFileStore(writeFile(t, data), noDirect)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Direct() || !strings.Contains(s.Note(), "O_DIRECT") || len(flags) != 2 || flags[1]&unix.O_DIRECT != 0 {
		t.Fatalf("direct %v, note %q, open flags %#x: want a buffered reopen and a note", s.Direct(), s.Note(), flags)
	}
	fileStoreCases(t, s, data) // alignment still enforced
}

func TestFileStoreOpenErrors(t *testing.T) {
	_, err := OpenFileStore(filepath.Join(t.TempDir(), "missing"))
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "offload: ") {
		t.Fatalf("open of a missing file: %v", err)
	}
	// A read error (a directory cannot be read) names the read.
	s, err := OpenFileStore(t.TempDir())
	if err != nil {
		t.Skipf("cannot open a directory here: %v", err)
	}
	defer s.Close()
	err = s.ReadAt(context.Background(), alignedBuf(2*Align), Align)
	if err == nil || !strings.Contains(err.Error(), "read 8192 bytes at offset 4096") || !errors.Is(err, unix.EISDIR) {
		t.Fatalf("read of a directory: %v, want EISDIR naming size and offset", err)
	}
}

// TestFileStoreLayout reads a written layout's blocks into slot-sized
// buffers: the padded read carries the block's tensors.
func TestFileStoreLayout(t *testing.T) {
	dir, data := writeTestLayout(t)
	l, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	if l.SlotBytes() != 2*Align {
		t.Fatalf("SlotBytes %d, want %d", l.SlotBytes(), 2*Align)
	}
	s, err := OpenFileStore(l.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	slot := alignedBuf(int(l.SlotBytes()))
	for _, b := range l.Blocks {
		if err := s.ReadAt(context.Background(), slot[:b.Padded()], b.Offset); err != nil {
			t.Fatal(err)
		}
		for _, tr := range b.Tensors {
			if !bytes.Equal(slot[tr.Offset:tr.Offset+tr.Bytes], data[tr.Name]) {
				t.Fatalf("%s differs", tr.Name)
			}
		}
	}
}

// TestFileStoreTmpfs runs the cases on /dev/shm, a tmpfs: before Linux 6.6
// it refuses O_DIRECT and the fallback is taken for real.
func TestFileStoreTmpfs(t *testing.T) {
	dir, err := os.MkdirTemp("/dev/shm", "offload-test-")
	if err != nil {
		t.Skipf("no tmpfs at /dev/shm: %v", err)
	}
	defer os.RemoveAll(dir)
	data := pattern(3 * Align)
	path := filepath.Join(dir, ExpertsFile)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Logf("tmpfs: direct %v, note %q", s.Direct(), s.Note())
	if s.Direct() == (s.Note() != "") {
		t.Fatalf("direct %v with note %q", s.Direct(), s.Note())
	}
	fileStoreCases(t, s, data)
}
