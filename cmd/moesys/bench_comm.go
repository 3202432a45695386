package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/moesys/moesys/dist"
)

func init() {
	benchSuites["comm"] = struct {
		summary string
		run     func(opts benchOptions, progress io.Writer) ([]benchResult, error)
	}{"AllReduce and AllToAllV bandwidth, 4 KiB to 64 MiB, of the local backend and of MPI (2 ranks: this binary under mpirun, if built with -tags mpi), and MPI AllReduce vs raw MPI_Allreduce", benchComm}
}

// commSizes are the message sizes measured: per rank, the buffer AllReduce
// sums and the bytes AllToAllV sends (an equal share to every rank).
var commSizes = []int{4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20}

const (
	// commRanks is the group size of both backends' figures.
	commRanks = 2
	// commRep is the least time one timed repetition lasts (calls are
	// repeated to fill it), so that short collectives are timed in bulk.
	commRep = 50 * time.Millisecond
	// commOverheadTarget is the most moesys' MPI AllReduce may take of a
	// raw blocking MPI_Allreduce's time (64 MiB, 2 ranks).
	commOverheadTarget = 1.10
)

// sizeLabel names a size in results: 4KiB, 64MiB.
func sizeLabel(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

// benchComm measures the local backend over goroutine ranks here, then
// the MPI backend by running this binary under mpirun (as commRanks
// processes, each a rank: the branch under dist.UnderMPI).
func benchComm(opts benchOptions, progress io.Writer) ([]benchResult, error) {
	if dist.UnderMPI() {
		return nil, commWorker(opts, progress)
	}
	reps := 7
	if opts.quick {
		reps = 3
	}
	fmt.Fprintf(progress, "comm: local backend, %d goroutine ranks\n", commRanks)
	res, err := commLocal(reps)
	if err != nil {
		return nil, err
	}
	if !dist.MPIAvailable() {
		fmt.Fprintln(progress, "comm: this binary was built without MPI (make build uses -tags mpi when Open MPI is installed): local backend only")
		return res, nil
	}
	if _, err := exec.LookPath("mpirun"); err != nil {
		fmt.Fprintln(progress, "comm: no mpirun on PATH (apt-get install openmpi-bin): local backend only")
		return res, nil
	}
	mpi, err := commLaunch(opts, progress)
	if err != nil {
		return nil, err
	}
	return append(res, mpi...), nil
}

// commLocal measures the local backend: every size, both collectives.
func commLocal(reps int) ([]benchResult, error) {
	cs, err := dist.NewLocal(commRanks)
	if err != nil {
		return nil, err
	}
	var res []benchResult
	for _, size := range commSizes {
		for _, coll := range []string{"allreduce", "alltoallv"} {
			per := make([][]float64, commRanks)
			errs := make([]error, commRanks)
			var wg sync.WaitGroup
			for r, c := range cs {
				wg.Go(func() {
					f := commOp(c, coll, size)
					per[r], errs[r] = commTime(context.Background(), c, reps, f)
				})
			}
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				return nil, err
			}
			sec := median(per[0])
			res = append(res, benchResult{Name: fmt.Sprintf("comm_local_%s_%s", coll, sizeLabel(size)), Value: float64(size) / sec / 1e9, Unit: "GB/s",
				Note: fmt.Sprintf("%d goroutine ranks, %.1f us per call (median of %d)", commRanks, sec*1e6, reps)})
		}
	}
	return res, nil
}

// commOp returns one call of collective coll on c with size bytes per rank.
func commOp(c dist.Comm, coll string, size int) func(ctx context.Context) error {
	W := c.Size()
	switch coll {
	case "allreduce":
		buf := make([]float32, size/4) // zeros: sums stay zero, no overflow
		return func(ctx context.Context) error { return c.AllReduce(ctx, buf) }
	case "raw":
		buf := make([]float32, size/4)
		return func(ctx context.Context) error { return dist.RawMPIAllReduce(ctx, c, buf) }
	}
	each := size / W
	counts := make([]int, W)
	for r := range counts {
		counts[r] = each
	}
	send, recv := make([]byte, W*each), make([]byte, W*each)
	return func(ctx context.Context) error { return c.AllToAllV(ctx, send, counts, recv, counts) }
}

