package offload

import (
	"context"
	"sync"
	"time"
)

// DefaultDepth is the default number of reads a Reader keeps in flight:
// enough to keep an NVMe SSD's queues busy with expert-sized (MiB) reads
// without one reader monopolising a shared disk.
const DefaultDepth = 8

// ReaderConfig configures a Reader.
type ReaderConfig struct {
	Depth int // reads in flight at once; <= 0 means DefaultDepth
	// AheadDepth bounds the fetches ahead: one starts only while fewer
	// than AheadDepth reads of any kind are in flight (<= 0 or > Depth:
	// Depth). A scheduler that fetches the next block's experts ahead sets
	// it to one block's reads, so the slow tier is given one block at a
	// time, each read starting as the last ends, from the worker that
	// ended it; measured on this machine's virtual disk, two expert reads
	// at once delivered 0.6-0.9x the bytes per second of one at a time.
	AheadDepth int
	Stats      *Stats // counts reads and bytes; nil: the reader keeps its own
}

// Request is one read for a Reader: Dst filled from the store at Off, or,
// for memory the CPU cannot address, Fill called with the store.
type Request struct {
	Dst []byte // the reader's from Submit until the Pending is done
	Off int64
	// Fill, when set, replaces the read into Dst: the worker calls it with
	// the request's context and the reader's store, and it moves Size
	// bytes at Off to where they go (a DeviceMemory slot: a copy from the
	// store through the link to the device) and returns when they are
	// there. Dst is then nil.
	Fill func(ctx context.Context, store Store) error
	Size int // bytes Fill moves (Stats); len(Dst) when Fill is nil
	// Done, if set, is called once with the read's result when it
	// finishes, fails or is cancelled, before the Pending is done; from a
	// worker or a cancelling goroutine, so it must not block long. A fill
	// hands its slot over here: Done: slot.Filled.
	Done func(err error)
	// Ahead marks a fetch ahead of demand (a prefetch): it starts only
	// when no demand read is queued (compute waiting for its own experts
	// never waits behind reads for later layers) and fewer than
	// ReaderConfig.AheadDepth reads are in flight.
	Ahead bool
}

// size is the request's byte count.
func (r *Request) size() int {
	if r.Fill != nil {
		return r.Size
	}
	return len(r.Dst)
}

// Reader issues a Store's reads asynchronously, Depth at a time: demand
// reads in submission order, then fetches ahead (Request.Ahead) in
// submission order, while fewer than AheadDepth reads are in flight.
// Submitted requests wait in queues, which are unbounded: the caller
// bounds them by the buffers it owns (pool slots).
type Reader struct {
	store      Store
	stats      *Stats
	aheadDepth int

	mu     sync.Mutex
	cond   sync.Cond // signalled when a queue grows or the reader closes
	queues [2]fifo   // [0] demand reads, [1] fetches ahead
	closed bool
	wg     sync.WaitGroup
	// The store's busy time: reads in flight, and since when at least one
	// has been (under mu).
	inFlight  int
	busySince time.Time
}

// fifo is a queue of submitted reads.
type fifo []*Pending

// pop removes and returns the oldest read (q non-empty).
func (q *fifo) pop() *Pending {
	p := (*q)[0]
	(*q)[0] = nil
	*q = (*q)[1:]
	return p
}

// next returns the queue a worker may pop now, or nil: demands first, then
// fetches ahead while fewer than aheadDepth reads are in flight.
func (r *Reader) next() *fifo {
	if len(r.queues[0]) > 0 {
		return &r.queues[0]
	}
	if len(r.queues[1]) > 0 && r.inFlight < r.aheadDepth {
		return &r.queues[1]
	}
	return nil
}

// NewReader starts cfg.Depth workers reading from store. The reader
// borrows store: Close does not close it, and the store must outlive the
// reader.
func NewReader(store Store, cfg ReaderConfig) *Reader {
	if cfg.Depth <= 0 {
		cfg.Depth = DefaultDepth
	}
	if cfg.AheadDepth <= 0 || cfg.AheadDepth > cfg.Depth {
		cfg.AheadDepth = cfg.Depth
	}
	if cfg.Stats == nil {
		cfg.Stats = new(Stats)
	}
	r := &Reader{store: store, stats: cfg.Stats, aheadDepth: cfg.AheadDepth}
	r.cond.L = &r.mu
	r.wg.Add(cfg.Depth)
	for range cfg.Depth {
		go r.work()
	}
	return r
}

// Stats returns the reader's counters.
func (r *Reader) Stats() *Stats { return r.stats }

