// route.cu: the MoE router's softmax and top-k, as moe.Router.Route.
//
// One warp per token row (blockDim.x = 32*rows per block). For the row's
// logits x (E):
//
//	m = max x (NaN if any x is NaN), e_i = exp(x_i - m), sum = Σ e_i in
//	double, p_i = e_i * (float)(1/sum)
//
// as kernel.Softmax (a row with NaN or +Inf, or all -Inf, comes out all
// NaN). Then the K largest p in descending order, ties to the lower id, NaN
// below every number (kernel.TopK), and with normalize their weights
// divided by their double sum when it is positive and finite. The one
// difference from the CPU is exp itself (CUDA's expf is within 2 ulp, the
// CPU's within 1), so probabilities may differ in the last bits and a
// selection can differ only between experts whose probabilities are that
// close.

#define ROUTE_MAX_E 1024 // experts per row: the probabilities live in shared memory
#define ROUTE_WARPS 4    // rows per block

// topk_better reports whether (a, ia) ranks before (b, ib): a larger
// value, a number before NaN, equal values (or two NaNs) by lower index.
// ib < 0 is "nothing", which everything beats.
__device__ __forceinline__ bool topk_better(float a, int ia, float b, int ib) {
	if (ib < 0) {
		return ia >= 0;
	}
	if (ia < 0) {
		return false;
	}
	bool an = a != a, bn = b != b;
	if (an != bn) {
		return bn;
	}
	if (!an && a != b) {
		return a > b;
	}
	return ia < ib;
}

extern "C" __global__ void softmax_topk(int* ids, float* weights, const float* logits, int T, int E, int K, int normalize) {
	__shared__ float prob[ROUTE_WARPS][ROUTE_MAX_E];
	__shared__ unsigned char taken[ROUTE_WARPS][ROUTE_MAX_E];
	int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
	int t = blockIdx.x * ROUTE_WARPS + w;
	if (t >= T || w >= ROUTE_WARPS) {
		return; // whole warps leave together
	}
	const float* x = logits + (i64)t * E;
	float* p = prob[w];

	// Row max; NaN wins (fmaxf would drop it).
	float m = -__int_as_float(0x7f800000);
	bool nan = false;
	for (int i = lane; i < E; i += WARP) {
		float v = x[i];
		nan = nan || v != v;
		m = fmaxf(m, v);
	}
	m = warp_max(m);
	if (__any_sync(FULL_MASK, nan)) {
		m = __int_as_float(0x7fc00000);
	}
	double sum = 0.0;
	for (int i = lane; i < E; i += WARP) {
		float e = expf(x[i] - m);
		p[i] = e;
		sum += (double)e;
		taken[w][i] = 0;
	}
	sum = warp_sum_d(sum);
	float inv = (float)(1.0 / sum);
	for (int i = lane; i < E; i += WARP) {
		p[i] *= inv;
	}
	__syncwarp();

	// K rounds of a warp arg-best over the untaken entries.
	float* wr = weights + (i64)t * K;
	int* ir = ids + (i64)t * K;
	for (int k = 0; k < K; k++) {
		float bv = 0.0f;
		int bi = -1;
		for (int i = lane; i < E; i += WARP) {
			if (!taken[w][i] && topk_better(p[i], i, bv, bi)) {
				bv = p[i];
				bi = i;
			}
		}
#pragma unroll
		for (int o = 16; o > 0; o >>= 1) {
			float ov = __shfl_xor_sync(FULL_MASK, bv, o);
			int oi = __shfl_xor_sync(FULL_MASK, bi, o);
			if (topk_better(ov, oi, bv, bi)) {
				bv = ov;
				bi = oi;
			}
		}
		if (lane == 0) {
			wr[k] = bv;
			ir[k] = bi;
			taken[w][bi] = 1;
		}
		__syncwarp();
	}
	if (normalize && lane == 0) {
		double s = 0.0;
		for (int k = 0; k < K; k++) {
			s += (double)wr[k];
		}
		if (s > 0.0 && s <= 1.7976931348623157e308) {
			for (int k = 0; k < K; k++) {
				wr[k] = (float)((double)wr[k] / s);
			}
		}
	}
}
