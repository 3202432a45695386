// Package atomicfile replaces files atomically: written to a hidden temporary
// file in the target's directory, fsynced, renamed over the target, and the
// directory fsynced, so a crash leaves either the old file or the complete
// new one. Checkpoints, indexes and every output moesys writes go through it.
//
//	err := atomicfile.WriteFile("out/config.json", data)
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
)

// Create creates a new empty file ".BASE.tmp-RANDOM" beside path, with
// mode 0666 before the umask (as os.Create), open for writing.
func Create(path string) (*os.File, error) {
	dir, base := filepath.Split(path)
	for range 100 {
		name := filepath.Join(dir, "."+base+".tmp-"+strconv.FormatUint(rand.Uint64(), 36))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, fmt.Errorf("create temporary file for %s: too many collisions", path)
}

// Commit makes the temporary file f the file at path: fsync, close, rename,
// fsync the directory. On failure before the rename, f is removed.
func Commit(f *os.File, path string) error {
	tmp := f.Name()
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// Discard closes and removes the temporary file f.
func Discard(f *os.File) error {
	f.Close()
	return os.Remove(f.Name())
}

// syncDir makes a rename in dir durable. File systems that cannot fsync a
// directory (EINVAL, as some network and FUSE file systems answer) are
// accepted: the rename has happened, only its durability is theirs.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be opened for sync there
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return err
}

// WriteFile replaces path with data.
func WriteFile(path string, data []byte) error {
	f, err := Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		Discard(f)
		return err
	}
	return Commit(f, path)
}

// SyncDir makes renames in dir durable (see syncDir).
func SyncDir(dir string) error { return syncDir(dir) }
