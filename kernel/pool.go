package kernel

import (
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
)

// Pool is a persistent set of worker goroutines that run the parts of one
// parallel kernel call. One call uses the workers at a time: a call made
// while they are busy — a kernel nested inside another kernel's part, or a
// second goroutine calling concurrently (e.g. two requests of a server) —
// runs all its parts inline on its own goroutine instead of waiting, so
// concurrent callers each get one thread and never deadlock.
type Pool struct {
	mu      sync.Mutex // one parallel region at a time
	workers int        // goroutines besides the caller; immutable
	retired bool       // workers have exited (guarded by mu)
	start   []chan struct{}
	done    sync.WaitGroup
	fn      func(part int)
	parts   int
}

// NewPool starts a pool that runs up to threads parts at once (the caller
// counts as one thread). threads < 1 means 1.
func NewPool(threads int) *Pool {
	if threads < 1 {
		threads = 1
	}
	p := &Pool{workers: threads - 1}
	p.start = make([]chan struct{}, p.workers)
	for w := range p.start {
		p.start[w] = make(chan struct{})
		go p.loop(w)
	}
	return p
}

func (p *Pool) loop(w int) {
	for range p.start[w] {
		// Worker w runs parts w+1, w+1+threads, ... (the caller runs part 0, ...).
		for i := w + 1; i < p.parts; i += p.workers + 1 {
			p.fn(i)
		}
		p.done.Done()
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
	p.done.Add(active)
	for w := 0; w < active; w++ {
		p.start[w] <- struct{}{}
	}
	for i := 0; i < parts; i += p.workers + 1 {
		fn(i)
	}
	p.done.Wait()
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
		for _, c := range old.start {
			close(c)
		}
		old.retired = true
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

// parallel runs fn over parts on the default pool.
func parallel(parts int, fn func(part int)) { defPool.Load().Run(parts, fn) }

func runInline(parts int, fn func(part int)) {
	for i := 0; i < parts; i++ {
		fn(i)
	}
}
