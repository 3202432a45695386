//go:build mpi

package dist

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"
)

// mpiStarted is set by the first InitMPI.
var mpiStarted atomic.Bool

// MPIAvailable reports whether this binary was built with the MPI backend
// (build tag mpi).
func MPIAvailable() bool { return true }

// InitMPI starts MPI and returns this process' rank of MPI_COMM_WORLD.
// Call it once, in a process started by mpirun (see UnderMPI); a second
// call returns an error. Close the returned Comm at the end of the job: it
// calls MPI_Finalize.
//
// Threading: one goroutine, locked to an OS thread, starts MPI
// (MPI_THREAD_FUNNELED) and makes every MPI call of the process; the
// Comms' methods hand it their collectives and wait. It posts nonblocking
// collectives (MPI_Iallreduce, MPI_Ialltoallv, ...) and tests them in turn,
// so collectives on different Comms (those Split makes) overlap; it pauses
// between tests while waiting long (see pollSpin). Every collective is
// nonblocking, even when it is the only one: MPI does not match a
// blocking collective with a nonblocking one, so the choice would have to
// be the same on every rank, which their own states do not ensure; and a
// blocking call would keep the MPI thread from posting a collective of
// another Comm that a peer needs first (the Concurrent conformance case
// deadlocks). Open MPI's nonblocking AllReduce is as fast as its blocking
// one once libnbc uses Rabenseifner's algorithm, which InitMPI selects
// (see m_init).
//
// Checks: before its data, each collective sends every rank a small header
// (one MPI_Ialltoall of 40 bytes per rank): the collective, its lengths and
// root, and whether the sender's own arguments are valid. So, as with the
// local backend, ranks whose arguments disagree all get ErrMismatch and
// stay in step, and a rank whose AllToAllV receive counts disagree with
// what the others send gets ErrMismatch alone (it receives the data into
// scratch). Counts are MPI ints: a collective past 2^31-1 elements (bytes
// for AllToAllV's total, AllGather and Broadcast) fails with ErrMismatch.
//
// Sums: AllReduce and ReduceScatter sum with MPI_SUM over MPI_FLOAT in
// MPI's own order, which is not rank order. With two ranks a+b == b+a
// exactly, so the results equal the local backend's; with more ranks they
// may differ from its rank-order sums by rounding.
//
// Cancellation: a collective whose context ends (or whose timeout, from
// MOESYS_COMM_TIMEOUT as a Go duration such as "10m", runs out) while it
// waits returns an error wrapping ErrBroken, and its Comm is unusable
// afterwards. MPI cannot withdraw a posted collective, so the other ranks
// are not told: they wait until their own contexts end. The abandoned
// request stays posted, its buffers in use by MPI (do not reuse them),
// and Close on the world Comm does not call MPI_Finalize, which waits for
// the other processes, while it is outstanding: the caller should exit
// non-zero, and mpirun then stops the job.
//
// Split and NodeOf make a blocking MPI call (MPI_Comm_split,
// MPI_Comm_split_type) once every rank has entered them; two of them on
// different Comms of one process must not run at the same time.
func InitMPI() (Comm, error) {
	if !mpiStarted.CompareAndSwap(false, true) {
		return nil, errors.New("dist: InitMPI: MPI is started once per process")
	}
	timeout, err := envTimeout()
	if err != nil {
		return nil, err
	}
	s, err := startMPI()
	if err != nil {
		return nil, fmt.Errorf("dist: InitMPI: %w", err)
	}
	c := &mpiComm{s: s, world: true, timeout: timeout}
	if err := s.call(func() error { return c.attach(mpiWorld()) }); err != nil {
		return nil, fmt.Errorf("dist: InitMPI: %w", err)
	}
	return c, nil
}

// call runs f on the MPI thread and returns its error.
func (s *mpiServer) call(f func() error) error {
	o := newOp(func() (bool, error) { return false, f() })
	select {
	case s.submit <- o:
	case <-s.exited:
		return ErrClosed
	}
	select {
	case err := <-o.done:
		return err
	case <-s.exited:
		return ErrClosed
	}
}

