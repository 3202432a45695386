package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets a test re-run this binary as the moesys command
// (MOESYS_TEST_MAIN=1), for tests that need a real process and signals.
func TestMain(m *testing.M) {
	if os.Getenv("MOESYS_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestTrainSIGINTSavesAndExitsZero: a training process sent SIGINT
// finishes its step, writes a checkpoint and exits 0; the run resumes.
func TestTrainSIGINTSavesAndExitsZero(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a process")
	}
	data, out := trainData(t), t.TempDir()
	cmd := exec.Command(os.Args[0], "train", "--preset", "tiny", "--seq", "32", "--batch", "2", "--steps", "100000",
		"--eval-every", "0", "--data", data, "--out", out)
	cmd.Env = append(os.Environ(), "MOESYS_TEST_MAIN=1", "MOESYS_THREADS=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait for training to start (the first progress line), then interrupt.
	sc := bufio.NewScanner(stderr)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if strings.HasPrefix(sc.Text(), "step 1/") {
			break
		}
	}
	time.Sleep(200 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGINT: %v\n%s", err, strings.Join(lines, "\n"))
	}
	all := strings.Join(lines, "\n")
	if !strings.Contains(all, "interrupted: saved step") {
		t.Fatalf("no interrupt message:\n%s", all)
	}
	latest, err := os.ReadFile(filepath.Join(out, "latest"))
	if err != nil {
		t.Fatalf("no checkpoint after SIGINT: %v\n%s", err, all)
	}
	if _, err := os.Stat(filepath.Join(out, strings.TrimSpace(string(latest)), "optimizer.safetensors")); err != nil {
		t.Fatal(err)
	}
}
