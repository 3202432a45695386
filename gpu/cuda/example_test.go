package cuda_test

import (
	"errors"
	"fmt"
	"log"

	"github.com/moesys/moesys/gpu/cuda"
)

// Compile a kernel, launch it on a stream and read the result back,
// falling back when there is no GPU.
func Example() {
	d, err := cuda.Open(0)
	if errors.Is(err, cuda.ErrUnavailable) {
		fmt.Println("no GPU; using the CPU backend:", err)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()

	m, _, err := d.Build(`extern "C" __global__ void fill(float *y, float v, int n) {
		int i = blockIdx.x * blockDim.x + threadIdx.x;
		if (i < n) y[i] = v;
	}`, "fill.cu", nil)
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	fill, err := m.Function("fill")
	if err != nil {
		log.Fatal(err)
	}

	s, err := d.NewStream()
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	const n = 1000
	y, err := d.Malloc(4 * n)
	if err != nil {
		log.Fatal(err)
	}
	defer d.Free(y)
	host, err := d.HostAlloc(4 * n) // pinned: the copy back is asynchronous
	if err != nil {
		log.Fatal(err)
	}
	defer d.HostFree(host)

	if err := s.Launch(fill, cuda.Dim3{X: (n + 255) / 256}, cuda.Dim3{X: 256}, 0, y, float32(2.5), n); err != nil {
		log.Fatal(err)
	}
	if err := s.CopyDtoH(host, y); err != nil {
		log.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(host[:4]) // 2.5 as little-endian float32: [0 0 32 64]
}
