// prelude.cuh: definitions every kernel file uses. Load prepends it, after
// "#define ACT_BF16 0|1", to the .cu files. Only what NVRTC provides built
// in is used (no #include): bf16 is handled as its bit pattern.
//
// Conventions: row-major everywhere; float32 accumulation; "act" is the
// element type of GEMM inputs and the KV cache, float or bf16 (ACT_BF16).

#ifndef ACT_BF16
#error "ACT_BF16 must be defined to 0 or 1"
#endif

typedef unsigned short bf16_t;
typedef long long i64;
typedef unsigned long long u64;

#define WARP 32
#define FULL_MASK 0xffffffffu

// bf16_to_f32 widens a bf16 bit pattern; exact.
__device__ __forceinline__ float bf16_to_f32(bf16_t b) {
	return __uint_as_float(((unsigned int)b) << 16);
}

// f32_to_bf16 rounds to nearest, ties to even; NaN stays a quiet NaN with
// its sign, infinities and signed zeros are kept (as tensor.F32ToBF16).
__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
	unsigned int u = __float_as_uint(f);
	if ((u & 0x7fffffffu) > 0x7f800000u) {
		return (bf16_t)((u >> 16) | 0x0040u);
	}
	u += 0x7fffu + ((u >> 16) & 1u);
	return (bf16_t)(u >> 16);
}

// Element loads and stores by type: ld(p, i) returns p[i] as float, st
// stores a float rounded to the element type.
__device__ __forceinline__ float ld(const float* p, i64 i) { return p[i]; }
__device__ __forceinline__ float ld(const bf16_t* p, i64 i) { return bf16_to_f32(p[i]); }
__device__ __forceinline__ void st(float* p, i64 i, float v) { p[i] = v; }
__device__ __forceinline__ void st(bf16_t* p, i64 i, float v) { p[i] = f32_to_bf16(v); }

#if ACT_BF16
typedef bf16_t act_t;
#else
typedef float act_t;
#endif

// Warp reductions over all 32 lanes (every lane gets the result).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) {
		v += __shfl_xor_sync(FULL_MASK, v, o);
	}
	return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) {
		v += __shfl_xor_sync(FULL_MASK, v, o);
	}
	return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
	for (int o = 16; o > 0; o >>= 1) {
		v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
	}
	return v;
}

// block_sum returns the sum of v over the block (blockDim.x a multiple of
// 32, at most 1024) to every thread; red is 32 floats of shared memory.
// It synchronises the block, so every thread must call it.
__device__ __forceinline__ float block_sum(float v, float* red) {
	int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, nw = blockDim.x / WARP;
	v = warp_sum(v);
	__syncthreads(); // red may still be read by a previous call
	if (lane == 0) {
		red[w] = v;
	}
	__syncthreads();
	v = lane < nw ? red[lane] : 0.0f;
	return warp_sum(v);
}

// DYNAMIC_SHARED declares name as a T* to the block's dynamic shared memory.
#ifndef DYNAMIC_SHARED
#define DYNAMIC_SHARED(T, name) \
	extern __shared__ __align__(16) unsigned char name##_raw_[]; \
	T* name = reinterpret_cast<T*>(name##_raw_)
#endif
