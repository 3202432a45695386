package dist

import (
	"os"
	"runtime"
	"slices"
	"testing"
	"time"
)

func TestMPIRunCommand(t *testing.T) {
	t.Setenv("MOESYS_MPIRUN_FLAGS", "--mca btl self,vader")
	cmd := MPIRunCommand(runtime.NumCPU()+1, "/bin/prog", "a", "b")
	args := cmd.Args[1:]
	for _, w := range []string{"-np", "--mca", "btl", "self,vader"} {
		if !slices.Contains(args, w) {
			t.Errorf("%v lacks %q", cmd.Args, w)
		}
	}
	if !slices.Contains(args, "--oversubscribe") {
		t.Errorf("%v: more ranks than cores without --oversubscribe", cmd.Args)
	}
	if root := os.Geteuid() == 0; root != slices.Contains(args, "--allow-run-as-root") {
		t.Errorf("%v: --allow-run-as-root should be there exactly when root", cmd.Args)
	}
	if i := slices.Index(args, "/bin/prog"); !slices.Equal(args[i:], []string{"/bin/prog", "a", "b"}) {
		t.Errorf("%v: the program and its arguments come last", cmd.Args)
	}
	if slices.Contains(MPIRunCommand(1, "/bin/prog").Args, "--oversubscribe") {
		t.Error("one rank oversubscribed")
	}
}

func TestUnderMPI(t *testing.T) {
	t.Setenv("OMPI_COMM_WORLD_SIZE", "")
	os.Unsetenv("OMPI_COMM_WORLD_SIZE")
	if UnderMPI() {
		t.Error("UnderMPI without OMPI_COMM_WORLD_SIZE")
	}
	t.Setenv("OMPI_COMM_WORLD_SIZE", "2")
	if !UnderMPI() {
		t.Error("not UnderMPI with OMPI_COMM_WORLD_SIZE=2")
	}
}

func TestEnvTimeout(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want time.Duration
		ok   bool
	}{
		{"", 0, true},
		{"90s", 90 * time.Second, true},
		{"10m", 10 * time.Minute, true},
		{"ten minutes", 0, false},
		{"-1s", 0, false},
	} {
		t.Setenv("MOESYS_COMM_TIMEOUT", tc.env)
		got, err := envTimeout()
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("MOESYS_COMM_TIMEOUT=%q: %v, %v", tc.env, got, err)
		}
	}
}
