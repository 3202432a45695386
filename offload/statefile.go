package offload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/moesys/moesys/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// StateFile is the read-write SSD tier of a training run's sparse state:
// n records of one fixed payload size (one routed expert's fp32 master
// weights and AdamW moments), read and written whole with O_DIRECT so the
// RAM budget is real. Each record has two slots; a write goes to the slot
// not holding the record's current version and becomes current only once
// the write has returned, and every slot carries a header with a sequence
// number and a CRC-32C of its payload. So a write that fails or is torn
// (a crash, a full disk) leaves the previous version readable, and
// OpenStateFile after a crash finds each record's newest complete version.
// Reads and writes of different records are safe concurrently; a record
// must not be written while it is read or written (StateCache ensures it).
type StateFile struct {
	io      RecordIO
	path    string
	direct  bool
	n       int
	payload int   // bytes of payload per record
	slot    int64 // bytes per slot: header + payload, padded to Align

	mu  sync.Mutex
	cur []int8   // record -> its current slot (0, 1), -1: never written
	seq []uint64 // record -> sequence number of its current slot
	// durable is each record's slot that was current at the last Sync
	// (or found at open), -1: none. Write never overwrites it without a
	// Sync first, so a crash of the machine, not just of the process,
	// leaves every record's last synced version.
	durable []int8

	read, written atomic.Int64 // bytes
	syncs         atomic.Int64
	closed        atomic.Bool
}

// RecordIO is what a StateFile reads and writes through: *os.File, or a
// test wrapper that fails or tears writes (the fault injection of the
// crash tests).
type RecordIO interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Sync() error
	Close() error
}

// StateHeader is the bytes before each slot's payload: magic, record,
// sequence number, payload length, CRC-32C of the payload.
const StateHeader = 64

const stateMagic = 0x5441_5453_454f_4d // "MOESTAT" little-endian

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// State file errors.
var (
	// ErrNoRecord: the record was never written.
	ErrNoRecord = errors.New("offload: state record never written")
	// ErrCorrupt: a slot's header or checksum does not match.
	ErrCorrupt = errors.New("offload: state record corrupt")
)

// StateSlotBytes returns the bytes of one slot holding payload bytes: a
// StateFile's buffers are this long (and the file is 2n of them).
func StateSlotBytes(payload int) int64 {
	return (int64(StateHeader+payload) + Align - 1) / Align * Align
}

// CreateStateFile creates (or truncates) path for n records of payload
// bytes each, none written yet. wrap, when not nil, wraps the opened file
// (fault injection); pass nil otherwise.
func CreateStateFile(path string, n, payload int, wrap func(RecordIO) RecordIO) (*StateFile, error) {
	return openState(path, n, payload, wrap, true)
}

// OpenStateFile opens an existing state file of n records of payload bytes
// and finds each record's newest complete version (a slot whose header
// and checksum match), as after a crash.
func OpenStateFile(path string, n, payload int, wrap func(RecordIO) RecordIO) (*StateFile, error) {
	s, err := openState(path, n, payload, wrap, false)
	if err != nil {
		return nil, err
	}
	buf := AlignedBytes(int(s.slot))
	for r := 0; r < n; r++ {
		for k := int8(0); k < 2; k++ {
			if err := s.readSlot(buf, r, k); err != nil {
				continue // torn, never written or corrupt: the other slot decides
			}
			if q := binary.LittleEndian.Uint64(buf[16:]); s.cur[r] < 0 || q > s.seq[r] {
				s.cur[r], s.seq[r] = k, q
			}
		}
	}
	copy(s.durable, s.cur) // what survived is on the device
	return s, nil
}

func openState(path string, n, payload int, wrap func(RecordIO) RecordIO, create bool) (*StateFile, error) {
	if n <= 0 || payload <= 0 {
		panic(fmt.Sprintf("offload.StateFile: %d records of %d bytes", n, payload))
	}
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE | os.O_TRUNC
	}
	s := &StateFile{path: path, direct: true, n: n, payload: payload, slot: StateSlotBytes(payload),
		cur: make([]int8, n), seq: make([]uint64, n), durable: make([]int8, n)}
	f, err := os.OpenFile(path, flag|unix.O_DIRECT, 0o644)
	if errors.Is(err, unix.EINVAL) { // no O_DIRECT here (tmpfs): through the page cache
		s.direct = false
		f, err = os.OpenFile(path, flag, 0o644)
	}
	if err != nil {
		return nil, fmt.Errorf("offload: state file: %w", err)
	}
	if create {
		// The file's size and its directory entry made durable, so a
		// machine crash cannot take the file away under synced records.
		size := 2 * int64(n) * s.slot
		err := f.Truncate(size)
		if err == nil {
			// Reserve the blocks now, so a full disk is refused here, not
			// by a write-back in the middle of a run (filesystems without
			// fallocate keep the sparse file).
			if ferr := unix.Fallocate(int(f.Fd()), 0, 0, size); ferr != nil && !errors.Is(ferr, unix.EOPNOTSUPP) && !errors.Is(ferr, unix.ENOSYS) {
				err = fmt.Errorf("reserving %d bytes at %s: %w", size, path, ferr)
			}
		}
		if err == nil {
			err = f.Sync()
		}
		if err == nil {
			err = atomicfile.SyncDir(filepath.Dir(path))
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("offload: state file: %w", err)
		}
	}
	for i := range s.cur {
		s.cur[i], s.durable[i] = -1, -1
	}
	s.io = f
	if wrap != nil {
		s.io = wrap(f)
	}
	return s, nil
}

