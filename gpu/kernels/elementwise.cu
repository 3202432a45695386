// elementwise.cu: the row-wise and element-wise kernels of the inference
// path: embedding lookup, bias, SwiGLU, KV-cache append, gather (dispatch),
// combine, the sigmoid-gated shared-expert add, and type casts.
//
// Flat kernels use grid-stride loops over i64 indices, so any grid covers
// any size; row kernels take the row from blockIdx.x and stride the
// columns with the block.

// embed: out[t] = table[ids[t]] widened to float. out (T, D) float; table
// (V, D) W; ids (T) int32. An id outside [0, V) (V < 0: unchecked above)
// gives a zero row.
template <typename W>
__device__ __forceinline__ void embed_rows(float* out, const W* table, const int* ids, int T, int D, int V) {
	int t = blockIdx.x;
	if (t >= T) {
		return;
	}
	int id = ids[t];
	bool ok = id >= 0 && (V < 0 || id < V);
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		out[(i64)t * D + d] = ok ? ld(table, (i64)id * D + d) : 0.0f;
	}
}

extern "C" __global__ void embed_f32(float* out, const float* table, const int* ids, int T, int D, int V) {
	embed_rows(out, table, ids, T, D, V);
}

extern "C" __global__ void embed_bf16(float* out, const bf16_t* table, const int* ids, int T, int D, int V) {
	embed_rows(out, table, ids, T, D, V);
}

// add_bias: y[t, i] += b[i]. y (T, n) float, b (n) float.
extern "C" __global__ void add_bias(float* y, const float* b, int T, int n) {
	i64 total = (i64)T * n;
	for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
		y[i] += b[i % n];
	}
}

// swiglu: out = gate*up/(1 + exp(-gate)), as kernel.SwiGLU. out (n) act;
// gate, up (n) float.
extern "C" __global__ void swiglu(act_t* out, const float* gate, const float* up, i64 n) {
	for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
		float g = gate[i];
		st(out, i, g * up[i] / (1.0f + expf(-g)));
	}
}

// kv_append: cache[at + r] = rows[r] for r < n, rounded to act. cache
// (maxT, width) act; rows (n, width) float.
extern "C" __global__ void kv_append(act_t* cache, const float* rows, int at, int n, int width) {
	i64 total = (i64)n * width;
	act_t* dst = cache + (i64)at * width;
	for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
		st(dst, i, rows[i]);
	}
}

// gather: out[r] = x[src[r]] (the dispatch permutation). out (R, D) act;
// x (T, D) act; src (R) int32. A source outside [0, T) (T < 0: unchecked
// above) gives a zero row.
extern "C" __global__ void gather(act_t* out, const act_t* x, const int* src, int R, int T, int D) {
	int r = blockIdx.x;
	if (r >= R) {
		return;
	}
	int s = src[r];
	act_t* o = out + (i64)r * D;
	if (s < 0 || (T >= 0 && s >= T)) {
		for (int d = threadIdx.x; d < D; d += blockDim.x) {
			st(o, d, 0.0f);
		}
		return;
	}
	const act_t* xr = x + (i64)s * D;
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		o[d] = xr[d];
	}
}

// combine: x[t] += w[t,k]*y[slotRow[t,k]] for k = 0..K-1 in order,
// skipping slots whose row is negative (dropped) or not below R (R < 0:
// unchecked above), as moe.Combine. x (T, D) float; y (R, D) float;
// slotRow, w (T, K). Products and sums are rounded separately (no fused
// multiply-add), as the CPU computes them.
extern "C" __global__ void combine(float* x, const float* y, const int* slotRow, const float* w, int T, int K, int D, int R) {
	int t = blockIdx.x;
	if (t >= T) {
		return;
	}
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		float acc = x[(i64)t * D + d];
		for (int k = 0; k < K; k++) {
			int row = slotRow[(i64)t * K + k];
			if (row < 0 || (R >= 0 && row >= R)) {
				continue;
			}
			acc = __fadd_rn(acc, __fmul_rn(w[(i64)t * K + k], y[(i64)row * D + d]));
		}
		x[(i64)t * D + d] = acc;
	}
}

// sigmoid_gate_add: x[t] += sigmoid(gate[t])*y[t] (Qwen2-MoE's shared
// expert). The gate is computed in double and rounded once, as the CPU
// does; the add is unfused. x, y (T, D) float; gate (T) float.
extern "C" __global__ void sigmoid_gate_add(float* x, const float* y, const float* gate, int T, int D) {
	int t = blockIdx.x;
	if (t >= T) {
		return;
	}
	float g = (float)(1.0 / (1.0 + exp(-(double)gate[t])));
	for (int d = threadIdx.x; d < D; d += blockDim.x) {
		i64 i = (i64)t * D + d;
		x[i] = __fadd_rn(x[i], __fmul_rn(g, y[i]));
	}
}

// Casts between float and bf16 (round to nearest even), n elements.
extern "C" __global__ void cast_f32_bf16(bf16_t* dst, const float* src, i64 n) {
	for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
		dst[i] = f32_to_bf16(src[i]);
	}
}

extern "C" __global__ void cast_bf16_f32(float* dst, const bf16_t* src, i64 n) {
	for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
		dst[i] = bf16_to_f32(src[i]);
	}
}

// copy_u16 and copy_u32: same-type casts.
extern "C" __global__ void copy_u16(unsigned short* dst, const unsigned short* src, i64 n) {
	for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
		dst[i] = src[i];
	}
}

extern "C" __global__ void copy_u32(unsigned int* dst, const unsigned int* src, i64 n) {
	for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (i64)gridDim.x * blockDim.x) {
		dst[i] = src[i];
	}
}
