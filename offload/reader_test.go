package offload

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gateStore is a fake Store whose reads block until the test lets them
// through, recording which offsets it saw and the most reads in flight.
type gateStore struct {
	Store
	gate chan struct{} // one receive per read

	mu       sync.Mutex
	seen     []int64
	inFlight int
	maxIn    int
	started  chan int64 // each read's offset as it starts, if not nil
}

func newGateStore(data []byte) *gateStore {
	return &gateStore{Store: NewMemStore(data), gate: make(chan struct{}), started: make(chan int64, 100)}
}

func (g *gateStore) ReadAt(ctx context.Context, dst []byte, off int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g.mu.Lock()
	g.seen = append(g.seen, off)
	g.inFlight++
	g.maxIn = max(g.maxIn, g.inFlight)
	g.mu.Unlock()
	g.started <- off
	<-g.gate
	g.mu.Lock()
	g.inFlight--
	g.mu.Unlock()
	return g.Store.ReadAt(ctx, dst, off)
}

func TestReaderReads(t *testing.T) {
	for _, depth := range []int{1, 3, 8} {
		data := pattern(64 * Align)
		stats := new(Stats)
		r := NewReader(SlowStore{NewMemStore(data), time.Millisecond}, ReaderConfig{Depth: depth, Stats: stats})
		var ps []*Pending
		dsts := make([][]byte, 64)
		var calls atomic.Int64
		for i := range dsts {
			dsts[i] = make([]byte, Align)
			ps = append(ps, r.Submit(context.Background(), Request{Dst: dsts[i], Off: int64(i * Align), Done: func(error) { calls.Add(1) }}))
		}
		for i, p := range ps {
			if err := p.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(dsts[i], data[i*Align:(i+1)*Align]) {
				t.Fatalf("depth %d: block %d differs", depth, i)
			}
		}
		r.Close()
		if c := stats.Snapshot(); calls.Load() != 64 || c.Reads != 64 || c.BytesRead != 64*Align || c.ReadErrors != 0 {
			t.Fatalf("depth %d: %d Done calls, counts %+v", depth, calls.Load(), c)
		}
	}
}