// mpiComm is one rank of an MPI communicator.
type mpiComm struct {
	s          *mpiServer
	h          mpiHandle
	rank, size int
	world      bool          // MPI_COMM_WORLD: Close finalizes MPI
	timeout    time.Duration // per collective; 0: none
	broken     atomic.Bool
	closed     atomic.Bool
	// The headers this rank sends to and receives from every rank
	// (size x headerWords); a Comm runs one collective at a time.
	hdrOut, hdrIn []int64
}

// attach makes c the Comm of h; on the MPI thread.
func (c *mpiComm) attach(h mpiHandle) error {
	r, n, err := mpiRankSize(h)
	if err != nil {
		return err
	}
	c.h, c.rank, c.size = h, r, n
	c.hdrOut = make([]int64, n*headerWords)
	c.hdrIn = make([]int64, n*headerWords)
	return nil
}

func (c *mpiComm) Rank() int { return c.rank }
func (c *mpiComm) Size() int { return c.size }

// usable returns why c cannot run a collective, or nil.
func (c *mpiComm) usable() error {
	switch {
	case c.closed.Load():
		return ErrClosed
	case c.broken.Load():
		return ErrBroken
	}
	return nil
}

// dataStep posts a collective's data call for o (into *o.req, pinning in
// o.pin what it makes for MPI) on the MPI thread once the ranks agree,
// given the headers they sent (got[q] from rank q). It returns whether it
// posted a request to wait for, the collective's outcome once that
// completes (a mismatch found on this rank alone), and err if the call
// failed.
type dataStep func(o *mpiOp, got []header) (wait bool, outcome, err error)

// collective runs one collective: the header exchange (h, with
// sendCounts[q] as the count for rank q when not nil), the agreement
// check, then data (nil: the agreement is all). own is this rank's
// argument error, found before (h.bad is set with it). bufs are the data
// buffers MPI uses after the call that gets them returns.
func (c *mpiComm) collective(ctx context.Context, h header, sendCounts []int, own error, data dataStep, bufs ...unsafe.Pointer) error {
	if err := c.usable(); err != nil {
		return err
	}
	h.bad = own != nil
	for q := range c.size {
		if sendCounts != nil {
			h.count = int64(sendCounts[q])
		}
		h.put(c.hdrOut[q*headerWords:])
	}
	stage := 0
	var outcome error
	o := newOp(nil)
	o.step = func() (bool, error) {
		stage++
		switch stage {
		case 1:
			err := mpiIalltoallInt64(c.hdrOut, c.hdrIn, headerWords, c.h, o.req)
			return err == nil, err
		case 2:
			got := make([]header, c.size)
			for q := range got {
				got[q] = getHeader(c.hdrIn[q*headerWords:])
			}
			if own != nil {
				return false, own
			}
			if err := agree(c.rank, got); err != nil || data == nil {
				return false, err
			}
			wait, out, err := data(o, got)
			outcome = out
			return wait && err == nil, err
		}
		return false, outcome
	}
	o.pin.Pin(&c.hdrOut[0])
	o.pin.Pin(&c.hdrIn[0])
	for _, b := range bufs {
		if b != nil {
			o.pin.Pin(b)
		}
	}
	return c.do(ctx, o)
}

// do hands o to the MPI thread and waits for it, at most until ctx ends.
func (c *mpiComm) do(ctx context.Context, o *mpiOp) error {
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		// Arriving with the context ended leaves the others waiting.
		o.pin.Unpin()
		c.broken.Store(true)
		return errors.Join(ErrBroken, err)
	}
	select {
	case c.s.submit <- o:
	case <-c.s.exited:
		o.pin.Unpin()
		return ErrClosed
	}
	select {
	case err := <-o.done:
		return c.outcome(err)
	case <-c.s.exited:
		return ErrClosed
	case <-ctx.Done():
		select {
		case err := <-o.done:
			return c.outcome(err)
		default:
		}
		c.broken.Store(true)
		return errors.Join(ErrBroken, ctx.Err())
	}
}

// outcome is the error a collective returns for the MPI thread's err: a
// mismatch leaves the ranks in step; a failed MPI call breaks c.
func (c *mpiComm) outcome(err error) error {
	if err == nil || errors.Is(err, ErrMismatch) {
		return err
	}
	c.broken.Store(true)
	return fmt.Errorf("%w: %w", ErrBroken, err)
}

