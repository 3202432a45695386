package dist

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// ErrNoMPI is returned by InitMPI in a binary built without the MPI
// backend.
var ErrNoMPI = errors.New("dist: built without MPI (build with -tags mpi; needs Open MPI: apt-get install libopenmpi-dev openmpi-bin)")

// UnderMPI reports whether this process is a rank of a job that Open MPI's
// mpirun started (OMPI_COMM_WORLD_SIZE is set): InitMPI then joins it.
func UnderMPI() bool { return os.Getenv("OMPI_COMM_WORLD_SIZE") != "" }

// MPIRunCommand returns the command that runs prog with args as np ranks
// on this machine under Open MPI's mpirun, with the flags that needs:
//
//   - --allow-run-as-root when running as root: mpirun refuses otherwise
//     (containers and CI machines often run as root);
//   - --oversubscribe when np exceeds the cores: mpirun starts at most one
//     rank per core otherwise;
//   - the words of $MOESYS_MPIRUN_FLAGS, for what a machine needs besides
//     (e.g. "--mca btl self,vader --mca btl_vader_single_copy_mechanism
//     none" where a container forbids the cross-process memory copies).
//
// The Makefile's MPIRUN variable holds the same flags for make test-mpi.
func MPIRunCommand(np int, prog string, args ...string) *exec.Cmd {
	a := []string{"-np", fmt.Sprint(np)}
	if os.Geteuid() == 0 {
		a = append(a, "--allow-run-as-root")
	}
	if np > runtime.NumCPU() {
		a = append(a, "--oversubscribe")
	}
	a = append(a, strings.Fields(os.Getenv("MOESYS_MPIRUN_FLAGS"))...)
	a = append(a, prog)
	return exec.Command("mpirun", append(a, args...)...)
}

// envTimeout is the per-collective timeout of MPI Comms,
// $MOESYS_COMM_TIMEOUT as a Go duration ("10m"); 0 (none) when unset.
func envTimeout() (time.Duration, error) {
	v := os.Getenv("MOESYS_COMM_TIMEOUT")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("dist: MOESYS_COMM_TIMEOUT=%q: want a duration such as 10m", v)
	}
	return d, nil
}
