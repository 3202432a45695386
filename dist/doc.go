// Package dist is moesys' communication layer for training past one
// process: a Comm is one rank of a group of Size ranks that run the same
// program and meet in collectives (AllReduce, AllGather, ReduceScatter,
// AllToAllV, Broadcast, Barrier), each taking a context first.
//
// Backends:
//
//   - Local: N ranks as goroutines of one process, exchanging through
//     shared memory (tests, and `moesys train --ranks N` on one machine).
//   - MPI (build tag mpi): one rank per process, over an installed Open MPI,
//     launched with mpirun as clusters, Slurm and Kubernetes MPI operators
//     launch jobs.
//
// Every collective is deterministic: reductions add the ranks'
// contributions in rank order, so every rank gets the same bits and a run
// repeats exactly. Collectives must be called by every rank of the group in
// the same order with matching sizes; a rank whose context ends while it
// waits in a collective breaks the group (ErrBroken) for every rank, as an
// MPI job aborts, rather than leaving the others waiting forever.
//
// Element types: sums are over float32 (gradients, activations); data
// movement (AllGather, AllToAllV, Broadcast) is over bytes, with generic
// helpers (AllToAllVOf, AllGatherOf, BroadcastOf) for typed slices.
package dist
