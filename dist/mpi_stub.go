//go:build !mpi

package dist

import "context"

// MPIAvailable reports whether this binary was built with the MPI backend
// (build tag mpi).
func MPIAvailable() bool { return false }

// InitMPI returns ErrNoMPI: this binary was built without the MPI backend
// (build tag mpi). See the mpi build's InitMPI.
func InitMPI() (Comm, error) { return nil, ErrNoMPI }

// RawMPIAllReduce returns ErrNoMPI: this binary was built without the MPI
// backend (build tag mpi).
func RawMPIAllReduce(ctx context.Context, c Comm, buf []float32) error { return ErrNoMPI }
