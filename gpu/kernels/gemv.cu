// gemv.cu: the grouped expert product for decode and small batches, also
// the plain small-T GEMV (one "expert").
//
//	out[r] = x[r] . W_e^T + beta*out[r]   for r in rowOff[e] .. rowOff[e+1]-1
//
// out (R, N) float; x (R, Kd) act; wptrs (nE) device addresses of the
// experts' W (N, Kd) row-major, 16-byte aligned; rowOff (nE+1) int32. beta
// = 0 overwrites out (its old contents are not read).
//
// It is memory-bound: each warp owns NR consecutive weight rows and walks
// them with 16-byte loads (8 bf16 or 4 float per lane and step), reading
// each weight once for all of the expert's rows; the expert's x rows are
// staged in shared memory as float, KT columns at a time, and each staged
// x vector is reused for the NR weight rows. Blocks of GEMV_WARPS warps;
// grid x = ceil(N / (GEMV_WARPS*NR)), y = expert. A kernel variant handles
// up to M rows per pass (M = 1, 2, 4, 8, 16; an expert with more rows takes
// several passes); V is the elements per lane and step (8 bf16 or 4 float
// with 16-byte loads when Kd allows, else 1).

#define GEMV_WARPS 8
#define GEMV_NR 4

// load_w reads V consecutive weights at p as float.
template <int V>
__device__ __forceinline__ void load_w(const bf16_t* p, float* w) {
	if (V == 8) {
		uint4 u = *reinterpret_cast<const uint4*>(p);
		w[0] = __uint_as_float(u.x << 16);
		w[1] = __uint_as_float(u.x & 0xffff0000u);
		w[2] = __uint_as_float(u.y << 16);
		w[3] = __uint_as_float(u.y & 0xffff0000u);
		w[4] = __uint_as_float(u.z << 16);
		w[5] = __uint_as_float(u.z & 0xffff0000u);
		w[6] = __uint_as_float(u.w << 16);
		w[7] = __uint_as_float(u.w & 0xffff0000u);
	} else {
#pragma unroll
		for (int v = 0; v < V; v++) {
			w[v] = bf16_to_f32(p[v]);
		}
	}
}

template <int V>
__device__ __forceinline__ void load_w(const float* p, float* w) {
	if (V == 4) {
		float4 f = *reinterpret_cast<const float4*>(p);
		w[0] = f.x;
		w[1] = f.y;
		w[2] = f.z;
		w[3] = f.w;
	} else {
#pragma unroll
		for (int v = 0; v < V; v++) {
			w[v] = p[v];
		}
	}
}

