// Package cuda is moesys' binding to the NVIDIA driver, cuBLAS and NVRTC,
// loaded at run time: a small C shim dlopens libcuda.so.1, libcublas and
// libnvrtc and declares only the entry points moesys calls, so the project
// builds and tests with no CUDA headers or libraries present. On a machine
// without them, Open returns an error wrapping ErrUnavailable that says
// what is missing, and callers fall back to the CPU backend.
//
// Every call that needs a CUDA context makes the device's primary context
// current on the calling OS thread inside the same C call, so goroutines
// may call from any thread.
//
// Device pointers are DevPtr (a CUdeviceptr). Host memory handed to an
// asynchronous copy must stay valid and unmoved until the copy's stream
// has passed it: use pinned memory from Device.HostAlloc (not the Go
// heap) for asynchronous copies.
//
// The libraries are searched for in the directories of MOESYS_CUDA_LIBDIR
// (colon-separated), then by the dynamic loader; cuBLAS and NVRTC are
// loaded on first use (Device.Blas, Device.Build, CompileImage). Tests run
// the shim against a fake driver built from testdata/fakecuda, and the
// TestGPU* tests run on a real GPU when there is one.
package cuda
