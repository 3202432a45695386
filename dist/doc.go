// Package dist is moesys' communication layer for training past one
// process: a Comm is one rank of a group of Size ranks that run the same
// program and meet in collectives (AllReduce, AllGather, ReduceScatter,
// AllToAllV, Broadcast, Barrier, Split), each taking a context first.
// Split makes independent Comms of a group's ranks (as MPI_Comm_split
// does): collectives on different Comms of a rank may run at the same time
// from different goroutines, e.g. gradient all-reduces on a duplicate in
// the background while expert all-to-alls run on the parent. NodeOf tells
// which ranks share a machine, for two-level collectives.
//
// Backends:
//
//   - Local: N ranks as goroutines of one process, exchanging through
//     shared memory (tests, and `moesys train --ranks N` on one machine).
//     Reductions add the ranks' contributions in rank order, so every rank
//     gets the same bits and a run repeats exactly.
//   - MPI (build tag mpi, cgo over Open MPI): one rank per process,
//     launched with mpirun as clusters, Slurm and Kubernetes MPI operators
//     launch jobs. InitMPI joins the job; one locked OS thread makes every
//     MPI call, posting nonblocking collectives so that Comms overlap.
//     Sums are MPI's (see InitMPI). A binary built without the tag still
//     has the API: InitMPI returns ErrNoMPI, MPIAvailable is false.
//
// Collectives must be called by every rank of the group in the same order
// with matching sizes; ranks whose arguments disagree all get ErrMismatch
// and stay in step. A rank whose context ends while it waits in a
// collective breaks the group (ErrBroken) rather than leaving the others
// waiting forever in the local backend; under MPI the others cannot be
// told, and the job should end (see InitMPI).
//
// Element types: sums are over float32 (gradients, activations); data
// movement (AllGather, AllToAllV, Broadcast) is over bytes, with generic
// helpers (AllToAllVOf, AllGatherOf, BroadcastOf) for typed slices.
//
// A process of an mpirun job:
//
//	c, err := dist.InitMPI() // dist.UnderMPI() tells whether mpirun started us
//	if err != nil { ... }
//	defer c.Close() // MPI_Finalize
//	dup, err := c.Split(ctx, 0, c.Rank()) // a duplicate, for all-reduces in the background
//	...
//	go func() { errc <- dup.AllReduce(ctx, grads) }()
//	err = dist.AllToAllVOf(ctx, c, sendND, sendCounts, recvRD, recvCounts)
//
// In-process ranks (tests): cs, err := dist.NewLocal(4), one goroutine per
// cs[r]. MPIRunCommand starts a binary as mpirun ranks with the flags this
// machine needs; `make test-mpi` runs the conformance suite that way.
package dist
