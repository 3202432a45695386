//go:build linux

package cuda

// Tests on a real GPU; each skips when Open(0) fails with ErrUnavailable
// (no driver or no device), so they pass trivially on machines without
// one. Run them on a GPU machine with a test binary built elsewhere:
//
//	go test -c -o cuda.test ./gpu/cuda   # where Go is
//	./cuda.test -test.v -test.run GPU    # on the GPU machine
//
// MOESYS_CUDA_LIBDIR adds directories to search for libcublas/libnvrtc.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestGPUInfo(t *testing.T) {
	d := device(t)
	info := d.Info()
	t.Logf("device %+v", info)
	if info.Name == "" || info.Major < 1 || info.SMs < 1 || info.TotalMem <= 0 || info.Driver < 1000 || info.MaxThreads < 1 || info.SharedOptin < 48<<10 {
		t.Errorf("implausible Info %+v", info)
	}
}

func TestGPUMemory(t *testing.T) { checkMemory(t, device(t)) }

func TestGPUPinned(t *testing.T) { checkPinned(t, device(t)) }

func TestGPUEvents(t *testing.T) { checkEvents(t, device(t)) }

func TestGPUConcurrent(t *testing.T) { checkConcurrent(t, device(t)) }

func TestGPUGemm(t *testing.T) {
	d := device(t)
	for _, c := range gemmCases {
		t.Run(c.name, func(t *testing.T) { checkGemmCase(t, d, c) })
	}
	checkGemmErrors(t, d)
	t.Logf("cuBLAS %d", d.Info().Cublas)
}

// testKernels exercises every Launch argument type and dynamic shared
// memory.
const testKernels = `
extern "C" __global__ void axpb(float *y, const float *x, float a, float b, int n,
                                long long off, unsigned int flag, unsigned long long tag,
                                unsigned long long *echo) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) y[i] = a * x[i] + b;
	if (i == 0) {
		echo[0] = (unsigned long long)(long long)n;
		echo[1] = (unsigned long long)off;
		echo[2] = flag;
		echo[3] = tag;
		echo[4] = __float_as_uint(a);
		echo[5] = __float_as_uint(b);
		echo[6] = (unsigned long long)x;
		echo[7] = gridDim.x;
		echo[8] = blockDim.x;
	}
}

// Reverses each block's elements through dynamic shared memory.
extern "C" __global__ void reverse_block(float *y, const float *x) {
	extern __shared__ float sm[];
	int t = threadIdx.x, base = blockIdx.x * blockDim.x;
	sm[t] = x[base + t];
	__syncthreads();
	y[base + t] = sm[blockDim.x - 1 - t];
}

// Fills and sums n floats of dynamic shared memory (i % 16 each).
extern "C" __global__ void shared_sum(float *out, int n) {
	extern __shared__ float sm[];
	for (int i = threadIdx.x; i < n; i += blockDim.x) sm[i] = (float)(i % 16);
	__syncthreads();
	float s = 0;
	for (int i = threadIdx.x; i < n; i += blockDim.x) s += sm[n - 1 - i];
	atomicAdd(out, s);
}
`

