//go:build linux && cgo

package cuda

// These tests run the real shim against a FAKE driver, cuBLAS and NVRTC
// (testdata/fakecuda, built here with gcc): host memory stands in for the
// GPU, so they check the binding's plumbing (loading, contexts, argument
// passing, error mapping), not CUDA. Libraries load once per process, so
// TestFakeDriver runs the TestFakeChild* tests in subprocesses of this test
// binary with MOESYS_CUDA_LIBDIR pointing at the fakes.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fakeChildEnv is set in the subprocesses; it names the scenario.
const fakeChildEnv = "MOESYS_FAKECUDA_CHILD"

func TestFakeDriver(t *testing.T) {
	if os.Getenv(fakeChildEnv) != "" {
		t.Skip("in a subprocess already")
	}
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not found: cannot build the fake driver")
	}
	build := func(dir, out, src string, defs ...string) {
		args := append([]string{"-shared", "-fPIC", "-O1", "-Wall", "-o", filepath.Join(dir, out)}, defs...)
		args = append(args, filepath.Join("testdata", "fakecuda", src))
		if b, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
			t.Fatalf("gcc %s: %v\n%s", src, err, b)
		}
	}
	full, noCubin, noLaunch := t.TempDir(), t.TempDir(), t.TempDir()
	for _, dir := range []string{full, noCubin} {
		build(dir, "libcuda.so.1", "fakecuda.c")
		build(dir, "libcublas.so.12", "fakecublas.c")
	}
	build(full, "libnvrtc.so.12", "fakenvrtc.c")
	build(noCubin, "libnvrtc.so.12", "fakenvrtc.c", "-DFAKE_NO_CUBIN")
	build(noLaunch, "libcuda.so.1", "fakecuda.c", "-DFAKE_NO_LAUNCH")

	scenarios := []struct {
		name, test, dir string
		env             []string
	}{
		{"all", "TestFakeChild", full, nil},
		{"no device", "TestFakeChildNoDevice", full, []string{"FAKECUDA_NO_DEVICE=1"}},
		{"NVRTC rejects sm_90", "TestFakeChildPTX", full, []string{"FAKENVRTC_REJECT_SM=1"}},
		{"NVRTC without CUBIN", "TestFakeChildPTX", noCubin, nil},
		{"driver missing a symbol", "TestFakeChildMissingSymbol", noLaunch, nil},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^"+sc.test+"$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), LibDirEnv+"="+sc.dir, fakeChildEnv+"="+sc.name)
			cmd.Env = append(cmd.Env, sc.env...)
			out, err := cmd.CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("--- PASS: "+sc.test+" ")) {
				t.Fatalf("%s in a subprocess: %v\n%s", sc.test, err, out)
			}
			if testing.Verbose() {
				t.Logf("%s", out)
			}
		})
	}
}

func fakeChild(t *testing.T) {
	if os.Getenv(fakeChildEnv) == "" {
		t.Skip("runs in TestFakeDriver's subprocess")
	}
}

