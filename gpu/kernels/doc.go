// Package kernels holds moesys' CUDA C kernels for the inference path and
// their Go launch wrappers. The sources (prelude.cuh and the .cu files,
// one per concept) are embedded in the binary; Load compiles them with
// NVRTC on the GPU for the chosen activation element type, so no CUDA
// toolkit is needed to build moesys.
//
// Conventions, shared with the GPU engine: row-major everywhere; the
// residual stream, GEMM outputs, q/k/v and router logits are float32;
// "Act" buffers (GEMM inputs: normed hidden states, attention and SwiGLU
// outputs; the KV cache) hold the Set's Act type, float32 or bf16 (stored
// as uint16 bit patterns, rounded to nearest even as tensor.F32ToBF16).
// Weights are bf16 or float32, given per call. Kernels accumulate in
// float32 and match the CPU references in package kernel and moe (each
// wrapper's comment says how closely).
//
// Every wrapper validates its shapes, returns an error for a shape the
// kernels do not support (wrapping ErrUnsupported) or an invalid one, and
// otherwise queues its kernels on the given stream without synchronising:
// the result is ready once the stream has passed it. Zero-sized calls
// launch nothing. Device pointers are not checked (sizes the call does not
// receive, such as an embedding table's rows, are the caller's contract,
// stated on each method).
//
// Usage:
//
//	k, err := kernels.Load(dev, cuda.BF16)
//	...
//	err = k.RMSNorm(s, h, k.Act(), x, w, T, D, eps)   // h = norm(x), bf16
//	err = k.ExpertsGemv(s, q, h, wq, cuda.BF16, off, 1, T, H*Dh, D, 0)
//
// Checks without a GPU: TestClangCompile compiles the sources with
// clang's CUDA front end (when clang-16 is installed) and the tests in
// this directory run every kernel on the CPU through package emu, a fiber
// emulator of the CUDA execution model, against the CPU references; on a
// machine with a GPU the same tests also run on it.
package kernels
