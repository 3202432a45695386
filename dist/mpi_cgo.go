//go:build mpi

package dist

// The C side of the MPI backend: one Go function per MPI call, each made
// only on the MPI thread (see mpiServer). Buffers handed to a nonblocking
// call must stay pinned (runtime.Pinner) until its request completes.

/*
#cgo pkg-config: ompi-c
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <sys/prctl.h>

// m_init starts MPI on the calling thread. Unless the environment says
// otherwise, libnbc's MPI_Iallreduce uses Rabenseifner's algorithm
// (reduce-scatter, then allgather) at every group size: by default it
// picks, below 4 ranks, a binomial reduce to rank 0 and a broadcast back,
// which moves the whole buffer twice in turn and took 2.2-2.3x the
// blocking MPI_Allreduce's time at 2 ranks (1 to 64 MiB; with
// Rabenseifner's, 0.97-1.03x). Errors on every communicator are returned,
// not fatal.
static int m_init(int *provided) {
	setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "3", 0);
	int err = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, provided);
	if (err != MPI_SUCCESS) return err;
	// Short pauses between polls should be short: 1 us timer slack on this
	// thread instead of the default 50 us.
	prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
	return MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}

static MPI_Comm m_world(void) { return MPI_COMM_WORLD; }
static int m_is_null(MPI_Comm c) { return c == MPI_COMM_NULL; }

// Buffers come as addresses (see addr).
static int m_iallreduce(uintptr_t buf, int n, MPI_Comm c, MPI_Request *q) {
	return MPI_Iallreduce(MPI_IN_PLACE, (void *)buf, n, MPI_FLOAT, MPI_SUM, c, q);
}
static int m_allreduce(uintptr_t buf, int n, MPI_Comm c) {
	return MPI_Allreduce(MPI_IN_PLACE, (void *)buf, n, MPI_FLOAT, MPI_SUM, c);
}
static int m_iallgather(uintptr_t s, int n, uintptr_t r, MPI_Comm c, MPI_Request *q) {
	return MPI_Iallgather((void *)s, n, MPI_BYTE, (void *)r, n, MPI_BYTE, c, q);
}
static int m_ireduce_scatter(uintptr_t s, uintptr_t r, int n, MPI_Comm c, MPI_Request *q) {
	return MPI_Ireduce_scatter_block((void *)s, (void *)r, n, MPI_FLOAT, MPI_SUM, c, q);
}
static int m_ialltoallv(uintptr_t s, int *sc, int *sd, uintptr_t r, int *rc, int *rd, MPI_Comm c, MPI_Request *q) {
	return MPI_Ialltoallv((void *)s, sc, sd, MPI_BYTE, (void *)r, rc, rd, MPI_BYTE, c, q);
}
static int m_ialltoall_i64(uintptr_t s, uintptr_t r, int n, MPI_Comm c, MPI_Request *q) {
	return MPI_Ialltoall((void *)s, n, MPI_INT64_T, (void *)r, n, MPI_INT64_T, c, q);
}
static int m_ibcast(uintptr_t b, int n, int root, MPI_Comm c, MPI_Request *q) {
	return MPI_Ibcast((void *)b, n, MPI_BYTE, root, c, q);
}
static int m_test(MPI_Request *q, int tries, int *done) {
	int err = MPI_SUCCESS;
	for (int i = 0; i < tries && err == MPI_SUCCESS; i++) {
		err = MPI_Test(q, done, MPI_STATUS_IGNORE);
		if (*done) break;
	}
	return err;
}
static int m_split(MPI_Comm c, int color, int key, MPI_Comm *out) {
	return MPI_Comm_split(c, color < 0 ? MPI_UNDEFINED : color, key, out);
}
static int m_split_shared(MPI_Comm c, int key, MPI_Comm *out) {
	return MPI_Comm_split_type(c, MPI_COMM_TYPE_SHARED, key, MPI_INFO_NULL, out);
}
static void m_sleep(long ns) {
	struct timespec t = {ns / 1000000000L, ns % 1000000000L};
	nanosleep(&t, NULL);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unsafe"
)

type (
	// mpiHandle is an MPI communicator.
	mpiHandle = C.MPI_Comm
	// mpiRequest is an MPI request of a nonblocking call.
	mpiRequest = C.MPI_Request
)

// maxCount is the largest count MPI's int arguments hold.
const maxCount = math.MaxInt32

// mpiErr turns an MPI error code into an error (nil for MPI_SUCCESS).
func mpiErr(what string, code C.int) error {
	if code == C.MPI_SUCCESS {
		return nil
	}
	var buf [C.MPI_MAX_ERROR_STRING]C.char
	var n C.int
	if C.MPI_Error_string(code, &buf[0], &n) != C.MPI_SUCCESS {
		return fmt.Errorf("%s: MPI error %d", what, int(code))
	}
	return fmt.Errorf("%s: %s", what, C.GoStringN(&buf[0], n))
}

// ptr is s's first element (nil when s has none), to pin.
func ptr[T any](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.SliceData(s))
}

// addr is s's first element's address for C (0 when s has none). MPI
// calls take their buffers as addresses, not pointers: cgo's run-time
// check of a pointer argument looks at the whole Go object it points into,
// so it refuses a slice of an array field of a struct that also holds Go
// pointers, which the cgo rules allow (the memory passed is the array's).
// MPI reads and writes only the slice's elements, and the caller pins the
// object until the call's request completes.
func addr[T any](s []T) C.uintptr_t { return C.uintptr_t(uintptr(ptr(s))) }

func mpiInit() error {
	var provided C.int
	if err := mpiErr("MPI_Init_thread", C.m_init(&provided)); err != nil {
		return err
	}
	if provided < C.MPI_THREAD_FUNNELED {
		return errors.New("MPI_Init_thread: MPI_THREAD_FUNNELED not provided")
	}
	return nil
}

func mpiFinalize() error { return mpiErr("MPI_Finalize", C.MPI_Finalize()) }

func mpiWorld() mpiHandle { return C.m_world() }

func mpiRankSize(h mpiHandle) (rank, size int, err error) {
	var r, n C.int
	if err := mpiErr("MPI_Comm_rank", C.MPI_Comm_rank(h, &r)); err != nil {
		return 0, 0, err
	}
	if err := mpiErr("MPI_Comm_size", C.MPI_Comm_size(h, &n)); err != nil {
		return 0, 0, err
	}
	return int(r), int(n), nil
}

func mpiIallreduce(buf []float32, h mpiHandle, q *mpiRequest) error {
	return mpiErr("MPI_Iallreduce", C.m_iallreduce(addr(buf), C.int(len(buf)), h, q))
}

func mpiAllreduce(buf []float32, h mpiHandle) error {
	return mpiErr("MPI_Allreduce", C.m_allreduce(addr(buf), C.int(len(buf)), h))
}

func mpiIallgather(send, recv []byte, h mpiHandle, q *mpiRequest) error {
	return mpiErr("MPI_Iallgather", C.m_iallgather(addr(send), C.int(len(send)), addr(recv), h, q))
}

// mpiIreduceScatter reduces n elements of send per rank into recv.
func mpiIreduceScatter(send, recv []float32, n int, h mpiHandle, q *mpiRequest) error {
	return mpiErr("MPI_Ireduce_scatter_block", C.m_ireduce_scatter(addr(send), addr(recv), C.int(n), h, q))
}

// mpiIalltoallv: counts and displacements in bytes, one per rank.
func mpiIalltoallv(send []byte, sc, sd []C.int, recv []byte, rc, rd []C.int, h mpiHandle, q *mpiRequest) error {
	return mpiErr("MPI_Ialltoallv", C.m_ialltoallv(addr(send), &sc[0], &sd[0], addr(recv), &rc[0], &rd[0], h, q))
}

// mpiIalltoallInt64 sends n int64s to each rank.
func mpiIalltoallInt64(send, recv []int64, n int, h mpiHandle, q *mpiRequest) error {
	return mpiErr("MPI_Ialltoall", C.m_ialltoall_i64(addr(send), addr(recv), C.int(n), h, q))
}

func mpiIbcast(buf []byte, root int, h mpiHandle, q *mpiRequest) error {
	return mpiErr("MPI_Ibcast", C.m_ibcast(addr(buf), C.int(len(buf)), C.int(root), h, q))
}

// testTries is how many MPI_Tests one poll of a request makes (fewer if it
// completes): Open MPI runs libnbc's progress, which moves nonblocking
// collectives from one step to the next, only on every 8th of its
// progress calls.
const testTries = 8

// mpiTest reports whether q has completed.
func mpiTest(q *mpiRequest) (bool, error) {
	var done C.int
	err := mpiErr("MPI_Test", C.m_test(q, C.int(testTries), &done))
	return done != 0, err
}

// mpiSplit is MPI_Comm_split; ok is false for a negative color.
func mpiSplit(h mpiHandle, color, key int) (sub mpiHandle, ok bool, err error) {
	if err := mpiErr("MPI_Comm_split", C.m_split(h, C.int(color), C.int(key), &sub)); err != nil {
		return sub, false, err
	}
	return sub, C.m_is_null(sub) == 0, nil
}

// mpiSplitShared is MPI_Comm_split_type(MPI_COMM_TYPE_SHARED).
func mpiSplitShared(h mpiHandle, key int) (mpiHandle, error) {
	var sub mpiHandle
	return sub, mpiErr("MPI_Comm_split_type", C.m_split_shared(h, C.int(key), &sub))
}

func mpiFree(h mpiHandle) error { return mpiErr("MPI_Comm_free", C.MPI_Comm_free(&h)) }

// mpiCounts returns n MPI counts or displacements.
func mpiCounts(n int) []C.int { return make([]C.int, n) }

// cInt is n as an MPI count (n <= maxCount).
func cInt(n int) C.int { return C.int(n) }

// mpiSleep pauses the calling thread for d.
func mpiSleep(d time.Duration) { C.m_sleep(C.long(d)) }