// commCalls is how many calls of f fill commRep, as rank 0 of c finds
// after a warm-up call; every rank returns rank 0's count, so that all
// make the same calls.
func commCalls(ctx context.Context, c dist.Comm, f func(context.Context) error) (int, error) {
	if err := f(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	if err := f(ctx); err != nil {
		return 0, err
	}
	n := []int64{int64(commRep/max(time.Since(start), time.Microsecond)) + 1}
	if err := dist.BroadcastOf(ctx, c, n, 0); err != nil {
		return 0, err
	}
	return int(n[0]), nil
}

// commTime returns the seconds per call of f over reps repetitions, each
// of as many calls as fill commRep; every rank of c calls it.
func commTime(ctx context.Context, c dist.Comm, reps int, f func(context.Context) error) ([]float64, error) {
	n, err := commCalls(ctx, c, f)
	if err != nil {
		return nil, err
	}
	t := make([]float64, 0, reps)
	for range reps {
		s, err := commTimeCalls(ctx, c, n, f)
		if err != nil {
			return nil, err
		}
		t = append(t, s)
	}
	return t, nil
}

// commTimeCalls times n calls of f, started together on every rank (after
// a barrier), and returns the seconds per call.
func commTimeCalls(ctx context.Context, c dist.Comm, n int, f func(context.Context) error) (float64, error) {
	if err := c.Barrier(ctx); err != nil {
		return 0, err
	}
	start := time.Now()
	for range n {
		if err := f(ctx); err != nil {
			return 0, err
		}
	}
	return time.Since(start).Seconds() / float64(n), nil
}

// commLaunch runs this binary's bench comm as commRanks ranks under
// mpirun and returns the results rank 0 wrote.
func commLaunch(opts benchOptions, progress io.Writer) ([]benchResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"bench", "comm"}
	if opts.quick {
		args = append(args, "--quick")
	}
	cmd := dist.MPIRunCommand(commRanks, exe, args...)
	fmt.Fprintf(progress, "comm: MPI backend: %s\n", cmd)
	return runMPIBench(cmd, nil, progress)
}

// commWorker is bench comm on one rank of the mpirun job commLaunch
// started: it measures the MPI backend and raw MPI_Allreduce.
func commWorker(opts benchOptions, progress io.Writer) error {
	return mpiBenchWorker("comm", func(c dist.Comm) ([]benchResult, error) { return commMPI(c, opts, progress) })
}

// commMPI measures the MPI backend on c: bandwidth by size (AllReduce
// against raw MPI_Allreduce, AllToAllV), then the 64 MiB AllReduce
// overhead, moesys and raw calls alternating.
func commMPI(c dist.Comm, opts benchOptions, progress io.Writer) ([]benchResult, error) {
	ctx := context.Background()
	reps, pairs := 7, 25
	if opts.quick {
		reps, pairs = 3, 9
	}
	say := func(format string, a ...any) {
		if c.Rank() == 0 {
			fmt.Fprintf(progress, format, a...)
		}
	}
	say("comm: MPI backend, %d ranks\n", c.Size())
	var res []benchResult
	for _, size := range commSizes {
		sec := map[string]float64{}
		for _, coll := range []string{"allreduce", "raw", "alltoallv"} {
			t, err := commTime(ctx, c, reps, commOp(c, coll, size))
			if err != nil {
				return nil, fmt.Errorf("%s of %s: %w", coll, sizeLabel(size), err)
			}
			sec[coll] = median(t)
		}
		gbps := func(coll string) float64 { return float64(size) / sec[coll] / 1e9 }
		res = append(res,
			benchResult{Name: "comm_mpi_allreduce_" + sizeLabel(size), Value: gbps("allreduce"), Unit: "GB/s", Bound: gbps("raw"), Ratio: gbps("allreduce") / gbps("raw"),
				Note: fmt.Sprintf("%d ranks, %.1f us per call; bound: blocking MPI_Allreduce, %.1f us (medians of %d)", c.Size(), sec["allreduce"]*1e6, sec["raw"]*1e6, reps)},
			benchResult{Name: "comm_mpi_alltoallv_" + sizeLabel(size), Value: gbps("alltoallv"), Unit: "GB/s",
				Note: fmt.Sprintf("%d ranks, %.1f us per call (median of %d)", c.Size(), sec["alltoallv"]*1e6, reps)})
		say("comm: %s: AllReduce %.2f GB/s (raw MPI_Allreduce %.2f), AllToAllV %.2f GB/s\n", sizeLabel(size), gbps("allreduce"), gbps("raw"), gbps("alltoallv"))
	}

	// The overhead: moesys AllReduce and raw MPI_Allreduce of the same
	// 64 MiB in turn, each timed over the same number of calls.
	size := 64 << 20
	ours, raw := commOp(c, "allreduce", size), commOp(c, "raw", size)
	n, err := commCalls(ctx, c, ours)
	if err != nil {
		return nil, err
	}
	var tOurs, tRaw, ratio []float64
	for range pairs {
		a, err := commTimeCalls(ctx, c, n, ours)
		if err != nil {
			return nil, err
		}
		b, err := commTimeCalls(ctx, c, n, raw)
		if err != nil {
			return nil, err
		}
		tOurs, tRaw, ratio = append(tOurs, a), append(tRaw, b), append(ratio, a/b)
	}
	res = append(res, benchResult{Name: "comm_mpi_allreduce_64MiB_overhead", Value: median(tOurs) * 1e3, Unit: "ms", Bound: median(tRaw) * 1e3,
		Ratio: median(ratio), Target: commOverheadTarget, TargetMax: true,
		Note: fmt.Sprintf("AllReduce / blocking MPI_Allreduce(MPI_IN_PLACE) of 64 MiB float32, %d ranks: median of %d alternating pairs of %d calls each", c.Size(), pairs, n)})
	say("comm: 64MiB AllReduce %.2f ms, raw MPI_Allreduce %.2f ms: %.3fx\n", median(tOurs)*1e3, median(tRaw)*1e3, median(ratio))
	return res, nil
}