// AlignedBytes returns n zero bytes starting at a multiple of Align (an
// O_DIRECT buffer).
func AlignedBytes(n int) []byte {
	b := make([]byte, n+Align)
	o := int(-uintptr(unsafe.Pointer(&b[0])) & (Align - 1))
	return b[o : o+n : o+n]
}

// Direct reports whether reads and writes bypass the page cache.
func (s *StateFile) Direct() bool { return s.direct }

// Path is the file's path.
func (s *StateFile) Path() string { return s.path }

// SlotBytes is the length of the buffers Read and Write take.
func (s *StateFile) SlotBytes() int { return int(s.slot) }

// Payload returns the payload part of a slot buffer.
func (s *StateFile) Payload(buf []byte) []byte { return buf[StateHeader : StateHeader+s.payload] }

// Bytes returns the bytes read and written so far.
func (s *StateFile) Bytes() (read, written int64) { return s.read.Load(), s.written.Load() }

// Written reports whether record r has a version.
func (s *StateFile) Written(r int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur[r] >= 0
}

func (s *StateFile) off(r int, k int8) int64 { return (2*int64(r) + int64(k)) * s.slot }

// Read fills buf (SlotBytes long, Align-aligned: AlignedBytes) with record
// r's current version and checks it; the payload is Payload(buf).
func (s *StateFile) Read(ctx context.Context, buf []byte, r int) error {
	if err := s.check(ctx, buf, r); err != nil {
		return err
	}
	s.mu.Lock()
	k := s.cur[r]
	s.mu.Unlock()
	if k < 0 {
		return fmt.Errorf("offload: %s: record %d: %w", s.path, r, ErrNoRecord)
	}
	return s.readSlot(buf, r, k)
}

func (s *StateFile) readSlot(buf []byte, r int, k int8) error {
	off := s.off(r, k)
	n, err := s.io.ReadAt(buf, off)
	s.read.Add(int64(n))
	if n < len(buf) {
		if err == nil {
			err = ErrShortRead
		}
		return readErr(s.path, len(buf), off, err)
	}
	h := buf[:StateHeader]
	if binary.LittleEndian.Uint64(h) != stateMagic || binary.LittleEndian.Uint64(h[8:]) != uint64(r) ||
		binary.LittleEndian.Uint64(h[24:]) != uint64(s.payload) ||
		binary.LittleEndian.Uint32(h[32:]) != crc32.Checksum(s.Payload(buf), crcTable) {
		return fmt.Errorf("offload: %s: record %d slot %d: %w", s.path, r, k, ErrCorrupt)
	}
	return nil
}

// Write makes buf's payload record r's current version: it fills buf's
// header and writes the slot not holding the current version; only when
// that write has returned does the new version become current. A failed
// or torn write leaves the previous version current. When that slot holds
// the record's last synced version (the record was written since the
// last Sync), Write syncs first, so that version stays durable until a
// newer one is. One goroutine at a time writes a given record.
func (s *StateFile) Write(ctx context.Context, buf []byte, r int) error {
	if err := s.check(ctx, buf, r); err != nil {
		return err
	}
	s.mu.Lock()
	k, q := 1-s.cur[r], s.seq[r]+1
	if s.cur[r] < 0 {
		k = 0
	}
	overwritesDurable := s.cur[r] >= 0 && k == s.durable[r]
	s.mu.Unlock()
	if overwritesDurable {
		if err := s.Sync(); err != nil {
			return err
		}
	}
	h := buf[:StateHeader]
	clear(h)
	binary.LittleEndian.PutUint64(h, stateMagic)
	binary.LittleEndian.PutUint64(h[8:], uint64(r))
	binary.LittleEndian.PutUint64(h[16:], q)
	binary.LittleEndian.PutUint64(h[24:], uint64(s.payload))
	binary.LittleEndian.PutUint32(h[32:], crc32.Checksum(s.Payload(buf), crcTable))
	off := s.off(r, k)
	n, err := s.io.WriteAt(buf, off)
	s.written.Add(int64(n))
	if err == nil && n < len(buf) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(buf))
	}
	if err != nil {
		return fmt.Errorf("offload: %s: write record %d (%d bytes at offset %d): %w", s.path, r, len(buf), off, err)
	}
	s.mu.Lock()
	s.cur[r], s.seq[r] = k, q
	s.mu.Unlock()
	return nil
}

func (s *StateFile) check(ctx context.Context, buf []byte, r int) error {
	if s.closed.Load() {
		return fmt.Errorf("offload: %s: %w", s.path, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if r < 0 || r >= s.n {
		panic(fmt.Sprintf("offload.StateFile: record %d of %d", r, s.n))
	}
	if len(buf) != int(s.slot) || uintptr(unsafe.Pointer(&buf[0]))%Align != 0 {
		panic(fmt.Sprintf("offload.StateFile: buffer of %d bytes (want %d, %d-aligned)", len(buf), s.slot, Align))
	}
	return nil
}

// Sync makes the written versions durable (fdatasync).
func (s *StateFile) Sync() error {
	s.mu.Lock()
	now := slices.Clone(s.cur) // versions complete before the sync
	s.mu.Unlock()
	if err := s.io.Sync(); err != nil {
		return fmt.Errorf("offload: %s: sync: %w", s.path, err)
	}
	s.mu.Lock()
	copy(s.durable, now)
	s.mu.Unlock()
	s.syncs.Add(1)
	return nil
}

// Close closes the file; later calls fail with ErrClosed.
func (s *StateFile) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if err := s.io.Close(); err != nil {
		return fmt.Errorf("offload: %s: %w", s.path, err)
	}
	return nil
}