// Pending is a submitted read.
type Pending struct {
	req   Request
	ctx   context.Context // the submitter's, for the read itself
	stop  func() bool     // unregisters the cancellation callback
	state pendingState    // under Reader.mu
	done  chan struct{}
	err   error // set before done is closed
}

type pendingState uint8

const (
	queued pendingState = iota
	running
	finished
)

// Submit queues req and returns at once. The read runs under ctx: if ctx
// ends while req is queued, req is dropped and completes with ctx's error;
// once started it runs to the end (the store sees ctx only before it
// starts). After Close, Submit returns a Pending already failed with
// ErrClosed.
func (r *Reader) Submit(ctx context.Context, req Request) *Pending {
	p := &Pending{req: req, ctx: ctx, done: make(chan struct{})}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		p.finish(readErr("reader", req.size(), req.Off, ErrClosed))
		return p
	}
	if err := ctx.Err(); err != nil {
		r.mu.Unlock()
		p.finish(readErr("reader", req.size(), req.Off, err))
		return p
	}
	// Registered under the lock: the callback takes the lock, so it runs
	// after p is queued, and a worker sees p.stop set.
	p.stop = context.AfterFunc(ctx, func() { r.cancel(p) })
	q := &r.queues[0]
	if req.Ahead {
		q = &r.queues[1]
	}
	*q = append(*q, p)
	r.cond.Signal()
	r.mu.Unlock()
	return p
}

// cancel drops p if it is still queued.
func (r *Reader) cancel(p *Pending) {
	r.mu.Lock()
	if p.state != queued {
		r.mu.Unlock()
		return
	}
	p.state = finished // the worker that pops it skips it
	r.mu.Unlock()
	r.stats.ReadErrors.Add(1)
	p.finish(readErr("reader", p.req.size(), p.req.Off, p.ctx.Err()))
}

// work is one worker: it pops requests, demands first, and reads them
// until the reader closes.
func (r *Reader) work() {
	defer r.wg.Done()
	r.mu.Lock()
	for {
		q := r.next()
		for q == nil && !r.closed {
			r.cond.Wait()
			q = r.next()
		}
		if q == nil {
			r.mu.Unlock()
			return
		}
		p := q.pop()
		if p.state != queued {
			continue // cancelled while queued
		}
		p.state = running
		if r.inFlight == 0 {
			r.busySince = time.Now()
		}
		r.inFlight++
		r.stats.peakInFlight(int64(r.inFlight))
		r.mu.Unlock()

		p.stop()
		var err error
		if p.req.Fill != nil {
			err = p.req.Fill(p.ctx, r.store)
		} else {
			err = r.store.ReadAt(p.ctx, p.req.Dst, p.req.Off)
		}
		r.mu.Lock() // the read has ended: it is no longer in flight
		if r.inFlight--; r.inFlight == 0 {
			r.stats.BusyNanos.Add(int64(time.Since(r.busySince)))
		}
		if len(r.queues[1]) > 0 && len(r.queues[0]) == 0 {
			// A fetch ahead held back by AheadDepth may start now, on
			// an idle worker, while this one hands its read over.
			r.cond.Signal()
		}
		r.mu.Unlock()
		if err != nil {
			r.stats.ReadErrors.Add(1)
		} else {
			r.stats.Reads.Add(1)
			r.stats.BytesRead.Add(int64(p.req.size()))
		}
		p.finish(err)
		r.mu.Lock()
	}
}

// finish records err, calls the request's Done and wakes waiters.
func (p *Pending) finish(err error) {
	p.err = err
	if p.req.Done != nil {
		p.req.Done(err)
	}
	close(p.done)
}

// Close stops the reader: queued requests fail with ErrClosed, reads in
// flight complete, and Close returns when every worker has exited. Later
// Submits fail with ErrClosed. Closing twice is a no-op.
func (r *Reader) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		r.wg.Wait()
		return nil
	}
	r.closed = true
	var dropped []*Pending
	for i := range r.queues {
		for _, p := range r.queues[i] {
			if p.state == queued {
				p.state = finished
				dropped = append(dropped, p)
			}
		}
		r.queues[i] = nil
	}
	r.cond.Broadcast()
	r.mu.Unlock()
	for _, p := range dropped {
		p.stop()
		r.stats.ReadErrors.Add(1)
		p.finish(readErr("reader", p.req.size(), p.req.Off, ErrClosed))
	}
	r.wg.Wait()
	return nil
}

// Done is closed when the read has finished, failed or been cancelled:
// from then on the request's Dst is the caller's again.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Wait waits for the read and returns its result, or ctx's error if ctx
// ends first. An early return leaves the read running: Dst stays the
// reader's until Done is closed.
func (p *Pending) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