// TestReaderDepth: never more than Depth reads in flight, and Depth of
// them when enough are queued; reads start in submission order.
func TestReaderDepth(t *testing.T) {
	g := newGateStore(make([]byte, 20*Align))
	r := NewReader(g, ReaderConfig{Depth: 4})
	defer r.Close()
	var ps []*Pending
	for i := range 20 {
		ps = append(ps, r.Submit(context.Background(), Request{Dst: make([]byte, Align), Off: int64(i * Align)}))
	}
	for range 4 {
		<-g.started
	}
	select {
	case off := <-g.started:
		t.Fatalf("a fifth read (offset %d) started with 4 in flight", off)
	case <-time.After(20 * time.Millisecond):
	}
	close(g.gate)
	for _, p := range ps {
		if err := p.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if g.maxIn != 4 {
		t.Fatalf("at most %d reads in flight, want 4", g.maxIn)
	}
	if r.Stats().Snapshot().Reads != 20 {
		t.Fatalf("counts %+v", r.Stats().Snapshot())
	}
}

// TestReaderDemandFirst: queued demand reads start before queued fetches
// ahead, each kind in submission order; the counters see the reads in
// flight and the time the store was busy.
func TestReaderDemandFirst(t *testing.T) {
	g := newGateStore(make([]byte, 8*Align))
	r := NewReader(g, ReaderConfig{Depth: 1})
	defer r.Close()
	sub := func(off int64, ahead bool) *Pending {
		return r.Submit(context.Background(), Request{Dst: make([]byte, Align), Off: off * Align, Ahead: ahead})
	}
	var ps []*Pending
	ps = append(ps, sub(0, true)) // starts at once: nothing else is queued
	if off := <-g.started; off != 0 {
		t.Fatalf("first read at %d", off)
	}
	ps = append(ps, sub(1, true), sub(2, true), sub(3, false), sub(4, true), sub(5, false))
	start := time.Now()
	var order []int64
	for range 5 {
		time.Sleep(time.Millisecond)
		g.gate <- struct{}{} // the read in flight ends, the next starts
		order = append(order, <-g.started/Align)
	}
	g.gate <- struct{}{}
	for _, p := range ps {
		if err := p.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	busy := time.Since(start)
	if want := []int64{3, 5, 1, 2, 4}; !slices.Equal(order, want) {
		t.Fatalf("reads started in order %v, want %v (demands first)", order, want)
	}
	c := r.Stats().Snapshot()
	if c.PeakInFlight != 1 || c.Busy < 5*time.Millisecond || c.Busy > busy+time.Second {
		t.Fatalf("peak %d in flight, busy %v: want 1 and at least 5 ms", c.PeakInFlight, c.Busy)
	}
}

// TestReaderBusy: Busy is the union of the reads' times, not their sum,
// and PeakInFlight the reader's depth when enough are queued.
func TestReaderBusy(t *testing.T) {
	const delay = 20 * time.Millisecond
	r := NewReader(SlowStore{NewMemStore(make([]byte, 4*Align)), delay}, ReaderConfig{Depth: 4})
	start := time.Now()
	var ps []*Pending
	for i := range 4 {
		ps = append(ps, r.Submit(context.Background(), Request{Dst: make([]byte, Align), Off: int64(i * Align)}))
	}
	for _, p := range ps {
		if err := p.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	wall := time.Since(start)
	r.Close()
	c := r.Stats().Snapshot()
	if c.PeakInFlight < 2 || c.Busy < delay || c.Busy > wall {
		t.Fatalf("peak %d in flight, busy %v over %v of 4 concurrent %v reads: want >= 2 and between %v and the wall time", c.PeakInFlight, c.Busy, wall, delay, delay)
	}
}

// TestReaderCancel: cancelling a queued request completes it at once and
// the store never sees it; the read in flight completes.
func TestReaderCancel(t *testing.T) {
	data := pattern(3 * Align)
	g := newGateStore(data)
	r := NewReader(g, ReaderConfig{Depth: 1})
	defer r.Close()
	first := r.Submit(context.Background(), Request{Dst: make([]byte, Align), Off: 0})
	<-g.started
	ctx, cancel := context.WithCancel(context.Background())
	var doneErr error
	queued := r.Submit(ctx, Request{Dst: make([]byte, Align), Off: Align, Done: func(err error) { doneErr = err }})
	third := r.Submit(context.Background(), Request{Dst: make([]byte, Align), Off: 2 * Align})
	cancel()
	<-queued.Done()
	if err := queued.Wait(context.Background()); !errors.Is(err, context.Canceled) || !errors.Is(doneErr, context.Canceled) {
		t.Fatalf("cancelled request: Wait %v, Done got %v", err, doneErr)
	}
	close(g.gate)
	if err := first.Wait(context.Background()); err != nil {
		t.Fatalf("read in flight: %v", err)
	}
	if err := third.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(g.seen) != 2 || g.seen[1] != 2*Align {
		t.Fatalf("store saw offsets %v, want [0 %d]", g.seen, 2*Align)
	}
	// Submitting with a cancelled ctx fails at once.
	if err := r.Submit(ctx, Request{Dst: make([]byte, Align)}).Wait(context.Background()); !errors.Is(err, context.Canceled) {
		t.Fatalf("submit with a cancelled ctx: %v", err)
	}
	if c := r.Stats().Snapshot(); c.ReadErrors != 1 || c.Reads != 2 {
		t.Fatalf("counts %+v, want 2 reads and 1 cancelled", c)
	}
}

// TestReaderWaitCtx: a Wait whose ctx ends returns, the read goes on.
func TestReaderWaitCtx(t *testing.T) {
	g := newGateStore(make([]byte, Align))
	r := NewReader(g, ReaderConfig{Depth: 1})
	defer r.Close()
	p := r.Submit(context.Background(), Request{Dst: make([]byte, Align)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if err := p.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait: %v", err)
	}
	select {
	case <-p.Done():
		t.Fatal("read done while the store still blocks")
	default:
	}
	close(g.gate)
	if err := p.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestReaderClose: Close fails queued requests with ErrClosed, lets the
// read in flight finish, and waits for it.
func TestReaderClose(t *testing.T) {
	g := newGateStore(make([]byte, 2*Align))
	r := NewReader(g, ReaderConfig{Depth: 1})
	inFlight := r.Submit(context.Background(), Request{Dst: make([]byte, Align)})
	<-g.started
	queued := r.Submit(context.Background(), Request{Dst: make([]byte, Align), Off: Align})
	closed := make(chan struct{})
	go func() {
		r.Close()
		close(closed)
	}()
	if err := queued.Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("queued request: %v, want ErrClosed", err)
	}
	select {
	case <-closed:
		t.Fatal("Close returned with a read in flight")
	case <-time.After(10 * time.Millisecond):
	}
	close(g.gate)
	<-closed
	if err := inFlight.Wait(context.Background()); err != nil {
		t.Fatalf("read in flight: %v", err)
	}
	if err := r.Submit(context.Background(), Request{Dst: make([]byte, Align)}).Wait(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("submit after Close: %v", err)
	}
	r.Close() // twice: no-op
}

// TestReaderErrors: store errors reach Wait and Done, and are counted.
func TestReaderErrors(t *testing.T) {
	s := NewFaultStore(NewMemStore(make([]byte, Align)), FaultError, 2)
	r := NewReader(s, ReaderConfig{Depth: 2})
	defer r.Close()
	for i, want := range []error{nil, ErrInjected, nil} {
		var got error
		p := r.Submit(context.Background(), Request{Dst: make([]byte, Align), Done: func(err error) { got = err }})
		if err := p.Wait(context.Background()); !errors.Is(err, want) || (want == nil) != (err == nil) || got != err {
			t.Fatalf("read %d: Wait %v, Done %v, want %v", i+1, err, got, want)
		}
	}
	if c := r.Stats().Snapshot(); c.Reads != 2 || c.ReadErrors != 1 {
		t.Fatalf("counts %+v", c)
	}
}

// TestReaderAheadDepth: fetches ahead start only while fewer than
// AheadDepth reads are in flight, each as the last ends; demand reads do
// not wait for them.
func TestReaderAheadDepth(t *testing.T) {
	g := newGateStore(make([]byte, 8*Align))
	r := NewReader(g, ReaderConfig{Depth: 4, AheadDepth: 1})
	defer r.Close()
	sub := func(off int64, ahead bool) *Pending {
		return r.Submit(context.Background(), Request{Dst: make([]byte, Align), Off: off * Align, Ahead: ahead})
	}
	ps := []*Pending{sub(0, true), sub(1, true), sub(2, true)}
	if off := <-g.started; off != 0 {
		t.Fatalf("first read at %d", off/Align)
	}
	noStart := func(what string) {
		t.Helper()
		select {
		case off := <-g.started:
			t.Fatalf("%s: read %d started", what, off/Align)
		case <-time.After(20 * time.Millisecond):
		}
	}
	noStart("a second fetch ahead with one read in flight")
	ps = append(ps, sub(3, false)) // a demand starts beside it
	if off := <-g.started; off != 3*Align {
		t.Fatalf("demand read: started %d", off/Align)
	}
	g.gate <- struct{}{} // one of the two ends: still one in flight
	noStart("a fetch ahead with the other read in flight")
	g.gate <- struct{}{}
	if off := <-g.started; off != Align {
		t.Fatalf("after both ended: read %d started, want 1", off/Align)
	}
	noStart("a third fetch ahead beside the second")
	g.gate <- struct{}{}
	if off := <-g.started; off != 2*Align {
		t.Fatalf("read %d started, want 2", off/Align)
	}
	g.gate <- struct{}{}
	for _, p := range ps {
		if err := p.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if c := r.Stats().Snapshot(); c.PeakInFlight != 2 || c.Reads != 4 {
		t.Fatalf("counts %+v: want 4 reads, at most 2 in flight", c)
	}
}
