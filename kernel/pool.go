package kernel

import (
	"runtime"
	"sync"
)

// Pool is a persistent set of worker goroutines that run the parts of one
// parallel kernel call. Calls are serialised: a kernel that is itself running
// on a pool worker (nested parallelism) runs its parts inline.
type Pool struct {
	mu      sync.Mutex // one parallel region at a time
	workers int        // goroutines besides the caller
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
		for i := 0; i < parts; i++ {
			fn(i)
		}
		return
	}
	defer p.mu.Unlock()
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
	poolMu  sync.Mutex
	defPool = NewPool(runtime.NumCPU())
)

// SetThreads replaces the default pool with one of n threads (n < 1: the
// number of CPUs) and returns the previous thread count. Not safe to call
// while kernels run.
func SetThreads(n int) int {
	poolMu.Lock()
	defer poolMu.Unlock()
	prev := defPool.Threads()
	if n < 1 {
		n = runtime.NumCPU()
	}
	if n != prev {
		old := defPool
		defPool = NewPool(n)
		for _, c := range old.start {
			close(c)
		}
	}
	return prev
}

// Threads returns the default pool's thread count.
func Threads() int { return defPool.Threads() }

// parallel runs fn over parts on the default pool.
func parallel(parts int, fn func(part int)) { defPool.Run(parts, fn) }
