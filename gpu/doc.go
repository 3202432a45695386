// Package gpu runs moesys' inference path on an NVIDIA GPU: the device is
// the fast tier, pinned host memory below it and the disk below that, under
// the same offload.Scheduler and policies as the CPU path.
//
// Open gives a Backend: the device (package cuda, loaded at run time), a
// compute stream and a copy stream, the kernels (package kernels, compiled
// with NVRTC at first use) and cuBLAS; it fails with an error wrapping
// cuda.ErrUnavailable where there is no GPU, and callers fall back to the
// CPU with Notice's one line. Upload copies a loaded model.Model's weights
// to the device (bf16 or f32 compute), leaving the routed experts on the
// host when the model was loaded for offloading; DeviceSlots is the
// offload.DeviceMemory whose slots the scheduler fills over the copy
// stream from pinned host memory (PinnedStore) or from disk through pinned
// bounce buffers. A Session is one sequence: its KV cache in device memory
// and Forward, which mirrors model.Batch.Forward kernel for kernel, routing
// on the host from logits copied back so that routing is exactly the CPU
// path's for the same logits.
package gpu
