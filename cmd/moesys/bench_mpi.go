package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/moesys/moesys/dist"
)

// benchMPIOut names the environment variable through which the mpirun
// ranks of a benchmark learn where rank 0 writes its results.
const benchMPIOut = "MOESYS_BENCH_MPI_OUT"

// runMPIBench runs cmd, an mpirun job of this binary's benchmark, with env
// added, and returns the results its rank 0 wrote (mpiBenchWorker). The
// ranks' progress goes to progress; their tables are not needed.
func runMPIBench(cmd *exec.Cmd, env []string, progress io.Writer) ([]benchResult, error) {
	out, err := os.CreateTemp("", "moesys-bench-mpi-*.json")
	if err != nil {
		return nil, err
	}
	out.Close()
	defer os.Remove(out.Name())
	cmd.Env = append(append(os.Environ(), env...), benchMPIOut+"="+out.Name())
	cmd.Stdout, cmd.Stderr = io.Discard, progress
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	b, err := os.ReadFile(out.Name())
	if err != nil {
		return nil, err
	}
	var res []benchResult
	if err := json.Unmarshal(b, &res); err != nil || len(res) == 0 {
		return nil, fmt.Errorf("results of the MPI ranks (%s): %v", out.Name(), err)
	}
	return res, nil
}

// mpiBenchWorker is one rank of a runMPIBench job: it joins MPI, measures
// with run, and rank 0 writes the results where $MOESYS_BENCH_MPI_OUT
// says.
func mpiBenchWorker(suite string, run func(c dist.Comm) ([]benchResult, error)) error {
	out := os.Getenv(benchMPIOut)
	if out == "" {
		return fmt.Errorf("bench %s starts its MPI ranks itself: run it without mpirun", suite)
	}
	c, err := dist.InitMPI()
	if err != nil {
		return err
	}
	res, err := run(c)
	if err != nil {
		return err // no Close: the job ends with this rank's failure
	}
	if err := c.Close(); err != nil {
		return err
	}
	if c.Rank() != 0 {
		return nil
	}
	if len(res) == 0 {
		return errors.New("no results")
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	return os.WriteFile(out, b, 0o644)
}
