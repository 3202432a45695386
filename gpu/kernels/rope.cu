// rope.cu: rotary position embeddings in place, as kernel.RoPE (Hugging
// Face rotate_half, partial rotary): in each head the first rotDim dims
// are halves x1 = x[0:h], x2 = x[h:rotDim] (h = rotDim/2) and
//
//	x1[i], x2[i] = x1[i]*c - x2[i]*s,  x2[i]*c + x1[i]*s,  c, s = cos, sin[pos[t], i]
//
// x (T, H, Dh) float; pos (T) int32 in [0, maxPos); cos, sin (maxPos, h).
// maxPos < 0 means unknown: positions are then only checked against 0.
// One thread per (t, head, i); rows with a position outside the tables
// are left unrotated.

extern "C" __global__ void rope(float* x, const int* pos, int T, int H, int Dh, int rotDim, const float* cos_t, const float* sin_t, int maxPos) {
	int half = rotDim / 2;
	i64 n = (i64)T * H * half;
	for (i64 idx = (i64)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (i64)gridDim.x * blockDim.x) {
		int i = (int)(idx % half);
		i64 th = idx / half; // t*H + head
		int t = (int)(th / H);
		int p = pos[t];
		if (p < 0 || (maxPos >= 0 && p >= maxPos)) {
			continue;
		}
		float c = cos_t[(i64)p * half + i], s = sin_t[(i64)p * half + i];
		float* xh = x + th * Dh;
		float a = xh[i], b = xh[half + i];
		xh[i] = a * c - b * s;
		xh[half + i] = b * c + a * s;
	}
}
