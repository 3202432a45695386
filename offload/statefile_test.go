package offload

import (
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// tearIO tears every write while tear is set: half the bytes, then an error.
type tearIO struct {
	RecordIO
	tear bool
}

func (t *tearIO) WriteAt(p []byte, off int64) (int, error) {
	if t.tear {
		n, _ := t.RecordIO.WriteAt(p[:len(p)/2], off)
		return n, errors.New("torn")
	}
	return t.RecordIO.WriteAt(p, off)
}

func putRecord(t *testing.T, s *StateFile, r int, v uint64, wantErr bool) {
	t.Helper()
	buf := AlignedBytes(s.SlotBytes())
	p := s.Payload(buf)
	for i := 0; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], v)
	}
	if err := s.Write(context.Background(), buf, r); (err != nil) != wantErr {
		t.Fatalf("write record %d = %d: %v", r, v, err)
	}
}

func getRecord(t *testing.T, s *StateFile, r int) uint64 {
	t.Helper()
	buf := AlignedBytes(s.SlotBytes())
	if err := s.Read(context.Background(), buf, r); err != nil {
		t.Fatalf("read record %d: %v", r, err)
	}
	p := s.Payload(buf)
	v := binary.LittleEndian.Uint64(p)
	for i := 0; i+8 <= len(p); i += 8 {
		if binary.LittleEndian.Uint64(p[i:]) != v {
			t.Fatalf("record %d mixes versions", r)
		}
	}
	return v
}