// tooLong is the argument error of a collective past MPI's int counts.
func tooLong(op opcode, n int) error {
	return fmt.Errorf("%w: %v of %d elements: MPI counts stop at %d", ErrMismatch, op, n, maxCount)
}

func (c *mpiComm) AllReduce(ctx context.Context, buf []float32) error {
	var own error
	if len(buf) > maxCount {
		own = tooLong(opAllReduce, len(buf))
	}
	return c.collective(ctx, header{op: opAllReduce, n: int64(len(buf))}, nil, own,
		func(o *mpiOp, _ []header) (bool, error, error) {
			if len(buf) == 0 {
				return false, nil, nil
			}
			return true, nil, mpiIallreduce(buf, c.h, o.req)
		}, ptr(buf))
}

func (c *mpiComm) AllGather(ctx context.Context, send, recv []byte) error {
	n := len(send)
	var own error
	switch {
	case len(recv) < c.size*n:
		own = fmt.Errorf("%w: AllGather of %d bytes from %d ranks into %d", ErrMismatch, n, c.size, len(recv))
	case c.size*n > maxCount:
		own = tooLong(opAllGather, c.size*n)
	}
	return c.collective(ctx, header{op: opAllGather, n: int64(n)}, nil, own,
		func(o *mpiOp, _ []header) (bool, error, error) {
			if n == 0 {
				return false, nil, nil
			}
			return true, nil, mpiIallgather(send, recv[:c.size*n], c.h, o.req)
		}, ptr(send), ptr(recv))
}

func (c *mpiComm) ReduceScatter(ctx context.Context, send, recv []float32) error {
	n := len(send) / c.size
	var own error
	switch {
	case len(send)%c.size != 0 || len(recv) < n:
		own = fmt.Errorf("%w: ReduceScatter of %d elements over %d ranks into %d", ErrMismatch, len(send), c.size, len(recv))
	case len(send) > maxCount:
		own = tooLong(opReduceScatter, len(send))
	}
	return c.collective(ctx, header{op: opReduceScatter, n: int64(len(send))}, nil, own,
		func(o *mpiOp, _ []header) (bool, error, error) {
			if n == 0 {
				return false, nil, nil
			}
			return true, nil, mpiIreduceScatter(send, recv[:n], n, c.h, o.req)
		}, ptr(send), ptr(recv))
}

func (c *mpiComm) AllToAllV(ctx context.Context, send []byte, sendCounts []int, recv []byte, recvCounts []int) error {
	own := checkCounts(c.size, send, sendCounts, recv, recvCounts)
	if own == nil {
		ns, nr := 0, 0
		for r := range c.size {
			ns += sendCounts[r]
			nr += recvCounts[r]
		}
		if ns > maxCount || nr > maxCount {
			own = tooLong(opAllToAllV, max(ns, nr))
		}
	}
	hdrCounts := sendCounts
	if own != nil {
		hdrCounts = nil
	}
	data := func(o *mpiOp, got []header) (bool, error, error) {
		sent, mismatch := agreeCounts(c.rank, got, recvCounts)
		into, rcounts := recv, recvCounts
		if mismatch != nil {
			// Receive what the others send, into scratch, so that they
			// finish; this rank alone fails.
			total := 0
			for _, n := range sent {
				total += n
			}
			into, rcounts = make([]byte, total), sent
		}
		sc, sd := mpiCounts(c.size), mpiCounts(c.size)
		rc, rd := mpiCounts(c.size), mpiCounts(c.size)
		so, ro := 0, 0
		for q := range c.size {
			sc[q], sd[q] = cInt(sendCounts[q]), cInt(so)
			rc[q], rd[q] = cInt(rcounts[q]), cInt(ro)
			so += sendCounts[q]
			ro += rcounts[q]
		}
		for _, p := range []unsafe.Pointer{ptr(into), ptr(sc), ptr(sd), ptr(rc), ptr(rd)} {
			if p != nil {
				o.pin.Pin(p)
			}
		}
		return true, mismatch, mpiIalltoallv(send, sc, sd, into, rc, rd, c.h, o.req)
	}
	return c.collective(ctx, header{op: opAllToAllV}, hdrCounts, own, data, ptr(send), ptr(recv))
}

