// norm.cu: RMSNorm, as kernel.RMSNorm.
//
//	rstd = 1/sqrt(mean_d x[row,d]^2 + eps),  out[row,d] = x[row,d]*rstd*w[d]
//
// One block per row; blockDim.x a multiple of 32. x (rows, dim) float, w
// (dim) float, out (rows, dim) float or act. out may alias x (float out):
// each thread rewrites only the elements it read, after the row's sum.

template <typename O>
__device__ __forceinline__ void rmsnorm_row(O* out, const float* x, const float* w, int rows, int dim, float eps) {
	__shared__ float red[WARP];
	int row = blockIdx.x;
	if (row >= rows) {
		return;
	}
	const float* xr = x + (i64)row * dim;
	float ss = 0.0f;
	for (int d = threadIdx.x; d < dim; d += blockDim.x) {
		float v = xr[d];
		ss += v * v;
	}
	ss = block_sum(ss, red);
	float r = 1.0f / sqrtf(ss / (float)dim + eps);
	for (int d = threadIdx.x; d < dim; d += blockDim.x) {
		st(out, (i64)row * dim + d, xr[d] * r * w[d]);
	}
}

extern "C" __global__ void rmsnorm_f32(float* out, const float* x, const float* w, int rows, int dim, float eps) {
	rmsnorm_row(out, x, w, rows, dim, eps);
}

extern "C" __global__ void rmsnorm_act(act_t* out, const float* x, const float* w, int rows, int dim, float eps) {
	rmsnorm_row(out, x, w, rows, dim, eps);
}