// TestStateFileTornWriteKeepsPrevious: a torn write leaves the previous
// version current, in the process and after reopening (a crash).
func TestStateFileTornWriteKeepsPrevious(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.bin")
	var tio *tearIO
	s, err := CreateStateFile(path, 3, 10000, func(r RecordIO) RecordIO { tio = &tearIO{RecordIO: r}; return tio })
	if err != nil {
		t.Fatal(err)
	}
	buf := AlignedBytes(s.SlotBytes())
	if err := s.Read(context.Background(), buf, 0); !errors.Is(err, ErrNoRecord) {
		t.Fatalf("unwritten record: %v", err)
	}
	putRecord(t, s, 0, 1, false)
	putRecord(t, s, 0, 2, false)
	putRecord(t, s, 1, 7, false)
	tio.tear = true
	putRecord(t, s, 0, 3, true)
	if v := getRecord(t, s, 0); v != 2 {
		t.Fatalf("after a torn write: %d, want 2", v)
	}
	putRecord(t, s, 0, 4, true) // tears the other slot's turn too
	s.Close()
	r, err := OpenStateFile(path, 3, 10000, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if v := getRecord(t, r, 0); v != 2 {
		t.Fatalf("reopened: %d, want 2", v)
	}
	if v := getRecord(t, r, 1); v != 7 {
		t.Fatalf("reopened record 1: %d, want 7", v)
	}
	if r.Written(2) {
		t.Fatal("record 2 was never written")
	}
	putRecord(t, r, 0, 5, false)
	if v := getRecord(t, r, 0); v != 5 {
		t.Fatalf("after reopening: %d, want 5", v)
	}
}

// TestStateCacheLFU: the least-hit record is evicted, a dirty victim is
// written back first, and decay lets a once-hot record go.
func TestStateCacheLFU(t *testing.T) {
	ctx := context.Background()
	s, err := CreateStateFile(filepath.Join(t.TempDir(), "state.bin"), 4, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for r := range 4 {
		putRecord(t, s, r, uint64(r), false)
	}
	c := NewStateCache(s, StateCacheConfig{Cap: 2, Beta: 0.01, Every: 1, Readers: 1})
	defer c.Close()
	use := func(r int, dirty bool) {
		p, err := c.Acquire(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if dirty {
			binary.LittleEndian.PutUint64(p, 100+uint64(r))
		}
		c.Release(r, dirty)
	}
	use(0, true)
	use(0, false)
	use(0, false)
	use(1, true)
	use(2, false) // evicts 1 (1 hit against 3), writing it back
	if st := c.Stats(); st.Misses != 3 || st.Hits != 2 || st.Evictions != 1 {
		t.Fatalf("stats %+v", st)
	}
	use(0, false)
	if st := c.Stats(); st.Hits != 3 {
		t.Fatalf("0 was evicted: %+v", st)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	buf := AlignedBytes(s.SlotBytes())
	for r, want := range []uint64{100, 101} {
		if err := s.Read(ctx, buf, r); err != nil || binary.LittleEndian.Uint64(s.Payload(buf)) != want {
			t.Fatalf("record %d on file: %v, want %d", r, err, want)
		}
	}
	c.Tick() // decay: 0's four hits become 0.04
	use(3, false)
	use(3, false) // 3 and 2 now beat 0
	use(1, false)
	if st := c.Stats(); st.Misses != 5 {
		t.Fatalf("after decay: %+v", st)
	}
}

// TestStateCacheConcurrent: goroutines updating disjoint records through a
// small cache with reads ahead, checked against a plain count per record
// (the slow twin) on the file after Flush. Run under -race by make test.
func TestStateCacheConcurrent(t *testing.T) {
	ctx := context.Background()
	const n, workers = 24, 3
	s, err := CreateStateFile(filepath.Join(t.TempDir(), "state.bin"), n, 5000, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for r := range n {
		putRecord(t, s, r, 0, false)
	}
	c := NewStateCache(s, StateCacheConfig{Cap: 6, Beta: 0.5, Every: 3, Readers: 2})
	defer c.Close()
	want := make([]uint64, n)
	var wg sync.WaitGroup
	var gen sync.Mutex
	g := uint64(0)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for range 300 {
				r := w + workers*rng.IntN(n/workers)
				gen.Lock()
				g++
				c.Prefetch(w+workers*rng.IntN(n/workers), g)
				gen.Unlock()
				p, err := c.Acquire(ctx, r)
				if err != nil {
					t.Error(err)
					return
				}
				v := binary.LittleEndian.Uint64(p) + 1
				for i := 0; i+8 <= len(p); i += 8 {
					binary.LittleEndian.PutUint64(p[i:], v)
				}
				want[r]++
				c.Release(r, true)
				if rng.IntN(10) == 0 {
					c.Tick()
				}
				if rng.IntN(20) == 0 {
					gen.Lock()
					c.DropAhead(g)
					gen.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	c.DropAhead(1 << 62)
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for r := range n {
		if v := getRecord(t, s, r); v != want[r] {
			t.Fatalf("record %d: %d on file, want %d", r, v, want[r])
		}
	}
	if st := c.Stats(); st.Evictions == 0 || st.WriteBacks == 0 {
		t.Fatalf("no evictions or write-backs: %+v", st)
	}
}

// FuzzOpenStateFile: whatever bytes a state file holds after a crash,
// OpenStateFile and Read never panic, and a record reads back only whole
// (its header and checksum match) or fails.
func FuzzOpenStateFile(f *testing.F) {
	f.Add([]byte{}, uint8(0))
	f.Add(make([]byte, 3*Align), uint8(1))
	f.Fuzz(func(t *testing.T, junk []byte, at uint8) {
		path := filepath.Join(t.TempDir(), "state.bin")
		s, err := CreateStateFile(path, 2, 100, nil)
		if err != nil {
			t.Fatal(err)
		}
		putRecord(t, s, 0, 5, false)
		putRecord(t, s, 1, 6, false)
		s.Close()
		fh, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fh.WriteAt(junk, int64(at)*64)
		fh.Close()
		r, err := OpenStateFile(path, 2, 100, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		buf := AlignedBytes(r.SlotBytes())
		for k := range 2 {
			if err := r.Read(context.Background(), buf, k); err == nil && binary.LittleEndian.Uint64(r.Payload(buf)) != uint64(5+k) {
				t.Fatalf("record %d read back as %d", k, binary.LittleEndian.Uint64(r.Payload(buf)))
			}
		}
	})
}

// powerIO models the device under a power loss: writes since the last
// Sync may not have reached the medium, and lose makes the worst of that
// happen (every such region garbled, as a half-finished write).
type powerIO struct {
	RecordIO
	dirty [][2]int64 // offset, length
}

func (p *powerIO) WriteAt(b []byte, off int64) (int, error) {
	p.dirty = append(p.dirty, [2]int64{off, int64(len(b))})
	return p.RecordIO.WriteAt(b, off)
}

func (p *powerIO) Sync() error {
	p.dirty = nil
	return p.RecordIO.Sync()
}

func (p *powerIO) lose(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, d := range p.dirty {
		junk := make([]byte, d[1])
		for i := range junk {
			junk[i] = 0xa5
		}
		if _, err := f.WriteAt(junk, d[0]); err != nil {
			t.Fatal(err)
		}
	}
}

// A record written twice since the last Sync keeps its synced version
// through a power loss: the second write, which would land on the synced
// slot, syncs first (the newer, synced version then survives).
func TestStateFileKeepsSyncedVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.bin")
	var pio *powerIO
	s, err := CreateStateFile(path, 2, 5000, func(r RecordIO) RecordIO { pio = &powerIO{RecordIO: r}; return pio })
	if err != nil {
		t.Fatal(err)
	}
	putRecord(t, s, 0, 1, false)
	putRecord(t, s, 1, 9, false)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	putRecord(t, s, 0, 2, false) // the other slot: no sync needed
	if n := s.syncs.Load(); n != 1 {
		t.Fatalf("%d syncs after a write to the free slot, want 1", n)
	}
	putRecord(t, s, 0, 3, false) // lands on version 1's slot: syncs version 2 first
	if n := s.syncs.Load(); n != 2 {
		t.Fatalf("%d syncs, want 2 (overwriting the synced slot must sync first)", n)
	}
	pio.lose(t, path)
	s.Close()
	r, err := OpenStateFile(path, 2, 5000, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if v := getRecord(t, r, 0); v != 2 {
		t.Fatalf("record 0 after a power loss: %d, want 2 (the last synced version)", v)
	}
	if v := getRecord(t, r, 1); v != 9 {
		t.Fatalf("record 1 after a power loss: %d, want 9", v)
	}
}

// TestStateCacheAcquireBlank: a blank acquisition of a record not in RAM
// reads nothing, and what the caller writes reaches the file; of a cached
// record it is an ordinary hit on the cached payload.
func TestStateCacheAcquireBlank(t *testing.T) {
	ctx := context.Background()
	s, err := CreateStateFile(filepath.Join(t.TempDir(), "state.bin"), 3, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := NewStateCache(s, StateCacheConfig{Cap: 2, Beta: 1, Every: 1, Readers: 1})
	defer c.Close()
	p, err := c.AcquireBlank(ctx, 0) // never written: a read would fail
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+8 <= len(p); i += 8 { // the whole payload, as a blank acquisition requires
		binary.LittleEndian.PutUint64(p[i:], 42)
	}
	c.Release(0, true)
	q, err := c.AcquireBlank(ctx, 0)
	if err != nil || binary.LittleEndian.Uint64(q) != 42 {
		t.Fatalf("cached record: %v, %d", err, binary.LittleEndian.Uint64(q))
	}
	c.Release(0, false)
	if st := c.Stats(); st.Blanks != 2 || st.Hits != 0 || st.Misses != 0 || st.ReadBytes != 0 {
		t.Fatalf("stats %+v", st)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if v := getRecord(t, s, 0); v != 42 {
		t.Fatalf("on file: %d, want 42", v)
	}
}

// slowWriteIO delays every write, so a write-back is in flight when a
// read ahead wants its buffer.
type slowWriteIO struct {
	RecordIO
	delay time.Duration
}

func (s *slowWriteIO) WriteAt(p []byte, off int64) (int, error) {
	time.Sleep(s.delay)
	return s.RecordIO.WriteAt(p, off)
}

// TestStateCacheReadAheadWaitsForWriteBack: a read ahead whose only
// possible victim is being written back (the update cycle's write-back,
// queued on release) waits for it instead of being dropped, so the
// Acquire after it is a hit.
func TestStateCacheReadAheadWaitsForWriteBack(t *testing.T) {
	ctx := context.Background()
	s, err := CreateStateFile(filepath.Join(t.TempDir(), "state.bin"), 2, 100, func(r RecordIO) RecordIO { return &slowWriteIO{RecordIO: r, delay: 100 * time.Millisecond} })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for r := range 2 {
		putRecord(t, s, r, uint64(r), false)
	}
	c := NewStateCache(s, StateCacheConfig{Cap: 1, Beta: 1, Every: 1, Readers: 1})
	defer c.Close()
	p, err := c.Acquire(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], 7)
	}
	c.Release(0, true) // queues its write-back (100 ms)
	time.Sleep(10 * time.Millisecond)
	c.Prefetch(1, 1)
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().Prefetches == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := c.Acquire(ctx, 1); err != nil {
		t.Fatal(err)
	}
	c.Release(1, false)
	if st := c.Stats(); st.Prefetches != 1 || st.Hits != 1 || st.Misses != 1 {
		t.Fatalf("stats %+v: the read ahead was dropped", st)
	}
	if v := getRecord(t, s, 0); v != 7 {
		t.Fatalf("record 0 on file: %d, want 7", v)
	}
}

// failWriteIO fails every write after the first n.
type failWriteIO struct {
	RecordIO
	mu sync.Mutex
	n  int
}

func (f *failWriteIO) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n <= 0 {
		time.Sleep(200 * time.Millisecond) // a slow failure: Close comes meanwhile
		return 0, errors.New("injected write failure")
	}
	f.n--
	return f.RecordIO.WriteAt(p, off)
}

// TestStateCacheCloseWithReadAheadBehindFailedWriteBack: a read ahead
// whose victim's write-back fails gives up, and Close returns (it hung
// when the read ahead went on waiting for a buffer).
func TestStateCacheCloseWithReadAheadBehindFailedWriteBack(t *testing.T) {
	ctx := context.Background()
	s, err := CreateStateFile(filepath.Join(t.TempDir(), "state.bin"), 2, 100, func(r RecordIO) RecordIO { return &failWriteIO{RecordIO: r, n: 2} })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for r := range 2 {
		putRecord(t, s, r, uint64(r), false) // the 2 writes that succeed
	}
	c := NewStateCache(s, StateCacheConfig{Cap: 1, Beta: 1, Every: 1, Readers: 1})
	if _, err := c.Acquire(ctx, 0); err != nil {
		t.Fatal(err)
	}
	c.Release(0, true) // its write-back fails, slowly
	c.Prefetch(1, 1)
	time.Sleep(50 * time.Millisecond) // the read ahead is now waiting on that write-back
	done := make(chan struct{})
	go func() { c.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return: a read ahead is stuck")
	}
}
