// Package kernel holds the numeric kernels of moesys: GEMM (all transpose
// combinations, accumulate-into via beta, bf16 weights, pre-packed weights),
// GEMV for decode, causal attention with grouped KV heads and sliding windows
// (tiled prefill and single-token decode over a KV cache), normalisations,
// RoPE, softmax, activations, top-k, cross-entropy, embeddings and AdamW, each
// with its backward pass where training needs one.
//
// Conventions: kernels take flat row-major slices and sizes, outputs first;
// they never allocate, except PackB and PackBF16 (load time) and one small
// closure per call that runs on more than one thread of the pool;
// shapes use the legend of docs/ARCHITECTURE.md (T tokens, D model dim, ...).
// A slice too short for the stated shape is a programmer error and panics with
// the op and shapes.
//
// Speed: the hot kernels (GEMM, GEMV, attention, and the elementwise AdamW,
// SwiGLU and attention-backward probabilities) run as C kernels with AVX-512
// (and VDPBF16PS where the CPU has AVX512_BF16) compiled through cgo with
// per-function target attributes, chosen at run time by CPU feature
// detection (see Level). CPUs with AVX2+FMA but no AVX-512 run GEMM, GEMV and
// the elementwise kernels as AVX2 C kernels and attention's forward in Go. Every other CPU, and builds
// without cgo, run the portable Go kernels. Each fast kernel has a naive twin in a *_ref.go file
// (float64 accumulation) that the tests hold it to on random, awkward shapes.
// Parallel kernels split work over a persistent worker pool (SetThreads; the
// default is one thread per CPU).
//
//	kernel.SetThreads(2)
//	// y (T x N) = x (T x K) times W^T, W in the Hugging Face Linear layout (N x K).
//	kernel.Gemm(false, true, T, N, K, 1, x, K, w, K, 0, y, N)
//	// The same with bf16 weights pre-packed once at load.
//	pw := kernel.PackBF16(kernel.BF16Exact, true, K, N, wBF16, K)
//	kernel.GemmPacked(false, T, 1, x, K, pw, 0, y, N)
package kernel
