// clang_prelude.cuh: what NVRTC provides built in, spelled for clang's
// CUDA front end, so that TestClangCompile can compile the kernel sources
// with clang -x cuda --cuda-device-only -nocudainc -nocudalib (no CUDA
// toolkit). Used only by that test; NVRTC never sees it.

#define __host__ __attribute__((host))
#define __device__ __attribute__((device))
#define __global__ __attribute__((global))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...) __attribute__((launch_bounds(__VA_ARGS__)))
#include <__clang_cuda_builtin_vars.h>

struct __align__(16) uint4 { unsigned int x, y, z, w; };
struct __align__(16) float4 { float x, y, z, w; };

static __device__ __forceinline__ float __int_as_float(int v) { return __builtin_bit_cast(float, v); }
static __device__ __forceinline__ float __uint_as_float(unsigned int v) { return __builtin_bit_cast(float, v); }
static __device__ __forceinline__ int __float_as_int(float v) { return __builtin_bit_cast(int, v); }
static __device__ __forceinline__ unsigned int __float_as_uint(float v) { return __builtin_bit_cast(unsigned int, v); }

static __device__ __forceinline__ int __shfl_xor_sync(unsigned m, int v, int o) { return __nvvm_shfl_sync_bfly_i32(m, v, o, 0x1f); }
static __device__ __forceinline__ unsigned __shfl_xor_sync(unsigned m, unsigned v, int o) { return (unsigned)__nvvm_shfl_sync_bfly_i32(m, (int)v, o, 0x1f); }
static __device__ __forceinline__ float __shfl_xor_sync(unsigned m, float v, int o) { return __nvvm_shfl_sync_bfly_f32(m, v, o, 0x1f); }
static __device__ __forceinline__ double __shfl_xor_sync(unsigned m, double v, int o) {
	long long b = __builtin_bit_cast(long long, v);
	int lo = __nvvm_shfl_sync_bfly_i32(m, (int)b, o, 0x1f);
	int hi = __nvvm_shfl_sync_bfly_i32(m, (int)(b >> 32), o, 0x1f);
	return __builtin_bit_cast(double, ((long long)hi << 32) | (unsigned)lo);
}
static __device__ __forceinline__ int __any_sync(unsigned m, int p) { return __nvvm_vote_any_sync(m, p); }
static __device__ __forceinline__ void __syncwarp(unsigned m = 0xffffffffu) { __nvvm_bar_warp_sync(m); }
static __device__ __forceinline__ float __fadd_rn(float a, float b) { return __nvvm_add_rn_f(a, b); }
static __device__ __forceinline__ float __fmul_rn(float a, float b) { return __nvvm_mul_rn_f(a, b); }
static __device__ __forceinline__ int min(int a, int b) { return a < b ? a : b; }
static __device__ __forceinline__ int max(int a, int b) { return a > b ? a : b; }

// Math functions come from libdevice under NVRTC; here declarations suffice
// (nothing is linked).
extern "C" __device__ float expf(float);
extern "C" __device__ float sqrtf(float);
extern "C" __device__ float fmaxf(float, float);
extern "C" __device__ double exp(double);