func TestFakeChild(t *testing.T) {
	fakeChild(t)
	d := device(t)
	info := d.Info()
	want := Info{Name: "FakeGPU", Major: 9, Minor: 0, TotalMem: 80 << 30, SMs: 132, Driver: 12040, MaxThreads: 1024, SharedOptin: 232448}
	if info != want {
		t.Errorf("Info() = %+v\nwant      %+v", info, want)
	}

	t.Run("memory", func(t *testing.T) { checkMemory(t, d) })
	t.Run("pinned", func(t *testing.T) { checkPinned(t, d) })
	t.Run("events", func(t *testing.T) { checkEvents(t, d) })
	t.Run("concurrent", func(t *testing.T) { checkConcurrent(t, d) })
	for _, c := range gemmCases {
		t.Run("gemm "+c.name, func(t *testing.T) { checkGemmCase(t, d, c) })
	}
	t.Run("gemm errors", func(t *testing.T) { checkGemmErrors(t, d) })
	if got := d.Info().Cublas; got != 120400 {
		t.Errorf("Info().Cublas = %d after Blas, want 120400", got)
	}

	t.Run("MemInfo counts allocations", func(t *testing.T) {
		free0, _, err := d.MemInfo()
		must(t, err)
		p := malloc(t, d, 1<<20)
		_ = p
		free1, _, err := d.MemInfo()
		must(t, err)
		if free0-free1 != 1<<20 {
			t.Errorf("free went from %d to %d after a 1 MiB Malloc", free0, free1)
		}
	})

	t.Run("event not ready", func(t *testing.T) {
		s := stream(t, d)
		e, err := d.NewEvent(false)
		must(t, err)
		defer e.Close()
		must(t, e.Record(s))
		// The fake reports NOT_READY to the first query after a Record.
		if done, err := e.Done(); done || err != nil {
			t.Errorf("first Done() = %v, %v; want false, nil", done, err)
		}
		if done, err := e.Done(); !done || err != nil {
			t.Errorf("second Done() = %v, %v; want true, nil", done, err)
		}
	})

	t.Run("build and launch", func(t *testing.T) { checkFakeLaunch(t, d) })

	t.Run("driver errors are named", func(t *testing.T) {
		var ce *Error
		_, err := d.LoadImage([]byte("not an image"))
		if !errors.As(err, &ce) || ce.Name != "CUDA_ERROR_INVALID_IMAGE" || ce.Call != "cuModuleLoadData" || ce.Code != 200 {
			t.Errorf("LoadImage(garbage): %v (%+v)", err, ce)
		}
		if _, err := Open(1); err == nil || !strings.Contains(err.Error(), "have 1 devices") {
			t.Errorf("Open(1): %v", err)
		}
	})

	t.Run("close", func(t *testing.T) {
		// A second Device on the same primary context.
		d2, err := Open(0)
		must(t, err)
		if _, err := d2.Blas(); err != nil {
			t.Fatal(err)
		}
		must(t, d2.Close())
		if err := d2.Close(); err == nil {
			t.Error("second Close: no error")
		}
		if _, err := d2.Blas(); err == nil {
			t.Error("Blas after Close: no error")
		}
		// The first Device still works.
		checkMemory(t, d)
	})
}

// checkFakeLaunch builds a "record" kernel with the fake NVRTC, launches
// it and reads back what the fake driver saw: the launch shape and the
// 8 bytes behind each parameter pointer.
func checkFakeLaunch(t *testing.T, d *Device) {
	src := `extern "C" __global__ void record8(...) {}`
	img, log, err := CompileImage(src, "rec.cu", "sm_90", []string{"-lineinfo"})
	must(t, err)
	if want := "FAKECUBIN\n--gpu-arch=sm_90 -default-device --std=c++17 -lineinfo\n" + src; string(img) != want {
		t.Errorf("CompileImage image %q, want %q", img, want)
	}
	if log != "fake nvrtc: compiled for sm_90\n" {
		t.Errorf("CompileImage log %q", log)
	}
	if got := d.Info().NVRTC; got != [2]int{12, 4} {
		t.Errorf("Info().NVRTC = %v after CompileImage, want [12 4]", got)
	}
	m, log, err := d.Build(src, "rec.cu", nil)
	must(t, err)
	defer m.Close()
	if !strings.Contains(log, "compiled for sm_90") {
		t.Errorf("Build log %q: want a CUBIN for sm_90", log)
	}
	f, err := m.Function("record8")
	must(t, err)
	if f.Name() != "record8" {
		t.Errorf("Name() = %q", f.Name())
	}
	s := stream(t, d)
	out := malloc(t, d, 8*16)
	args := []any{out, -5, int32(7), uint32(0xdeadbeef), int64(-1 << 40), uint64(1<<63 + 5), float32(1.25), DevPtr(0x1234)}
	must(t, s.Launch(f, Dim3{X: 3, Y: 2}, Dim3{X: 128}, 100, args...))
	got := make([]byte, 8*15)
	must(t, s.CopyDtoH(got, out))
	must(t, s.Sync())
	want := []uint64{3, 2, 1, 128, 1, 1, 100, 48 << 10, // grid, block, shared, max shared
		0xfffffffb, 7, 0xdeadbeef, 0xffffff0000000000, 1<<63 + 5, 0x3fa00000, 0x1234}
	for i, w := range want {
		if g := binary.LittleEndian.Uint64(got[8*i:]); g != w {
			t.Errorf("recorded word %d = %#x, want %#x", i, g, w)
		}
	}

	// Bad arguments never reach the driver; driver failures are named.
	err = s.Launch(f, Dim3{}, Dim3{}, 0, out, 1.5)
	if err == nil || !strings.Contains(err.Error(), "record8") || !strings.Contains(err.Error(), "argument 1: unsupported type float64") {
		t.Errorf("Launch with a float64: %v", err)
	}
	err = s.Launch(f, Dim3{X: -1}, Dim3{}, 0, out)
	if err == nil || !strings.Contains(err.Error(), "grid") {
		t.Errorf("Launch with a negative grid: %v", err)
	}
	var ce *Error
	f1, err := m.Function("record1") // one parameter: out
	must(t, err)
	err = s.Launch(f1, Dim3{}, Dim3{X: 32}, 64<<10, out)
	if !errors.As(err, &ce) || ce.Name != "CUDA_ERROR_INVALID_VALUE" {
		t.Errorf("Launch with 64 KiB shared memory before SetMaxDynamicShared: %v", err)
	}
	must(t, f1.SetMaxDynamicShared(64<<10))
	must(t, s.Launch(f1, Dim3{}, Dim3{X: 32}, 64<<10, out))
	must(t, s.CopyDtoH(got[:64], out))
	must(t, s.Sync())
	if g := binary.LittleEndian.Uint64(got[56:]); g != 64<<10 {
		t.Errorf("max dynamic shared memory seen by the driver %d, want %d", g, 64<<10)
	}
	if _, err := m.Function("nope"); !errors.As(err, &ce) || ce.Name != "CUDA_ERROR_NOT_FOUND" || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Function(nope): %v", err)
	}

	// A compile error returns the log, in the error too.
	_, log, err = d.Build("#error boom\n", "bad.cu", nil)
	if !errors.As(err, &ce) || ce.Name != "NVRTC_ERROR_COMPILATION" || !strings.Contains(err.Error(), "fake failure") || !strings.Contains(err.Error(), "bad.cu") {
		t.Errorf("Build of bad source: %v", err)
	}
	if !strings.Contains(log, "fake failure") {
		t.Errorf("Build of bad source: log %q", log)
	}
	if _, _, err := CompileImage(src, "rec.cu", "90", nil); err == nil {
		t.Error("CompileImage with arch \"90\": no error")
	}
}

