package offload

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DiskStat reads the kernel's I/O accounting of the block device that holds
// a file (Linux: /sys/dev/block/MAJOR:MINOR/stat): how many sectors were
// read and for how long the device had I/O in flight. Between two snapshots
// around a run, Busy / elapsed is the share of the run the device was
// working, whatever issued the reads, and ReadBytes / Busy its bandwidth
// at the queue depth the run kept, measured on the run's own reads: the
// kernel's view, independent of how the process scheduled its reads.
type DiskStat struct {
	path string // the stat file
	dev  string // MAJOR:MINOR, for messages
}

// DiskCounters is one snapshot of a DiskStat.
type DiskCounters struct {
	Reads     int64         // reads completed
	ReadBytes int64         // bytes read (sectors x 512)
	Busy      time.Duration // time with at least one I/O in flight (io_ticks)
}

// Sub returns c - o.
func (c DiskCounters) Sub(o DiskCounters) DiskCounters {
	return DiskCounters{Reads: c.Reads - o.Reads, ReadBytes: c.ReadBytes - o.ReadBytes, Busy: c.Busy - o.Busy}
}

// ErrNoDiskStat is returned when a file's device has no kernel I/O
// accounting (not Linux, or a filesystem without a block device: tmpfs,
// overlay, FUSE, network).
var ErrNoDiskStat = errors.New("offload: no block-device statistics for this file")

// OpenDiskStat finds the block device holding path and checks that its
// statistics can be read.
func OpenDiskStat(path string) (*DiskStat, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("offload: disk stat: %w", &os.PathError{Op: "stat", Path: path, Err: err})
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	d := &DiskStat{path: "/sys/dev/block/" + dev + "/stat", dev: dev}
	if _, err := d.Read(); err != nil {
		return nil, fmt.Errorf("%w: %s on device %s: %v", ErrNoDiskStat, path, dev, err)
	}
	return d, nil
}

// String names the device.
func (d *DiskStat) String() string { return "block device " + d.dev }

// Read takes a snapshot of the device's counters.
func (d *DiskStat) Read() (DiskCounters, error) {
	b, err := os.ReadFile(d.path)
	if err != nil {
		return DiskCounters{}, err
	}
	return parseDiskStat(string(b))
}

// parseDiskStat parses the fields of a block device's stat file
// (Documentation/block/stat.rst): reads completed, reads merged, sectors
// read, ms reading, writes ..., in flight, io_ticks (ms), ...
func parseDiskStat(s string) (DiskCounters, error) {
	f := strings.Fields(s)
	if len(f) < 10 {
		return DiskCounters{}, fmt.Errorf("disk stat: %d fields, want at least 10", len(f))
	}
	var v [10]int64
	// Fields used, and the most each may hold so that bytes (x 512) and
	// nanoseconds (x 1e6) stay in an int64.
	for i, most := range map[int]int64{0: math.MaxInt64, 2: math.MaxInt64 / 512, 9: math.MaxInt64 / int64(time.Millisecond)} {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil || n < 0 || n > most {
			return DiskCounters{}, fmt.Errorf("disk stat: field %d %q is not a count", i+1, f[i])
		}
		v[i] = n
	}
	return DiskCounters{Reads: v[0], ReadBytes: v[2] * 512, Busy: time.Duration(v[9]) * time.Millisecond}, nil
}