template <typename WT, int V, int M>
__device__ __forceinline__ void experts_gemv(float* out, const act_t* x, const u64* wptrs, const int* rowOff,
	int nE, int N, int Kd, int KT, float beta) {
	int e = blockIdx.y;
	if (e >= nE) {
		return;
	}
	int r0 = rowOff[e], r1 = rowOff[e + 1];
	if (r1 <= r0) {
		return; // the whole block: no __syncthreads is pending
	}
	DYNAMIC_SHARED(float, xs); // (M, KT)
	const WT* W = reinterpret_cast<const WT*>(wptrs[e]);
	int lane = threadIdx.x % WARP, warp = threadIdx.x / WARP;
	int n0 = (blockIdx.x * GEMV_WARPS + warp) * GEMV_NR;
	for (int rb = r0; rb < r1; rb += M) {
		int m = min(M, r1 - rb);
		float acc[GEMV_NR][M];
#pragma unroll
		for (int i = 0; i < GEMV_NR; i++) {
#pragma unroll
			for (int r = 0; r < M; r++) {
				acc[i][r] = 0.0f;
			}
		}
		for (int kc = 0; kc < Kd; kc += KT) {
			int kt = min(KT, Kd - kc);
			__syncthreads(); // the previous tile is consumed
			for (int idx = threadIdx.x; idx < M * kt; idx += blockDim.x) {
				int r = idx / kt, k = idx - r * kt;
				xs[r * KT + k] = r < m ? ld(x, (i64)(rb + r) * Kd + kc + k) : 0.0f;
			}
			__syncthreads();
			if (n0 >= N) {
				continue; // this warp has no rows; it still helps stage x
			}
#pragma unroll 2
			for (int k = lane * V; k < kt; k += WARP * V) {
				float wv[GEMV_NR][V];
#pragma unroll
				for (int i = 0; i < GEMV_NR; i++) {
					int n = n0 + i;
					if (n < N) {
						load_w<V>(W + (i64)n * Kd + kc + k, wv[i]);
					} else {
#pragma unroll
						for (int v = 0; v < V; v++) {
							wv[i][v] = 0.0f;
						}
					}
				}
#pragma unroll
				for (int r = 0; r < M; r++) {
					if (r < m) {
						float xv[V];
						const float* xp = xs + r * KT + k;
						if (V % 4 == 0) {
#pragma unroll
							for (int v = 0; v < V; v += 4) {
								float4 f = *reinterpret_cast<const float4*>(xp + v);
								xv[v] = f.x;
								xv[v + 1] = f.y;
								xv[v + 2] = f.z;
								xv[v + 3] = f.w;
							}
						} else {
#pragma unroll
							for (int v = 0; v < V; v++) {
								xv[v] = xp[v];
							}
						}
#pragma unroll
						for (int i = 0; i < GEMV_NR; i++) {
#pragma unroll
							for (int v = 0; v < V; v++) {
								acc[i][r] += wv[i][v] * xv[v];
							}
						}
					}
				}
			}
		}
		if (n0 < N) {
#pragma unroll
			for (int i = 0; i < GEMV_NR; i++) {
#pragma unroll
				for (int r = 0; r < M; r++) {
					if (r < m) {
						float v = warp_sum(acc[i][r]);
						int n = n0 + i;
						if (lane == 0 && n < N) {
							float* o = out + (i64)(rb + r) * N + n;
							*o = beta == 0.0f ? v : v + beta * *o;
						}
					}
				}
			}
		}
	}
}

#define GEMV_KERNEL(name, WT, V, M) \
	extern "C" __global__ void __launch_bounds__(GEMV_WARPS * WARP) name(float* out, const act_t* x, \
		const u64* wptrs, const int* rowOff, int nE, int N, int Kd, int KT, float beta) { \
		experts_gemv<WT, V, M>(out, x, wptrs, rowOff, nE, N, Kd, KT, beta); \
	}

// gemv_<weights>_<v: 16-byte loads | s: scalar>_m<rows per pass>
GEMV_KERNEL(gemv_bf16_v_m1, bf16_t, 8, 1)
GEMV_KERNEL(gemv_bf16_v_m2, bf16_t, 8, 2)
GEMV_KERNEL(gemv_bf16_v_m4, bf16_t, 8, 4)
GEMV_KERNEL(gemv_bf16_v_m8, bf16_t, 8, 8)
GEMV_KERNEL(gemv_bf16_v_m16, bf16_t, 8, 16)
GEMV_KERNEL(gemv_bf16_s_m1, bf16_t, 1, 1)
GEMV_KERNEL(gemv_bf16_s_m2, bf16_t, 1, 2)
GEMV_KERNEL(gemv_bf16_s_m4, bf16_t, 1, 4)
GEMV_KERNEL(gemv_bf16_s_m8, bf16_t, 1, 8)
GEMV_KERNEL(gemv_bf16_s_m16, bf16_t, 1, 16)
GEMV_KERNEL(gemv_f32_v_m1, float, 4, 1)
GEMV_KERNEL(gemv_f32_v_m2, float, 4, 2)
GEMV_KERNEL(gemv_f32_v_m4, float, 4, 4)
GEMV_KERNEL(gemv_f32_v_m8, float, 4, 8)
GEMV_KERNEL(gemv_f32_v_m16, float, 4, 16)
GEMV_KERNEL(gemv_f32_s_m1, float, 1, 1)
GEMV_KERNEL(gemv_f32_s_m2, float, 1, 2)
GEMV_KERNEL(gemv_f32_s_m4, float, 1, 4)
GEMV_KERNEL(gemv_f32_s_m8, float, 1, 8)
GEMV_KERNEL(gemv_f32_s_m16, float, 1, 16)
