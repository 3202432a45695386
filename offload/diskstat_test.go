package offload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParseDiskStat(t *testing.T) {
	c, err := parseDiskStat(" 4233267   381064 4018921890 36245462   300165   132232 192630120  1071650        0  2252540 37377130   496198      773 110181152    58030    41122     1988\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := (DiskCounters{Reads: 4233267, ReadBytes: 4018921890 * 512, Busy: 2252540 * time.Millisecond}); c != want {
		t.Fatalf("got %+v, want %+v", c, want)
	}
	for _, bad := range []string{"", "1 2 3", "1 2 x 4 5 6 7 8 9 10", "1 2 3 4 5 6 7 8 9 -10",
		"0 0 18020000000000000 0 0 0 0 0 0 0", "0 0 0 0 0 0 0 0 0 9223372036854775807"} { // the last two overflow bytes, ns
		if _, err := parseDiskStat(bad); err == nil {
			t.Errorf("parseDiskStat(%q): no error", bad)
		}
	}
}

func FuzzParseDiskStat(f *testing.F) {
	f.Add("1 2 3 4 5 6 7 8 9 10 11")
	f.Add(" 4233267   381064 4018921890 36245462   300165   132232 192630120  1071650        0  2252540")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseDiskStat(s)
		if err == nil && (c.Reads < 0 || c.ReadBytes < 0 || c.Busy < 0) {
			t.Fatalf("negative counters %+v from %q", c, s)
		}
	})
}

// On a file of a real block device, an O_DIRECT read shows in the
// device's counters. Skipped where the temporary directory has no block
// device (tmpfs).
func TestDiskStatSeesReads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "blocks")
	data := pattern(64 * Align)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ds, err := OpenDiskStat(path)
	if errors.Is(err, ErrNoDiskStat) {
		t.Skipf("no disk stat: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	fs, err := OpenFileStore(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	if !fs.Direct() {
		t.Skipf("no O_DIRECT here: %s", fs.Note())
	}
	before, err := ds.Read()
	if err != nil {
		t.Fatal(err)
	}
	buf := alignedBuf(len(data))
	if err := fs.ReadAt(context.Background(), buf, 0); err != nil {
		t.Fatal(err)
	}
	after, err := ds.Read()
	if err != nil {
		t.Fatal(err)
	}
	// Other processes may read too: at least ours.
	if d := after.Sub(before); d.Reads < 1 || d.ReadBytes < int64(len(data)) {
		t.Fatalf("%s counted %+v for a %d-byte direct read", ds, d, len(data))
	}
	if _, err := OpenDiskStat(filepath.Join(dir, "missing")); err == nil || errors.Is(err, ErrNoDiskStat) {
		t.Fatalf("missing file: %v, want a stat error", err)
	}
}