func TestGPUKernel(t *testing.T) {
	d := device(t)
	m, log, err := d.Build(testKernels, "test_kernels.cu", []string{"-lineinfo"})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	defer m.Close()
	info := d.Info()
	t.Logf("NVRTC %v, build log %q", info.NVRTC, log)
	if info.NVRTC[0] == 0 {
		t.Errorf("Info().NVRTC = %v after Build", info.NVRTC)
	}
	s := stream(t, d)

	t.Run("axpb arguments", func(t *testing.T) {
		f, err := m.Function("axpb")
		must(t, err)
		const n = 1000
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(i) - 500
		}
		px, py, echo := malloc(t, d, 4*n), malloc(t, d, 4*n), malloc(t, d, 8*9)
		must(t, s.CopyHtoD(px, f32Bytes(x)))
		const a, b = float32(1.5), float32(-0.25)
		grid, block := Dim3{X: (n + 127) / 128}, Dim3{X: 128}
		must(t, s.Launch(f, grid, block, 0, py, px, a, b, n, int64(-3), uint32(0xdeadbeef), uint64(1<<63+5), echo))
		got := make([]byte, 4*n)
		must(t, s.CopyDtoH(got, py))
		eb := make([]byte, 8*9)
		must(t, s.CopyDtoH(eb, echo))
		must(t, s.Sync())
		y := decode(got, F32)
		for i := range n {
			if want := float64(a*x[i] + b); y[i] != want {
				t.Fatalf("y[%d] = %g, want %g", i, y[i], want)
			}
		}
		want := []uint64{n, uint64(1<<64 - 3), 0xdeadbeef, 1<<63 + 5, uint64(math.Float32bits(a)), uint64(math.Float32bits(b)), uint64(px), 8, 128}
		names := []string{"n (int)", "off (int64)", "flag (uint32)", "tag (uint64)", "a (float32)", "b (float32)", "x (DevPtr)", "gridDim.x", "blockDim.x"}
		for i, w := range want {
			if g := binary.LittleEndian.Uint64(eb[8*i:]); g != w {
				t.Errorf("kernel saw %s = %#x, want %#x", names[i], g, w)
			}
		}
	})

	t.Run("dynamic shared memory", func(t *testing.T) {
		f, err := m.Function("reverse_block")
		must(t, err)
		const blocks, threads = 7, 256
		x := make([]float32, blocks*threads)
		for i := range x {
			x[i] = float32(i)
		}
		px, py := malloc(t, d, 4*int64(len(x))), malloc(t, d, 4*int64(len(x)))
		must(t, s.CopyHtoD(px, f32Bytes(x)))
		must(t, s.Launch(f, Dim3{X: blocks}, Dim3{X: threads}, 4*threads, py, px))
		got := make([]byte, 4*len(x))
		must(t, s.CopyDtoH(got, py))
		must(t, s.Sync())
		y := decode(got, F32)
		for i := range y {
			blk, th := i/threads, i%threads
			if want := float64(blk*threads + threads - 1 - th); y[i] != want {
				t.Fatalf("y[%d] = %g, want %g", i, y[i], want)
			}
		}
	})

	t.Run("shared memory above 48 KiB", func(t *testing.T) {
		f, err := m.Function("shared_sum")
		must(t, err)
		const bytes = 96 << 10
		if info.SharedOptin < bytes {
			t.Skipf("device allows %d bytes of shared memory per block", info.SharedOptin)
		}
		out := malloc(t, d, 4)
		must(t, s.Memset(out, 4, 0))
		if err := s.Launch(f, Dim3{}, Dim3{X: 256}, bytes, out, bytes/4); err == nil {
			t.Error("launch with 96 KiB of shared memory before SetMaxDynamicShared: no error")
			must(t, s.Sync())
			must(t, s.Memset(out, 4, 0))
		}
		must(t, f.SetMaxDynamicShared(bytes))
		must(t, s.Launch(f, Dim3{}, Dim3{X: 256}, bytes, out, bytes/4))
		got := make([]byte, 4)
		must(t, s.CopyDtoH(got, out))
		must(t, s.Sync())
		if g, want := decode(got, F32)[0], float64(bytes/4/16*120); g != want {
			t.Errorf("sum over %d bytes of shared memory = %g, want %g", bytes, g, want)
		}
	})

	t.Run("timing", func(t *testing.T) {
		f, err := m.Function("reverse_block")
		must(t, err)
		const blocks, threads = 4096, 256
		px, py := malloc(t, d, 4*blocks*threads), malloc(t, d, 4*blocks*threads)
		start, err := d.NewEvent(true)
		must(t, err)
		defer start.Close()
		end, err := d.NewEvent(true)
		must(t, err)
		defer end.Close()
		must(t, start.Record(s))
		for range 10 {
			must(t, s.Launch(f, Dim3{X: blocks}, Dim3{X: threads}, 4*threads, py, px))
		}
		must(t, end.Record(s))
		must(t, end.Sync())
		el, err := Elapsed(start, end)
		must(t, err)
		if el <= 0 {
			t.Errorf("Elapsed = %v", el)
		}
		t.Logf("10 launches of reverse_block over %d floats: %v", blocks*threads, el)
	})

	t.Run("errors", func(t *testing.T) {
		var ce *Error
		if _, err := m.Function("no_such_kernel"); !errors.As(err, &ce) || ce.Name != "CUDA_ERROR_NOT_FOUND" {
			t.Errorf("Function(no_such_kernel): %v", err)
		}
		f, err := m.Function("axpb")
		must(t, err)
		// All nine arguments: the driver reads as many as the kernel has.
		if err := s.Launch(f, Dim3{}, Dim3{X: 4096}, 0, DevPtr(0), DevPtr(0), float32(1), float32(0), 0, int64(0), uint32(0), uint64(0), DevPtr(0)); err == nil {
			t.Error("launch with 4096 threads per block: no error")
		} else {
			t.Logf("4096 threads per block: %v", err)
		}
		// The stream is still usable after a refused launch.
		must(t, s.Sync())
	})
}

