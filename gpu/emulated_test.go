package gpu

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moesys/moesys/gpu/cuda"
	"github.com/moesys/moesys/gpu/kernels"
	"github.com/moesys/moesys/gpu/kernels/emu"
)

// emulatedEnv is set in the subprocess that runs the GPU tests emulated.
const emulatedEnv = "MOESYS_GPU_EMULATED"

// emulatedKernels is the kernel set of an emulated run: the same CUDA C
// source, run on the CPU by package emu, over the fake driver's memory
// (host memory, so the emulated kernels can address it).
func emulatedKernels(d *cuda.Device, act cuda.DataType) (*kernels.Set, error) {
	e, err := emu.Load(act)
	if err != nil {
		return nil, err
	}
	ws, err := d.Malloc(kernels.AttentionWorkspaceBytes)
	if err != nil {
		return nil, err
	}
	return kernels.New(e, act, 4, ws, kernels.AttentionWorkspaceBytes)
}

// The engine end to end without a GPU: the GPU tests (fixtures against the
// reference, GPU against CPU, every offload policy over device slots) run
// in a subprocess whose "GPU" is the fake driver and cuBLAS of package
// cuda's tests (host memory, copies by memcpy, GEMMs in float64 on the
// CPU; testdata/fakecuda, built here with gcc) and whose kernels are the
// real CUDA C source run by the emulator (package emu). Everything of the
// engine is exercised except the hardware: its buffers, offsets, plans,
// copies and launches. A fake in a unit test; the real run is
// scripts/gpu-check.sh on a GPU.
func TestEmulatedGPU(t *testing.T) {
	if os.Getenv(emulatedEnv) != "" {
		t.Skip("in the emulated subprocess already")
	}
	if testing.Short() {
		t.Skip("-short: the emulated engine takes a while")
	}
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found: cannot build the fake driver")
	}
	if _, err := exec.LookPath("g++"); err != nil {
		if _, err := exec.LookPath("c++"); err != nil {
			t.Skip("no C++ compiler for the kernel emulator")
		}
	}
	dir := t.TempDir()
	for _, lib := range [][2]string{{"libcuda.so.1", "fakecuda.c"}, {"libcublas.so.12", "fakecublas.c"}, {"libnvrtc.so.12", "fakenvrtc.c"}} {
		src := filepath.Join("cuda", "testdata", "fakecuda", lib[1])
		if b, err := exec.Command(gcc, "-shared", "-fPIC", "-O2", "-o", filepath.Join(dir, lib[0]), src).CombinedOutput(); err != nil {
			t.Fatalf("gcc %s: %v\n%s", src, err, b)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^(TestFixturesGPU|TestGPUMatchesCPU|TestOffloadPoliciesGPU)$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), emulatedEnv+"=1", "MOESYS_CUDA_LIBDIR="+dir)
	out, err := cmd.CombinedOutput()
	t.Logf("emulated GPU tests:\n%s", out)
	if err != nil {
		t.Fatalf("emulated GPU tests failed: %v", err)
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Fatalf("an emulated GPU test skipped: the fake driver did not load")
	}
}
