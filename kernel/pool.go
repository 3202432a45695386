package kernel

import (
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Pool is a persistent set of worker goroutines that run the parts of one
// parallel kernel call. One call uses the workers at a time: a call made
// while they are busy — a kernel nested inside another kernel's part, or a
// second goroutine calling concurrently (e.g. two requests of a server) —
// runs all its parts inline on its own goroutine instead of waiting, so
// concurrent callers each get one thread and never deadlock.
//
// Workers wait for the next call spinning (yielding to any other runnable
// goroutine) for up to SpinWait before they park: a decode pass makes a few
// dozen parallel calls a few to a few dozen microseconds apart, and waking
// a parked worker costs 8-11 us on this VM (futex wake of an idle vCPU)
// against under 1 us for a spinning one (BenchmarkPoolForkJoin).
type Pool struct {
	mu      sync.Mutex // one parallel region at a time
	workers int        // goroutines besides the caller; immutable
	retired bool       // workers have exited (guarded by mu)
	w       []poolWorker
	pending atomic.Int32 // workers still running the current call's parts
	quit    atomic.Bool  // set with retired: workers exit at their next ticket
	// The caller parks here when its workers outlast SpinWait.
	callerSleeping atomic.Bool
	callerWake     chan struct{} // capacity 1
	fn             func(part int)
	parts          int
}

// poolWorker is one worker's start signal: ticket is bumped once per call
// it takes part in; a parked worker (sleeping) also gets a token on wake.
type poolWorker struct {
	ticket   atomic.Uint64
	sleeping atomic.Bool
	wake     chan struct{} // capacity 1
	_        [40]byte      // keep workers' tickets on separate cache lines
}

// SpinWait is how long an idle worker polls for the next call before it
// parks, and how long a caller polls for its workers before it parks.
const SpinWait = 100 * time.Microsecond

// NewPool starts a pool that runs up to threads parts at once (the caller
// counts as one thread). threads < 1 means 1.
func NewPool(threads int) *Pool {
	if threads < 1 {
		threads = 1
	}
	p := &Pool{workers: threads - 1, callerWake: make(chan struct{}, 1)}
	p.w = make([]poolWorker, p.workers)
	for w := range p.w {
		p.w[w].wake = make(chan struct{}, 1)
		go p.loop(w)
	}
	return p
}

func (p *Pool) loop(w int) {
	me := &p.w[w]
	var seen uint64
	for {
		seen = me.await(seen)
		if p.quit.Load() {
			return
		}
		// Worker w runs parts w+1, w+1+threads, ... (the caller runs part 0, ...).
		for i := w + 1; i < p.parts; i += p.workers + 1 {
			p.fn(i)
		}
		if p.pending.Add(-1) == 0 && p.callerSleeping.Load() {
			select {
			case p.callerWake <- struct{}{}:
			default: // a token is already waiting
			}
		}
	}
}

// await returns the worker's ticket once it differs from seen: polling for
// SpinWait, then parked until signalled.
func (me *poolWorker) await(seen uint64) uint64 {
	if t := spinUntil(func() bool { return me.ticket.Load() != seen }); t {
		return me.ticket.Load()
	}
	for {
		me.sleeping.Store(true)
		// A signal sent before sleeping was set bumped the ticket first:
		// look again before parking (the sender looks at sleeping after
		// bumping, so one of the two sees the other).
		if t := me.ticket.Load(); t != seen {
			me.sleeping.Store(false)
			return t
		}
		<-me.wake
		me.sleeping.Store(false)
		if t := me.ticket.Load(); t != seen {
			return t
		}
		// A stale token from an earlier signal: park again.
	}
}

// signal starts worker me on the current call.
func (me *poolWorker) signal() {
	me.ticket.Add(1)
	if me.sleeping.Load() {
		select {
		case me.wake <- struct{}{}:
		default: // a token is already waiting
		}
	}
}

// spinUntil polls cond for up to SpinWait, yielding the processor between
// polls to any other runnable goroutine, and reports whether cond held.
func spinUntil(cond func() bool) bool {
	var start time.Time
	for i := 0; ; i++ {
		if cond() {
			return true
		}
		if i&63 == 63 {
			if start.IsZero() {
				start = time.Now()
			} else if time.Since(start) > SpinWait {
				return false
			}
			runtime.Gosched()
		}
	}
}

// Threads returns the number of parts the pool runs at once.
func (p *Pool) Threads() int { return p.workers + 1 }

// Run calls fn(0) ... fn(parts-1), spreading them over the pool's threads,
// and returns when all have finished. If the pool is busy (a nested call from
// inside fn), the parts run inline on the calling goroutine.
func (p *Pool) Run(parts int, fn func(part int)) {
	if parts <= 1 || p.workers == 0 || !p.mu.TryLock() {
		runInline(parts, fn)
		return
	}
	defer p.mu.Unlock()
	if p.retired {
		runInline(parts, fn)
		return
	}
	p.fn, p.parts = fn, parts
	active := min(p.workers, parts-1)
	p.pending.Store(int32(active))
	for w := 0; w < active; w++ {
		p.w[w].signal()
	}
	for i := 0; i < parts; i += p.workers + 1 {
		fn(i)
	}
	if !spinUntil(func() bool { return p.pending.Load() == 0 }) {
		// A worker is still at it (a long part, or a processor taken by
		// other goroutines): park until the last one signals. The last
		// worker decrements pending before it looks at callerSleeping, so
		// either this check sees 0 or that worker sends; a stale token
		// from an earlier call only makes this loop look again.
		p.callerSleeping.Store(true)
		for p.pending.Load() != 0 {
			<-p.callerWake
		}
		p.callerSleeping.Store(false)
	}
	p.fn = nil
}

var (
	poolMu  sync.Mutex // serialises SetThreads
	defPool atomic.Pointer[Pool]
)

// ThreadsEnv names the environment variable that sets the default thread
// count (a positive integer; unset or invalid: one thread per CPU).
const ThreadsEnv = "MOESYS_THREADS"

func init() {
	n := runtime.NumCPU()
	if v, err := strconv.Atoi(os.Getenv(ThreadsEnv)); err == nil && v > 0 {
		n = v
	}
	defPool.Store(NewPool(n))
}

// SetThreads replaces the default pool with one of n threads (n < 1: the
// number of CPUs) and returns the previous thread count. Calls in flight on
// the old pool finish on it; its workers then exit.
func SetThreads(n int) int {
	poolMu.Lock()
	defer poolMu.Unlock()
	old := defPool.Load()
	prev := old.Threads()
	if n < 1 {
		n = runtime.NumCPU()
	}
	if n != prev {
		defPool.Store(NewPool(n))
		// Wait for a call in flight, then retire the old workers; a late
		// caller still holding the old pool finds it retired and runs inline.
		old.mu.Lock()
		old.retired = true
		old.quit.Store(true)
		for w := range old.w {
			old.w[w].signal()
		}
		old.mu.Unlock()
	}
	return prev
}

// Threads returns the default pool's thread count.
func Threads() int { return defPool.Load().Threads() }

// Parallel runs fn(0) ... fn(parts-1) on the default pool's threads and
// returns when all are done: coarse-grained parallelism for callers (one
// part per expert, say). Kernels called inside fn run single-threaded.
func Parallel(parts int, fn func(part int)) { defPool.Load().Run(parts, fn) }

// ParallelTake runs fn(0) ... fn(n-1) on the default pool's threads, each
// thread taking the next item from a shared counter as it comes free:
// items of uneven cost (experts with different row counts, tensors of
// different sizes) keep every thread busy to the end. As with Parallel,
// kernels called inside fn run single-threaded.
func ParallelTake(n int, fn func(i int)) {
	var next atomic.Int64
	Parallel(min(Threads(), n), func(int) {
		for {
			i := int(next.Add(1)) - 1
			if i >= n {
				return
			}
			fn(i)
		}
	})
}

// parallel runs fn over parts on the default pool.
func parallel(parts int, fn func(part int)) { defPool.Load().Run(parts, fn) }

func runInline(parts int, fn func(part int)) {
	for i := 0; i < parts; i++ {
		fn(i)
	}
}
