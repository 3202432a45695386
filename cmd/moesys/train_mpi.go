package main

import (
	"errors"
	"os"

	"github.com/moesys/moesys/dist"
)

// underMPI reports whether mpirun started this process.
func underMPI() bool { return os.Getenv("OMPI_COMM_WORLD_SIZE") != "" }

// mpiWorld returns this process's rank of the MPI job.
func mpiWorld() (dist.Comm, error) { return nil, errors.New("MPI backend not built") }
