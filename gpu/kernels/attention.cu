// attention.cu: causal softmax attention over a KV cache, grouped KV heads,
// optional sliding window, as kernel.Attention / kernel.AttentionRef.
//
// Query t (row t of q, position p = pos0 + t) of head h attends with KV
// head g = h/(H/G) to the keys j with j <= p and, when window > 0,
// p - j < window. q (T, H*Dh) float; kc, vc (S, G*Dh) act; out (T, H*Dh)
// act. Scores scale*q.k and the online softmax are float.
//
// attn_split: one warp per query (t, h); the warps of a block share one KV
// head g (their queries are consecutive in (t, h%rep) order) and stream its
// keys through shared memory in chunks of KC keys, each lane scoring one
// key (two lanes per key when Dh > 128). Grid: x = split of the key range
// from kbase (the first key any query sees) in splits of splitLen keys
// (flash-decoding), y = block of NW queries of the group, z = g. With one
// split the block writes out; with more, each writes its unnormalised
// partial (o[Dh], max m, sum l) to part ((T*H*nsplit), Dh+2) and
// attn_combine merges them.

#define ATT_MAX_DH 256
#define ATT_MAX_WARPS 8

__device__ __forceinline__ int att_chunk(int Dh) { return Dh <= 128 ? 32 : 16; }

extern "C" __global__ void attn_split(act_t* out, float* part, const float* q, const act_t* kc, const act_t* vc,
	int T, int S, int H, int G, int Dh, int pos0, int window, float scale, int nsplit, int splitLen, int kbase) {
	const float NEG_INF = -__int_as_float(0x7f800000);
	int KC = att_chunk(Dh), LPK = WARP / KC;
	int NW = blockDim.x / WARP;
	int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
	int rep = H / G, g = blockIdx.z, split = blockIdx.x;
	int nq = T * rep; // queries of group g
	int qfirst = blockIdx.y * NW;
	if (qfirst >= nq) {
		return;
	}
	int qlast = min(nq, qfirst + NW) - 1;
	int qi = qfirst + w;
	bool active = qi < nq;
	int t = active ? qi / rep : 0, h = g * rep + (active ? qi % rep : 0);

	DYNAMIC_SHARED(float, sm);
	float* ks = sm;                     // (KC, Dh+1): padded, lanes read different keys
	float* vs = ks + KC * (Dh + 1);     // (KC, Dh)
	float* qs = vs + KC * Dh + w * Dh;  // this warp's query (Dh)
	float* ps = vs + KC * Dh + NW * Dh + w * KC; // this warp's chunk probabilities (KC)

	// The keys any query of the block sees, within this split.
	int tmin = qfirst / rep, tmax = qlast / rep;
	int lo = window > 0 ? max(0, pos0 + tmin - window + 1) : 0;
	int hi = pos0 + tmax;
	lo = max(lo, kbase + split * splitLen);
	hi = min(hi, min(S, kbase + (split + 1) * splitLen) - 1);
	// This warp's own range.
	int p = pos0 + t;
	int mlo = window > 0 ? max(0, p - window + 1) : 0;

	if (active) {
		const float* qr = q + ((i64)t * H + h) * Dh;
		for (int d = lane; d < Dh; d += WARP) {
			qs[d] = qr[d];
		}
	}
	float m = NEG_INF, l = 0.0f;
	float o[ATT_MAX_DH / WARP];
#pragma unroll
	for (int i = 0; i < ATT_MAX_DH / WARP; i++) {
		o[i] = 0.0f;
	}
	int kk = lane / LPK, seg = (Dh + LPK - 1) / LPK;
	int d0 = (lane % LPK) * seg, d1 = min(Dh, d0 + seg);
	for (int j0 = lo; j0 <= hi; j0 += KC) {
		__syncthreads(); // the previous chunk is consumed
		for (int idx = threadIdx.x; idx < KC * Dh; idx += blockDim.x) {
			int c = idx / Dh, d = idx - c * Dh, j = j0 + c;
			float kv = 0.0f, vv = 0.0f;
			if (j <= hi) {
				i64 at = ((i64)j * G + g) * Dh + d;
				kv = ld(kc, at);
				vv = ld(vc, at);
			}
			ks[c * (Dh + 1) + d] = kv;
			vs[c * Dh + d] = vv;
		}
		__syncthreads();
		if (!active) {
			continue;
		}
		// Score of key j0+kk (this lane's share of the dot product).
		float s = 0.0f;
		const float* kr = ks + kk * (Dh + 1);
		for (int d = d0; d < d1; d++) {
			s += qs[d] * kr[d];
		}
		if (LPK == 2) {
			s += __shfl_xor_sync(FULL_MASK, s, 1);
		}
		int j = j0 + kk;
		bool vis = j <= hi && j >= mlo && j <= p;
		s = vis ? s * scale : NEG_INF;
		float mn = fmaxf(m, warp_max(s));
		if (mn == NEG_INF) {
			continue; // nothing visible yet (uniform across the warp)
		}
		float alpha = expf(m - mn); // 0 while m is -inf
		float pj = vis ? expf(s - mn) : 0.0f;
		l = l * alpha + warp_sum(lane % LPK == 0 ? pj : 0.0f);
		if (lane % LPK == 0) {
			ps[kk] = pj;
		}
		__syncwarp();
#pragma unroll
		for (int i = 0; i < ATT_MAX_DH / WARP; i++) {
			int d = lane + i * WARP;
			if (d < Dh) {
				float acc = o[i] * alpha;
				for (int c = 0; c < KC; c++) {
					acc += ps[c] * vs[c * Dh + d];
				}
				o[i] = acc;
			}
		}
		__syncwarp(); // ps is rewritten by the next chunk
		m = mn;
	}
	if (!active) {
		return;
	}
	i64 row = (i64)t * H + h;
	if (nsplit == 1) {
		float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
		for (int i = 0; i < ATT_MAX_DH / WARP; i++) {
			int d = lane + i * WARP;
			if (d < Dh) {
				st(out, row * Dh + d, o[i] * inv);
			}
		}
		return;
	}
	float* pr = part + (row * nsplit + split) * (Dh + 2);
#pragma unroll
	for (int i = 0; i < ATT_MAX_DH / WARP; i++) {
		int d = lane + i * WARP;
		if (d < Dh) {
			pr[d] = o[i];
		}
	}
	if (lane == 0) {
		pr[Dh] = m;
		pr[Dh + 1] = l;
	}
}

