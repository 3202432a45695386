//go:build mpi

package dist

import (
	"runtime"
	"time"
)

// Polling knobs of the MPI thread. MPI moves nonblocking collectives
// only inside MPI calls, so the thread tests its outstanding requests
// without pause for a while after each step (every rank is likely in the
// collective, and the next step follows soon), and then pauses between
// tests for a share of the time waited so far. A rank waiting long for
// its peers (they compute) then costs a test and a wake-up a millisecond,
// not a core (about 8% of a core on the dev machine, where a timer
// wake-up costs ~30 us of CPU), and learns of completion late by at most
// 1/pollSleepDiv of its wait, and never more than pollSleepMax. The
// thread does not yield while it tests (runtime.Gosched on a locked
// thread is a thread switch, ~25 us on the dev machine): spins are short.
const (
	// pollSpin is how long the thread tests without pausing after a
	// request completed or an op arrived.
	pollSpin = 200 * time.Microsecond
	// pollSleepDiv: a pause is the time waited since then over
	// pollSleepDiv, bounded by pollSleepMin and pollSleepMax.
	pollSleepDiv = 16
	pollSleepMin = 20 * time.Microsecond
	// pollSleepMax is also the longest a new op waits for a pausing
	// thread to take it.
	pollSleepMax = 1 * time.Millisecond
	// finalizeWait is how long Close on the world Comm waits for
	// outstanding requests (abandoned ones whose ranks came late).
	finalizeWait = 2 * time.Second
)

// mpiServer is the one goroutine, locked to its OS thread, that makes every
// MPI call of the process (MPI_THREAD_FUNNELED: MPI is called only by the
// thread that started it, which a goroutine can only be sure of when
// locked). Callers hand it ops and wait on their completion; it posts
// each op's nonblocking calls and tests the outstanding requests of all
// ops in turn, so collectives on different communicators overlap. With
// nothing outstanding it blocks on the channel of new ops.
type mpiServer struct {
	submit chan *mpiOp
	exited chan struct{} // closed when the thread has finalized MPI (or failed to start)
	// active are the ops with a request outstanding, abandoned ones
	// (their caller's context ended) included.
	active []*mpiOp
}

// mpiOp is one operation for the MPI thread.
type mpiOp struct {
	// step makes the op's next MPI call, on the MPI thread: first when
	// the thread takes the op, then each time its request completes. It
	// returns wait = true when it posted a request in *o.req to wait for,
	// false when the op is finished with result err.
	step func() (wait bool, err error)
	// finalize makes the thread exit after this op.
	finalize bool
	// req is the request outstanding, an allocation of its own: cgo lets
	// C write only to Go memory without Go pointers.
	req *mpiRequest
	// pin holds the buffers MPI keeps using after the call that got them
	// returned; released when the op finishes (never, if it does not).
	pin  runtime.Pinner
	done chan error // buffered: the thread never waits on a caller
}

// newOp returns an op running step.
func newOp(step func() (bool, error)) *mpiOp {
	return &mpiOp{step: step, req: new(mpiRequest), done: make(chan error, 1)}
}

// startMPI starts the MPI thread and MPI on it.
func startMPI() (*mpiServer, error) {
	s := &mpiServer{submit: make(chan *mpiOp, 64), exited: make(chan struct{})}
	started := make(chan error, 1)
	go s.run(started)
	if err := <-started; err != nil {
		return nil, err
	}
	return s, nil
}

// run is the MPI thread.
func (s *mpiServer) run(started chan<- error) {
	runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
	defer close(s.exited)
	if err := mpiInit(); err != nil {
		started <- err
		return
	}
	started <- nil
	last := time.Now() // of the last completed request or new op
	for {
		if len(s.active) == 0 {
			if s.start(<-s.submit) {
				return
			}
			last = time.Now()
			continue
		}
		for took := true; took; {
			select {
			case o := <-s.submit:
				if s.start(o) {
					return
				}
				last = time.Now()
			default:
				took = false
			}
		}
		if s.poll() {
			last = time.Now()
			continue
		}
		waited := time.Since(last)
		if waited < pollSpin {
			continue
		}
		mpiSleep(min(max(waited/pollSleepDiv, pollSleepMin), pollSleepMax))
	}
}

// start runs o's first step and keeps o if it waits; it reports whether
// the thread must exit.
func (s *mpiServer) start(o *mpiOp) (exit bool) {
	if wait, err := o.step(); wait {
		s.active = append(s.active, o)
	} else {
		s.finish(o, err)
	}
	return o.finalize
}

// poll tests every outstanding request once, moving the ops whose request
// completed to their next step; it reports whether any completed.
func (s *mpiServer) poll() (progressed bool) {
	keep := s.active[:0]
	for _, o := range s.active {
		done, err := mpiTest(o.req)
		if err == nil && done {
			progressed = true
			var wait bool
			if wait, err = o.step(); wait {
				keep = append(keep, o)
				continue
			}
		} else if err == nil {
			keep = append(keep, o)
			continue
		}
		s.finish(o, err)
	}
	clear(s.active[len(keep):])
	s.active = keep
	return progressed
}

// finish hands o's result to its caller.
func (s *mpiServer) finish(o *mpiOp, err error) {
	o.pin.Unpin()
	o.done <- err
}

// drain polls the outstanding requests until none is left or wait has
// passed, and returns how many are left.
func (s *mpiServer) drain(wait time.Duration) int {
	for end := time.Now().Add(wait); len(s.active) > 0 && time.Now().Before(end); {
		if !s.poll() {
			mpiSleep(pollSleepMax)
		}
	}
	return len(s.active)
}