func TestGPUCompile(t *testing.T) {
	d := device(t)
	info := d.Info()
	_, log, err := d.Build("__global__ void broken( { }", "broken.cu", nil)
	if err == nil || !strings.Contains(err.Error(), "broken.cu") || !strings.Contains(log, "error") {
		t.Errorf("Build of bad source: error %v, log %q", err, log)
	} else {
		t.Logf("Build of bad source: %v", err)
	}

	src := `extern "C" __global__ void fill(float *y, float v, int n) {
		int i = blockIdx.x * blockDim.x + threadIdx.x;
		if (i < n) y[i] = v;
	}`
	for _, arch := range []string{fmt.Sprintf("sm_%d%d", info.Major, info.Minor), fmt.Sprintf("compute_%d%d", info.Major, info.Minor)} {
		t.Run(arch, func(t *testing.T) {
			img, _, err := CompileImage(src, "fill.cu", arch, nil)
			if err != nil {
				t.Fatalf("CompileImage: %v", err)
			}
			if strings.HasPrefix(arch, "sm_") != isELF(img) {
				t.Errorf("%s image starts %q: want ELF only for sm_", arch, img[:min(8, len(img))])
			}
			m, err := d.LoadImage(img)
			if err != nil {
				t.Fatalf("LoadImage(%d bytes): %v", len(img), err)
			}
			defer m.Close()
			f, err := m.Function("fill")
			must(t, err)
			s := stream(t, d)
			const n = 300
			p := malloc(t, d, 4*n)
			must(t, s.Launch(f, Dim3{X: 3}, Dim3{X: 128}, 0, p, float32(2.5), n))
			got := make([]byte, 4*n)
			must(t, s.CopyDtoH(got, p))
			must(t, s.Sync())
			for i, v := range decode(got, F32) {
				if v != 2.5 {
					t.Fatalf("y[%d] = %g, want 2.5", i, v)
				}
			}
		})
	}
}

// BenchmarkGPULaunch measures queueing an empty kernel.
func BenchmarkGPULaunch(b *testing.B) {
	d := device(b)
	m, _, err := d.Build(`extern "C" __global__ void empty(float *p, int n) {}`, "empty.cu", nil)
	must(b, err)
	defer m.Close()
	f, err := m.Function("empty")
	must(b, err)
	s := stream(b, d)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Launch(f, Dim3{X: 1}, Dim3{X: 32}, 0, DevPtr(0), 0); err != nil {
			b.Fatal(err)
		}
	}
	must(b, s.Sync())
}

// BenchmarkGPUGemmBF16 measures a 4096³ bf16 GEMM with float32 output.
func BenchmarkGPUGemmBF16(b *testing.B) {
	d := device(b)
	bl, err := d.Blas()
	must(b, err)
	const n = 4096
	pa, pb, pc := malloc(b, d, 2*n*n), malloc(b, d, 2*n*n), malloc(b, d, 4*n*n)
	s := stream(b, d)
	must(b, s.Memset(pa, 2*n*n, 0x3c)) // bf16 0x3c3c ≈ 0.0115
	must(b, s.Memset(pb, 2*n*n, 0x3c))
	for b.Loop() {
		if err := bl.Gemm(s, false, false, n, n, n, 1, pa, BF16, n, pb, BF16, n, 0, pc, F32, n); err != nil {
			b.Fatal(err)
		}
		must(b, s.Sync())
	}
	b.ReportMetric(2*n*n*n*float64(b.N)/b.Elapsed().Seconds()/1e12, "TFLOP/s")
}