func (c *mpiComm) Broadcast(ctx context.Context, buf []byte, root int) error {
	var own error
	if len(buf) > maxCount {
		own = tooLong(opBroadcast, len(buf))
	}
	return c.collective(ctx, header{op: opBroadcast, n: int64(len(buf)), root: int64(root)}, nil, own,
		func(o *mpiOp, _ []header) (bool, error, error) {
			if len(buf) == 0 {
				return false, nil, nil
			}
			return true, nil, mpiIbcast(buf, root, c.h, o.req)
		}, ptr(buf))
}

func (c *mpiComm) Barrier(ctx context.Context) error {
	// The header exchange is itself a barrier: it ends on a rank once
	// every rank has sent it its header.
	return c.collective(ctx, header{op: opBarrier}, nil, nil, nil)
}

func (c *mpiComm) Split(ctx context.Context, color, key int) (Comm, error) {
	return c.split(ctx, opSplit, func() (mpiHandle, bool, error) { return mpiSplit(c.h, color, key) })
}

func (c *mpiComm) splitShared(ctx context.Context) (Comm, error) {
	return c.split(ctx, opSplitShared, func() (mpiHandle, bool, error) {
		h, err := mpiSplitShared(c.h, c.rank)
		return h, err == nil, err
	})
}

// split runs a collective whose data step is mk, a blocking MPI call that
// makes a communicator (ok false: none for this rank).
func (c *mpiComm) split(ctx context.Context, op opcode, mk func() (h mpiHandle, ok bool, err error)) (Comm, error) {
	var sub *mpiComm
	err := c.collective(ctx, header{op: op}, nil, nil, func(*mpiOp, []header) (bool, error, error) {
		h, ok, err := mk()
		if err != nil || !ok {
			return false, nil, err
		}
		sub = &mpiComm{s: c.s, timeout: c.timeout}
		return false, nil, sub.attach(h)
	})
	if err != nil || sub == nil {
		return nil, err
	}
	return sub, nil
}

// Close frees the communicator (MPI_Comm_free; not a broken one, whose
// abandoned request may still use it), or on the world Comm finalizes MPI:
// then every collective of the process fails with ErrClosed. MPI is not
// finalized while a collective of the process is outstanding, abandoned
// ones included (Close waits up to finalizeWait for them): Close returns
// an error instead, and the process should exit non-zero.
func (c *mpiComm) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	if !c.world {
		if c.broken.Load() {
			return nil
		}
		return c.s.call(func() error { return mpiFree(c.h) })
	}
	o := newOp(func() (bool, error) {
		if n := c.s.drain(finalizeWait); n > 0 {
			return false, fmt.Errorf("dist: MPI not finalized: %d collectives outstanding (abandoned after ErrBroken, or running on other Comms); exit non-zero and mpirun ends the job", n)
		}
		return false, mpiFinalize()
	})
	o.finalize = true
	select {
	case c.s.submit <- o:
	case <-c.s.exited:
		return ErrClosed
	}
	return <-o.done
}

// RawMPIAllReduce sums buf over c's ranks with one blocking
// MPI_Allreduce(MPI_IN_PLACE, MPI_FLOAT, MPI_SUM) on the MPI thread: no
// header, no argument check, no polling. It is the reference the benchmarks
// hold AllReduce to. It cannot be cancelled (ctx is checked before it
// starts), it holds the MPI thread until it returns, so no collective of
// another Comm may run meanwhile, and c must come from InitMPI.
func RawMPIAllReduce(ctx context.Context, c Comm, buf []float32) error {
	m, ok := c.(*mpiComm)
	if !ok {
		return fmt.Errorf("dist: RawMPIAllReduce on a %T, not an MPI Comm", c)
	}
	if err := m.usable(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(buf) > maxCount {
		return tooLong(opAllReduce, len(buf))
	}
	var pin runtime.Pinner
	if p := ptr(buf); p != nil {
		pin.Pin(p)
	}
	defer pin.Unpin()
	return m.s.call(func() error { return mpiAllreduce(buf, m.h) })
}