func TestFakeChildNoDevice(t *testing.T) {
	fakeChild(t)
	_, err := Open(0)
	var ce *Error
	if !errors.Is(err, ErrUnavailable) || !errors.As(err, &ce) || ce.Code != errNoDevice || !strings.Contains(err.Error(), "cuInit") || !strings.Contains(err.Error(), "CUDA_ERROR_NO_DEVICE") {
		t.Errorf("Open(0) with no device: %v", err)
	}
	t.Logf("Open(0): %v", err)
}

// TestFakeChildPTX: when NVRTC cannot give a CUBIN for the device, Build
// falls back to PTX for compute_90.
func TestFakeChildPTX(t *testing.T) {
	fakeChild(t)
	d := device(t)
	src := `extern "C" __global__ void record1(unsigned long long *out) {}`
	m, log, err := d.Build(src, "k.cu", []string{"-DX=1"})
	must(t, err)
	defer m.Close()
	if !strings.Contains(log, "compiled for compute_90") {
		t.Errorf("Build log %q: want PTX for compute_90", log)
	}
	if _, err := m.Function("record1"); err != nil {
		t.Error(err)
	}
	img, _, err := CompileImage(src, "k.cu", "compute_90", nil)
	must(t, err)
	if !bytes.HasPrefix(img, []byte("FAKEPTX\n")) || img[len(img)-1] != 0 {
		t.Errorf("PTX image %q: want FAKEPTX..., NUL-terminated", img)
	}
	if _, _, err := CompileImage(src, "k.cu", "sm_90", nil); err == nil {
		t.Error("CompileImage for sm_90: no error")
	} else {
		t.Logf("CompileImage for sm_90: %v", err)
	}
}

func TestFakeChildMissingSymbol(t *testing.T) {
	fakeChild(t)
	_, err := Open(0)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "missing symbol cuLaunchKernel") {
		t.Errorf("Open(0) with a driver lacking cuLaunchKernel: %v", err)
	}
	t.Logf("Open(0): %v", err)
}