// attn_combine merges the nsplit partials of query row (t, h) = blockIdx.x:
// out = Σ_s o_s e^(m_s-M) / Σ_s l_s e^(m_s-M), M = max_s m_s. One thread
// per output dim.
extern "C" __global__ void attn_combine(act_t* out, const float* part, int rows, int Dh, int nsplit) {
	const float NEG_INF = -__int_as_float(0x7f800000);
	int row = blockIdx.x;
	if (row >= rows) {
		return;
	}
	const float* pr = part + (i64)row * nsplit * (Dh + 2);
	float M = NEG_INF;
	for (int s = 0; s < nsplit; s++) {
		M = fmaxf(M, pr[(i64)s * (Dh + 2) + Dh]);
	}
	float L = 0.0f;
	for (int s = 0; s < nsplit; s++) {
		float ms = pr[(i64)s * (Dh + 2) + Dh];
		if (ms != NEG_INF) {
			L += pr[(i64)s * (Dh + 2) + Dh + 1] * expf(ms - M);
		}
	}
	float inv = L > 0.0f ? 1.0f / L : 0.0f;
	for (int d = threadIdx.x; d < Dh; d += blockDim.x) {
		float acc = 0.0f;
		for (int s = 0; s < nsplit; s++) {
			float ms = pr[(i64)s * (Dh + 2) + Dh];
			if (ms != NEG_INF) {
				acc += pr[(i64)s * (Dh + 2) + d] * expf(ms - M);
			}
		}
		st(out, (i64)row * Dh + d, acc * inv);
	}
}
