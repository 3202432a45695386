package dist

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"
)

// testWorld is this process' rank of the mpirun job the test binary runs
// in (make test-mpi), nil when not under mpirun.
var testWorld Comm

func TestMain(m *testing.M) {
	if !UnderMPI() || !MPIAvailable() {
		os.Exit(m.Run())
	}
	c, err := InitMPI()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testWorld = c
	code := m.Run()
	if err := c.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "rank %d: %v\n", c.Rank(), err)
		code = 1
	}
	os.Exit(code)
}

// confTimeout bounds each case under MPI, where a rank that fails early
// would leave the others waiting.
const confTimeout = 2 * time.Minute

// The conformance suite over the processes of an mpirun job, each case on
// its own duplicate of the world.
func TestConformanceMPI(t *testing.T) {
	switch {
	case !MPIAvailable():
		t.Skip("built without MPI: make test-mpi builds this test with -tags mpi and runs it under mpirun")
	case testWorld == nil:
		t.Skip("not under mpirun: make test-mpi runs this test binary as 2 and 4 ranks")
	}
	w := testWorld
	for _, tc := range conformance {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), confTimeout)
			defer cancel()
			c, err := w.Split(ctx, 0, w.Rank())
			if err != nil {
				t.Fatalf("rank %d of %d: Split: %v", w.Rank(), w.Size(), err)
			}
			defer c.Close()
			if err := tc.run(ctx, c); err != nil {
				t.Fatalf("rank %d of %d: %v", w.Rank(), w.Size(), err)
			}
		})
	}
}
