//go:build cgo && amd64

// native_x86.c: AVX-512 GEMM, GEMV and attention kernels. Every function here
// is compiled for AVX-512 through target attributes and must only be called
// when the Go side has detected AVX-512F/BW/DQ/VL (and AVX512_BF16 for the
// bf16-dot kind). Layout of the GEMM follows the Goto/BLIS scheme: pack a
// KC-deep slice of A into MR-row micro-panels and of B into NR-column
// micro-panels, then sweep an MR x NR register tile over them.

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "native_common.h"
#include "native_x86.h"

#define T512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define T512BF __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx512bf16")))

#define NR MK_NR
// MR: rows of the register tile. 12 rows x 2 vectors = 24 accumulators, leaving
// registers for the two B vectors and a broadcast; 24 independent FMA chains
// cover the FMA latency (4 cycles) on both FMA pipes.
#define MR 12
// KC: depth of a packed slice. The A micro-panel (MR x KC floats = 24 KiB)
// stays in L1 while B micro-panels (KC x NR = 64 KiB) stream from L2. C is
// read and written once per slice, and for large C that traffic goes to
// DRAM, so deeper slices win: measured on Zen 5 (2048^3, same process,
// alternating) KC 512 / NC 768 beat 256 / 640 by 5% (and 7% on 512x1024x4096
// with transposed B); 384 and 768 landed between.
#ifndef KC
#define KC 512
#endif
// NC: columns of a packed B block (KC x NC floats = 1.5 MiB, L2 + L3).
#ifndef NC
#define NC 768
#endif
// The packed bf16 pair layout offsets slices by pc*NR (see mk_gemm): KC must
// be even; NC must be whole panels.
_Static_assert(KC % 2 == 0 && NC % MK_NR == 0, "KC even, NC a multiple of MK_NR");
// MC: rows of a packed A block (cap on the per-thread A buffer: 8 MiB).
#define MC 4096
// SKINNY_ROWS: at or below this many rows, sweep row panels inside column
// panels (see mk_gemm).
#define SKINNY_ROWS (4 * MR)
// BC: keys per attention score block (scores stay in L1: MR x BC floats).
#define BC 256

// Per-thread packing buffers, grown on first use and kept for the thread's life.
static __thread float* tl_a;
static __thread size_t tl_a_cap;
static __thread float* tl_b;
static __thread size_t tl_b_cap;

// ---- packing -------------------------------------------------------------

// pack_a_bf16 is pack_a for the bf16-dot kernel: pairs (k, k+1) of each row,
// rounded to bf16, as one 32-bit word: dst[kp*m + i]; odd kc padded with 0.
static void pack_a_bf16(uint32_t* dst, const float* A, long lda, int transA, long mc, long kc, int mr) {
	long kcp = (kc + 1) / 2;
	for (long i0 = 0; i0 < mc; i0 += mr) {
		int m = (int)lmin(mr, mc - i0);
		for (int i = 0; i < m; i++) {
			for (long kp = 0; kp < kcp; kp++) {
				long k = 2 * kp;
				float lo = transA ? A[k * lda + i0 + i] : A[(i0 + i) * lda + k];
				float hi = 0;
				if (k + 1 < kc) hi = transA ? A[(k + 1) * lda + i0 + i] : A[(i0 + i) * lda + k + 1];
				dst[kp * m + i] = (uint32_t)f32_to_bf16(lo) | (uint32_t)f32_to_bf16(hi) << 16;
			}
		}
		dst += kcp * m;
	}
}

// pack_b_block writes op(B) rows [k0, k0+kc) x cols [j0, j0+nc) as NR-wide
// panels with panel stride pstride elements (f32: kc*NR; bf16dot: kcp*NR*2).
// pack_bt_dot packs a full NR-row panel of a transposed bf16 B (rows j of
// src, row stride ldb elements) into the dot-product pair layout with 32-bit
// gathers: one gather fetches the pair (k, k+1) of 16 rows, which is exactly
// a row of the pair layout. Measured 0.47 ns/element vs 0.71 scalar; for f32
// and widened bf16 the scalar transpose is faster (gathers: 1.7 ns/element).
static T512 void pack_bt_dot(uint16_t* dst, const uint16_t* src, long ldb, long kc) {
	long rowb = ldb * 2;
	__m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
	                                 _mm512_set1_epi32((int)rowb));
	const char* lo = (const char*)src;
	const char* hi = lo + 16 * rowb;
	long k = 0;
	for (; k + 1 < kc; k += 2) {
		uint16_t* d = dst + (k / 2) * NR * 2;
		_mm512_store_si512((void*)d, _mm512_i32gather_epi32(idx, lo + 2 * k, 1));
		_mm512_store_si512((void*)(d + 32), _mm512_i32gather_epi32(idx, hi + 2 * k, 1));
	}
	if (k < kc) { // odd depth: last k alone (its pair partner is zero padding)
		uint16_t* d = dst + (k / 2) * NR * 2;
		for (long j = 0; j < NR; j++) {
			d[j * 2] = src[j * ldb + k];
			d[j * 2 + 1] = 0;
		}
	}
}

static T512 void pack_b_block(void* dstv, int bkind, int transB, const void* Bv, long ldb,
                              long k0, long kc, long j0, long nc, long pstride) {
	for (long jp = 0; jp < nc; jp += NR) {
		long n = lmin(NR, nc - jp);
		if (bkind == MK_B_BF16DOT && transB && n == NR && 32 * ldb * 2 < (1L << 31)) {
			pack_bt_dot((uint16_t*)dstv + (jp / NR) * pstride, (const uint16_t*)Bv + (j0 + jp) * ldb + k0, ldb, kc);
			continue;
		}
		if (bkind != MK_B_BF16DOT) {
			pack_b_panel((float*)dstv + (jp / NR) * pstride, bkind, transB, Bv, ldb, k0, kc, j0 + jp, n);
		} else { // MK_B_BF16DOT: dst[kp][NR][2]
			const uint16_t* B = Bv;
			uint16_t* dst = (uint16_t*)dstv + (jp / NR) * pstride;
			long kcp = (kc + 1) / 2;
			if (n < NR || (kc & 1)) memset(dst, 0, sizeof(uint16_t) * kcp * NR * 2);
			for (long j = 0; j < n; j++) {
				for (long k = 0; k < kc; k++) {
					uint16_t v = transB ? B[(j0 + jp + j) * ldb + k0 + k] : B[(k0 + k) * ldb + j0 + jp + j];
					dst[(k / 2) * NR * 2 + j * 2 + (k & 1)] = v;
				}
			}
		}
	}
}

void mk_pack_b(void* dst, int bkind, int transB, const void* B, long ldb, long K, long N) {
	long pstride = bkind == MK_B_BF16DOT ? ((K + 1) / 2) * NR * 2 : K * NR;
	pack_b_block(dst, bkind, transB, B, ldb, 0, K, 0, N, pstride);
}

// ---- micro-kernels -------------------------------------------------------

static INL T512 void store_tile(int m, __m512* c0, __m512* c1, float* C, long ldc, int n,
                                float alpha, float beta) {
	__mmask16 k0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
	__mmask16 k1 = n >= 32 ? 0xffff : n > 16 ? (__mmask16)((1u << (n - 16)) - 1) : 0;
	__m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
	for (int i = 0; i < MR; i++) {
		if (i >= m) break;
		float* r = C + i * ldc;
		__m512 x0 = alpha == 1.0f ? c0[i] : _mm512_mul_ps(va, c0[i]);
		__m512 x1 = alpha == 1.0f ? c1[i] : _mm512_mul_ps(va, c1[i]);
		if (beta == 1.0f) {
			x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(k0, r));
			x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(k1, r + 16));
		} else if (beta != 0.0f) {
			x0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k0, r), x0);
			x1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k1, r + 16), x1);
		}
		_mm512_mask_storeu_ps(r, k0, x0);
		_mm512_mask_storeu_ps(r + 16, k1, x1);
	}
}

// ukr_f32: C[m x n] = alpha * a(m x kc) * b(kc x NR) + beta * C, m <= MR.
static INL T512 void ukr_f32(const int m, long kc, const float* restrict a, const float* restrict b,
                             float* C, long ldc, int n, float alpha, float beta) {
	__m512 c0[MR], c1[MR];
#pragma GCC unroll 12
	for (int i = 0; i < MR; i++) {
		c0[i] = _mm512_setzero_ps();
		c1[i] = _mm512_setzero_ps();
		// Prefetch the C tile so it arrives while the tile computes: a large
		// C lives in DRAM and is read and written once per KC slice
		// (measured +3-4% on a 2048^3 GEMM).
		if (i < m) {
			_mm_prefetch((const char*)(C + i * ldc), _MM_HINT_T0);
			_mm_prefetch((const char*)(C + i * ldc + 16), _MM_HINT_T0);
		}
	}
	for (long k = 0; k < kc; k++) {
		__m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 12
		for (int i = 0; i < MR; i++) {
			if (i >= m) break;
			__m512 ai = _mm512_set1_ps(a[i]);
			c0[i] = _mm512_fmadd_ps(ai, b0, c0[i]);
			c1[i] = _mm512_fmadd_ps(ai, b1, c1[i]);
		}
		a += m;
		b += NR;
	}
	store_tile(m, c0, c1, C, ldc, n, alpha, beta);
}

// ukr_bf16: as ukr_f32 with bf16 pairs: a[kp*m + i] holds (A[i,2kp], A[i,2kp+1]).
static INL T512BF void ukr_bf16(const int m, long kcp, const uint32_t* restrict a,
                                const uint16_t* restrict b, float* C, long ldc, int n,
                                float alpha, float beta) {
	__m512 c0[MR], c1[MR];
#pragma GCC unroll 12
	for (int i = 0; i < MR; i++) {
		c0[i] = _mm512_setzero_ps();
		c1[i] = _mm512_setzero_ps();
		if (i < m) { // as in ukr_f32
			_mm_prefetch((const char*)(C + i * ldc), _MM_HINT_T0);
			_mm_prefetch((const char*)(C + i * ldc + 16), _MM_HINT_T0);
		}
	}
	for (long kp = 0; kp < kcp; kp++) {
		__m512i b0 = _mm512_load_si512((const void*)b), b1 = _mm512_load_si512((const void*)(b + 32));
#pragma GCC unroll 12
		for (int i = 0; i < MR; i++) {
			if (i >= m) break;
			__m512i ai = _mm512_set1_epi32((int)a[i]);
			c0[i] = _mm512_dpbf16_ps(c0[i], (__m512bh)ai, (__m512bh)b0);
			c1[i] = _mm512_dpbf16_ps(c1[i], (__m512bh)ai, (__m512bh)b1);
		}
		a += m;
		b += NR * 2;
	}
	store_tile(m, c0, c1, C, ldc, n, alpha, beta);
}

#define CASES(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12)

static T512 void ukr_f32_any(int m, long kc, const float* a, const float* b, float* C, long ldc,
                             int n, float alpha, float beta) {
	switch (m) {
#define X(M) case M: ukr_f32(M, kc, a, b, C, ldc, n, alpha, beta); break;
		CASES(X)
#undef X
	}
}

static T512BF void ukr_bf16_any(int m, long kcp, const uint32_t* a, const uint16_t* b, float* C,
                                long ldc, int n, float alpha, float beta) {
	switch (m) {
#define X(M) case M: ukr_bf16(M, kcp, a, b, C, ldc, n, alpha, beta); break;
		CASES(X)
#undef X
	}
}

// ---- GEMM driver ---------------------------------------------------------

void mk_gemm(int transA, int transB, long M, long N, long K, float alpha,
             const float* A, long lda, const void* B, int bkind, int packed, long ldb,
             float beta, float* C, long ldc) {
	int dot = bkind == MK_B_BF16DOT;
	long kcmax = lmin(KC, K);
	if (!grow(&tl_a, &tl_a_cap, sizeof(float) * (size_t)lmin(MC, M) * (size_t)(kcmax + 1)) ||
	    (!packed && !grow(&tl_b, &tl_b_cap, sizeof(float) * (size_t)kcmax * (size_t)(NC + NR)))) {
		abort(); // out of memory: nothing sensible to return from a kernel
	}
	long kpstride_full = dot ? ((K + 1) / 2) * NR * 2 : K * NR; // prepacked panel stride
	for (long pc = 0; pc < K; pc += KC) {
		long kc = lmin(KC, K - pc);
		float bet = pc == 0 ? beta : 1.0f;
		for (long ic = 0; ic < M; ic += MC) {
			long mc = lmin(MC, M - ic);
			int mr = rows_per_panel(mc, MR);
			const float* Ablk = transA ? A + pc * lda + ic : A + ic * lda + pc;
			if (dot) pack_a_bf16((uint32_t*)tl_a, Ablk, lda, transA, mc, kc, mr);
			else pack_a(tl_a, Ablk, lda, transA, mc, kc, mr);
			for (long jc = 0; jc < N; jc += NC) {
				long nc = lmin(NC, N - jc);
				const char* bp;
				long pstride; // elements between panels
				size_t esz = dot ? 2 : 4;
				if (packed) {
					pstride = kpstride_full;
					bp = (const char*)B + esz * ((jc / NR) * pstride + pc * NR);
				} else {
					pstride = dot ? ((kc + 1) / 2) * NR * 2 : kc * NR;
					pack_b_block(tl_b, bkind, transB, B, ldb, pc, kc, jc, nc, pstride);
					bp = (const char*)tl_b;
				}
				float* Cblk = C + ic * ldc + jc;
				// Few rows (expert batches, decode): each B micro-panel is used
				// by every row panel while it is in L1, so B streams from memory
				// once. Many rows: the A micro-panel stays in L1 across the B
				// panels of the L2-resident block.
				int few = mc <= SKINNY_ROWS;
				long nir = (mc + mr - 1) / mr, njr = (nc + NR - 1) / NR;
				for (long o = 0; o < nir * njr; o++) {
					long ir = (few ? o % nir : o / njr) * mr;
					long jr = (few ? o / nir : o % njr) * NR;
					int m = (int)lmin(mr, mc - ir);
					int n = (int)lmin(NR, nc - jr);
					const char* b = bp + esz * (jr / NR) * pstride;
					if (dot)
						ukr_bf16_any(m, (kc + 1) / 2, (const uint32_t*)tl_a + ir * ((kc + 1) / 2),
						             (const uint16_t*)b, Cblk + ir * ldc + jr, ldc, n, alpha, bet);
					else
						ukr_f32_any(m, kc, tl_a + ir * kc, (const float*)b, Cblk + ir * ldc + jr,
						            ldc, n, alpha, bet);
				}
			}
		}
	}
}

// ---- GEMV ----------------------------------------------------------------

// Rows of W processed together: their x loads are shared, 16 accumulators
// (8 rows x 2) hide the FMA latency, and 8 concurrent sequential streams keep
// enough cache misses in flight. Measured on Zen 5 (1 thread, bf16 W of
// 117 MB): 8 rows 21-22 GB/s vs 4 rows 16-17; software prefetch only hurt.
#define GEMV_ROWS 8

static INL T512 __m512 load_w(const void* W, int bf16, long k, __mmask16 mask) {
	if (bf16) {
		__m256i h = _mm256_maskz_loadu_epi16(mask, (const uint16_t*)W + k);
		return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
	}
	return _mm512_maskz_loadu_ps(mask, (const float*)W + k);
}

static INL T512 void gemv_rows(int rows, float* y, const void* W, int bf16, long ldw,
                               const float* x, long K, float alpha, float beta) {
	size_t esz = bf16 ? 2 : 4;
	const char* w[GEMV_ROWS];
	__m512 acc0[GEMV_ROWS], acc1[GEMV_ROWS];
#pragma GCC unroll 8
	for (int r = 0; r < GEMV_ROWS; r++) {
		w[r] = (const char*)W + esz * (size_t)(r < rows ? r : 0) * (size_t)ldw;
		acc0[r] = _mm512_setzero_ps();
		acc1[r] = _mm512_setzero_ps();
	}
	long k = 0;
	for (; k + 32 <= K; k += 32) {
		__m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
#pragma GCC unroll 8
		for (int r = 0; r < GEMV_ROWS; r++) {
			if (r >= rows) break;
			acc0[r] = _mm512_fmadd_ps(load_w(w[r], bf16, k, 0xffff), x0, acc0[r]);
			acc1[r] = _mm512_fmadd_ps(load_w(w[r], bf16, k + 16, 0xffff), x1, acc1[r]);
		}
	}
	for (; k < K; k += 16) {
		long n = lmin(16, K - k);
		__mmask16 mk = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
		__m512 x0 = _mm512_maskz_loadu_ps(mk, x + k);
#pragma GCC unroll 8
		for (int r = 0; r < GEMV_ROWS; r++) {
			if (r >= rows) break;
			acc0[r] = _mm512_fmadd_ps(load_w(w[r], bf16, k, mk), x0, acc0[r]);
		}
	}
#pragma GCC unroll 8
	for (int r = 0; r < GEMV_ROWS; r++) {
		if (r >= rows) break;
		float s = alpha * _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
		y[r] = beta == 0.0f ? s : s + beta * y[r];
	}
}

T512 void mk_gemv(float* y, const void* W, int bf16, long ldw, const float* x, long N, long K,
                  float alpha, float beta) {
	size_t esz = bf16 ? 2 : 4;
	long n = 0;
	for (; n + GEMV_ROWS <= N; n += GEMV_ROWS)
		gemv_rows(GEMV_ROWS, y + n, (const char*)W + esz * n * ldw, bf16, ldw, x, K, alpha, beta);
	for (; n < N; n++) gemv_rows(1, y + n, (const char*)W + esz * n * ldw, bf16, ldw, x, K, alpha, beta);
}

// ---- exp -----------------------------------------------------------------

// exp512: e^x for x <= 88.7, accurate to ~2 ulp; x < -103.9 gives 0 (and -inf
// gives 0). Range reduction x = n*ln2 + r with a two-part ln2, a degree-6
// polynomial on |r| <= ln2/2, then scaling by 2^n with vscalefps.
static INL T512 __m512 exp512(__m512 x) {
	x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.7f)), _mm512_set1_ps(-104.0f));
	__m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
	                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
	r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
	__m512 p = _mm512_set1_ps(1.0f / 720);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
	return _mm512_scalef_ps(p, n);
}

// ---- attention -----------------------------------------------------------

void mk_attn_pack_kv(float* kp, float* vp, const float* K, const float* V, long ld, long S, long Dh) {
	pack_b_block(kp, MK_B_F32, 1, K, ld, 0, Dh, 0, S, Dh * NR); // op(B) = K^T: (Dh x S)
	pack_b_block(vp, MK_B_F32, 0, V, ld, 0, S, 0, Dh, S * NR);  // op(B) = V: (S x Dh)
}

static __thread float* tl_attn;
static __thread size_t tl_attn_cap;

T512 void mk_attn_rows(float* out, long ldo, float* lse, const float* q, long ldq,
                       const float* kp, const float* vp, long S, long Dh, long r0, long r1,
                       long pos0, long window, float scale) {
	long dhp = (Dh + NR - 1) / NR * NR;
	// Scratch: packed Q (MR x Dh), scores (MR x BC), packed P (BC x MR), O (MR x dhp).
	size_t need = sizeof(float) * (size_t)(MR * Dh + MR * BC + BC * MR + MR * dhp);
	if (!grow(&tl_attn, &tl_attn_cap, need)) abort();
	float* qa = tl_attn;
	float* sb = qa + MR * Dh;
	float* pa = sb + MR * BC;
	float* ob = pa + BC * MR;
	for (long i0 = r0; i0 < r1; i0 += MR) {
		int m = (int)lmin(MR, r1 - i0);
		for (int i = 0; i < m; i++)
			for (long d = 0; d < Dh; d++) qa[d * m + i] = q[(i0 + i) * ldq + d] * scale;
		float mx[MR], l[MR];
		for (int i = 0; i < m; i++) { mx[i] = -INFINITY; l[i] = 0; }
		memset(ob, 0, sizeof(float) * m * dhp);
		long plast = pos0 + i0 + m - 1;
		long jlo = window > 0 ? lmax(0, pos0 + i0 - window + 1) : 0;
		long jhi = lmin(S - 1, plast);
		jlo = jlo / NR * NR;
		for (long jb = jlo; jb <= jhi; jb += BC) {
			long nb = lmin(BC, jhi + 1 - jb);
			long npan = (nb + NR - 1) / NR;
			for (long p = 0; p < npan; p++)
				ukr_f32_any(m, Dh, qa, kp + (jb / NR + p) * Dh * NR, sb + p * NR, BC, NR, 1.0f, 0.0f);
			// Online softmax: mask, new running max, rescale O, P = exp(s - max).
			for (int i = 0; i < m; i++) {
				long pos = pos0 + i0 + i;
				long lo = window > 0 ? lmax(0, pos - window + 1) : 0;
				long hi = lmin(pos, S - 1);
				float* s = sb + i * BC;
				float bm = -INFINITY;
				for (long j = 0; j < nb; j++) {
					long key = jb + j;
					if (key < lo || key > hi) s[j] = -INFINITY;
					else if (s[j] > bm) bm = s[j];
				}
				float mnew = bm > mx[i] ? bm : mx[i];
				float corr = 1.0f, sum = 0;
				if (mnew == -INFINITY) {
					for (long j = 0; j < nb; j++) s[j] = 0;
				} else {
					corr = mx[i] == -INFINITY ? 0.0f : expf(mx[i] - mnew);
					__m512 vm = _mm512_set1_ps(mnew), vs = _mm512_setzero_ps();
					for (long j = 0; j < nb; j += 16) {
						long n = lmin(16, nb - j);
						__mmask16 mk = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
						__m512 x = _mm512_maskz_loadu_ps(mk, s + j);
						__mmask16 live = mk & _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
						__m512 e = _mm512_maskz_mov_ps(live, exp512(_mm512_sub_ps(x, vm)));
						vs = _mm512_add_ps(vs, e);
						_mm512_mask_storeu_ps(s + j, mk, e);
					}
					sum = _mm512_reduce_add_ps(vs);
					mx[i] = mnew;
				}
				l[i] = l[i] * corr + sum;
				if (corr != 1.0f) {
					__m512 vc = _mm512_set1_ps(corr);
					for (long d = 0; d < dhp; d += 16)
						_mm512_storeu_ps(ob + i * dhp + d, _mm512_mul_ps(vc, _mm512_loadu_ps(ob + i * dhp + d)));
				}
				for (long j = 0; j < nb; j++) pa[j * m + i] = s[j];
			}
			for (long d = 0; d < Dh; d += NR)
				ukr_f32_any(m, nb, pa, vp + (d / NR) * S * NR + jb * NR, ob + d, dhp,
				            (int)lmin(NR, Dh - d), 1.0f, 1.0f);
		}
		for (int i = 0; i < m; i++) {
			float inv = 1.0f / l[i];
			for (long d = 0; d < Dh; d++) out[(i0 + i) * ldo + d] = ob[i * dhp + d] * inv;
			if (lse) lse[i0 + i] = mx[i] + logf(l[i]);
		}
	}
}

// Query heads per register block of the decode kernel: 8 score accumulators;
// in the value pass 4 heads x 4 vectors = 16 accumulators.
#define DEC_HEADS 8
#define DEC_VHEADS 4
// Rows of K and V prefetched ahead in the decode kernel.
#ifndef DEC_PF
#define DEC_PF 16
#endif

// dec_scores writes the scores of JB consecutive positions (rows lo+0 ..
// lo+JB-1 of K; score columns j..j+JB-1) for nh <= NH heads from h0, with
// the operations of the one-position loop of mk_attn_decode per score.
static INL T512 void dec_scores(const int JB, const int NH, int nh, const float* K, long ldkv,
                                long lo, long n, long j, long Dh, const float* q, long ldq, int h0,
                                float scale, float* s) {
	__m512 acc[4][4];
#pragma GCC unroll 4
	for (int b = 0; b < JB; b++)
#pragma GCC unroll 4
		for (int h = 0; h < NH; h++) acc[b][h] = _mm512_setzero_ps();
	if (j + DEC_PF + JB <= n)
#pragma GCC unroll 4
		for (int b = 0; b < JB; b++)
			for (long d = 0; d < Dh; d += 16)
				_mm_prefetch((const char*)(K + (lo + b + DEC_PF) * ldkv + d), _MM_HINT_T0);
	for (long d = 0; d < Dh; d += 16) {
		__m512 kv[4];
#pragma GCC unroll 4
		for (int b = 0; b < JB; b++) kv[b] = _mm512_loadu_ps(K + (lo + b) * ldkv + d);
#pragma GCC unroll 4
		for (int h = 0; h < NH; h++) {
			if (h >= nh) break;
			__m512 qv = _mm512_loadu_ps(q + (h0 + h) * ldq + d);
#pragma GCC unroll 4
			for (int b = 0; b < JB; b++) acc[b][h] = _mm512_fmadd_ps(qv, kv[b], acc[b][h]);
		}
	}
#pragma GCC unroll 4
	for (int h = 0; h < NH; h++) {
		if (h >= nh) break;
#pragma GCC unroll 4
		for (int b = 0; b < JB; b++) s[(h0 + h) * n + j + b] = scale * _mm512_reduce_add_ps(acc[b][h]);
	}
}

T512 void mk_attn_decode(float* out, long ldo, float* lse, long lse_stride, const float* q, long ldq,
                         int rep, const float* K, const float* V, long ldkv, long lo, long hi, long Dh,
                         float scale, float* s) {
	long n = hi - lo + 1;
	// Scores s[h*n + j] = scale * q_h . k_j: each K row is loaded once for
	// all heads of the group (the KV stream is what bounds decode).
	for (int h0 = 0; h0 < rep; h0 += DEC_HEADS) {
		int nh = rep - h0 < DEC_HEADS ? rep - h0 : DEC_HEADS;
		long j = 0;
		// Few heads per KV head: several positions at once, so the FMA
		// chains and the reductions of different positions overlap. Each
		// score is the same sum in the same order as one position alone.
		if (nh <= 2 && Dh % 16 == 0)
			for (; j + 4 <= n; j += 4) dec_scores(4, 2, nh, K, ldkv, lo + j, n, j, Dh, q, ldq, h0, scale, s);
		else if (nh <= 4 && Dh % 16 == 0)
			for (; j + 2 <= n; j += 2) dec_scores(2, 4, nh, K, ldkv, lo + j, n, j, Dh, q, ldq, h0, scale, s);
		for (; j < n; j++) {
			const float* kj = K + (lo + j) * ldkv;
			// Rows are ldkv apart (often a 4 KiB stride, a new page per
			// row, where hardware prefetchers stop): fetch DEC_PF rows ahead.
			if (j + DEC_PF < n)
				for (long d = 0; d < Dh; d += 16) _mm_prefetch((const char*)(kj + DEC_PF * ldkv + d), _MM_HINT_T0);
			__m512 acc[DEC_HEADS];
#pragma GCC unroll 8
			for (int h = 0; h < DEC_HEADS; h++) acc[h] = _mm512_setzero_ps();
			for (long d = 0; d < Dh; d += 16) {
				long c = lmin(16, Dh - d);
				__mmask16 mk = c >= 16 ? 0xffff : (__mmask16)((1u << c) - 1);
				__m512 kv = _mm512_maskz_loadu_ps(mk, kj + d);
#pragma GCC unroll 8
				for (int h = 0; h < DEC_HEADS; h++) {
					if (h >= nh) break;
					acc[h] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, q + (h0 + h) * ldq + d), kv, acc[h]);
				}
			}
#pragma GCC unroll 8
			for (int h = 0; h < DEC_HEADS; h++) {
				if (h >= nh) break;
				s[(h0 + h) * n + j] = scale * _mm512_reduce_add_ps(acc[h]);
			}
		}
	}
	// Softmax per head; s becomes the normalised probabilities.
	for (int h = 0; h < rep; h++) {
		float* sh = s + h * n;
		__m512 vmx = _mm512_set1_ps(-INFINITY);
		for (long j = 0; j < n; j += 16) {
			long c = lmin(16, n - j);
			__mmask16 mk = c >= 16 ? 0xffff : (__mmask16)((1u << c) - 1);
			vmx = _mm512_mask_max_ps(vmx, mk, vmx, _mm512_maskz_loadu_ps(mk, sh + j));
		}
		float mx = _mm512_reduce_max_ps(vmx);
		__m512 vm = _mm512_set1_ps(mx), vs = _mm512_setzero_ps();
		for (long j = 0; j < n; j += 16) {
			long c = lmin(16, n - j);
			__mmask16 mk = c >= 16 ? 0xffff : (__mmask16)((1u << c) - 1);
			__m512 e = _mm512_maskz_mov_ps(mk, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, sh + j), vm)));
			vs = _mm512_add_ps(vs, e);
			_mm512_mask_storeu_ps(sh + j, mk, e);
		}
		float sum = _mm512_reduce_add_ps(vs);
		__m512 inv = _mm512_set1_ps(1.0f / sum);
		for (long j = 0; j < n; j += 16) {
			long c = lmin(16, n - j);
			__mmask16 mk = c >= 16 ? 0xffff : (__mmask16)((1u << c) - 1);
			_mm512_mask_storeu_ps(sh + j, mk, _mm512_mul_ps(inv, _mm512_maskz_loadu_ps(mk, sh + j)));
		}
		if (lse) lse[h * lse_stride] = mx + logf(sum);
	}
	// out_h = sum_j p[h][j] v_j, 64 columns x 4 heads at a time, so each V
	// row segment is loaded once per head block.
	for (int h0 = 0; h0 < rep; h0 += DEC_VHEADS) {
		int nh = rep - h0 < DEC_VHEADS ? rep - h0 : DEC_VHEADS;
		for (long d0 = 0; d0 < Dh; d0 += 64) {
			__mmask16 mk[4];
			for (int c = 0; c < 4; c++) {
				long w = lmin(16, lmax(0, Dh - d0 - 16 * c));
				mk[c] = w >= 16 ? 0xffff : (__mmask16)((1u << w) - 1);
			}
			__m512 acc[DEC_VHEADS][4];
#pragma GCC unroll 4
			for (int h = 0; h < DEC_VHEADS; h++)
#pragma GCC unroll 4
				for (int c = 0; c < 4; c++) acc[h][c] = _mm512_setzero_ps();
			for (long j = 0; j < n; j++) {
				const float* vj = V + (lo + j) * ldkv + d0;
				if (j + DEC_PF < n)
					for (int c = 0; c < 4; c++) _mm_prefetch((const char*)(vj + DEC_PF * ldkv + 16 * c), _MM_HINT_T0);
				__m512 vv[4];
#pragma GCC unroll 4
				for (int c = 0; c < 4; c++) vv[c] = _mm512_maskz_loadu_ps(mk[c], vj + 16 * c);
#pragma GCC unroll 4
				for (int h = 0; h < DEC_VHEADS; h++) {
					if (h >= nh) break;
					__m512 p = _mm512_set1_ps(s[(h0 + h) * n + j]);
#pragma GCC unroll 4
					for (int c = 0; c < 4; c++) acc[h][c] = _mm512_fmadd_ps(p, vv[c], acc[h][c]);
				}
			}
			for (int h = 0; h < nh; h++)
				for (int c = 0; c < 4; c++)
					_mm512_mask_storeu_ps(out + (h0 + h) * ldo + d0 + 16 * c, mk[c], acc[h][c]);
		}
	}
}

// ---- elementwise: AdamW, SwiGLU, attention-backward probabilities ---------

// lanes(n) masks the first min(n, 16) lanes (n >= 0).
static INL __mmask16 lanes(long n) { return n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1); }

// exp_poly512 is kernel/fastmath.go's expPoly in 16 lanes: the same Cephes
// reduction and degree-5 minimax polynomial, with FMAs and the 2^n scaling
// done by vscalefps (one rounding, so overflow to +Inf above ln(MaxFloat32)
// and gradual underflow come out right). At most 1.3 ulp from e^x over
// [-87.3, 88.7] (measured on every float32 there); x < -104 gives 0, NaN
// stays NaN. exp512 above (attention forward) is a Taylor polynomial of
// about 2.7 ulp, clamped at 88.7.
static INL T512 __m512 exp_poly512(__m512 x) {
	// min/max return their second operand when either is NaN: NaN passes.
	x = _mm512_max_ps(_mm512_set1_ps(-104.0f), _mm512_min_ps(_mm512_set1_ps(89.0f), x));
	__m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
	                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
	r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
	__m512 p = _mm512_set1_ps(1.9875691500e-4f);
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
	p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
	p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
	return _mm512_scalef_ps(p, n);
}

// adamw16 is one 16-lane step of mk_adamw on the lanes of k, in the operation
// order of kernel/adamw.go, each product rounded (mk_adamw is NO_CONTRACT).
static INL T512 void adamw16(__mmask16 k, float* p, const float* g, float* m, float* v,
                             __m512 decay, __m512 w1, __m512 omw1, int lerp_low, __m512 beta2,
                             __m512 c2, __m512 neg_step, __m512 bc2_sqrt, __m512 eps) {
	__m512 gi = _mm512_maskz_loadu_ps(k, g), pi = _mm512_maskz_loadu_ps(k, p);
	__m512 mi = _mm512_maskz_loadu_ps(k, m), vi = _mm512_maskz_loadu_ps(k, v);
	pi = _mm512_mul_ps(pi, decay);
	__m512 d = _mm512_sub_ps(gi, mi);
	mi = lerp_low ? _mm512_add_ps(mi, _mm512_mul_ps(w1, d)) : _mm512_sub_ps(gi, _mm512_mul_ps(d, omw1));
	vi = _mm512_add_ps(_mm512_mul_ps(vi, beta2), _mm512_mul_ps(_mm512_mul_ps(c2, gi), gi));
	__m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc2_sqrt), eps);
	pi = _mm512_add_ps(pi, _mm512_mul_ps(neg_step, _mm512_div_ps(mi, den)));
	_mm512_mask_storeu_ps(p, k, pi);
	_mm512_mask_storeu_ps(m, k, mi);
	_mm512_mask_storeu_ps(v, k, vi);
}

NO_CONTRACT T512 void mk_adamw(
    float* p, const float* g, float* m, float* v, long n, float decay, float w1, int lerp_low,
    float beta2, float c2, float neg_step, float bc2_sqrt, float eps) {
	__m512 vdecay = _mm512_set1_ps(decay), vw1 = _mm512_set1_ps(w1), vomw1 = _mm512_set1_ps(1.0f - w1);
	__m512 vb2 = _mm512_set1_ps(beta2), vc2 = _mm512_set1_ps(c2), vneg = _mm512_set1_ps(neg_step);
	__m512 vbc2 = _mm512_set1_ps(bc2_sqrt), veps = _mm512_set1_ps(eps);
	long i = 0;
	for (; i + 16 <= n; i += 16)
		adamw16(0xffff, p + i, g + i, m + i, v + i, vdecay, vw1, vomw1, lerp_low, vb2, vc2, vneg, vbc2, veps);
	if (i < n)
		adamw16(lanes(n - i), p + i, g + i, m + i, v + i, vdecay, vw1, vomw1, lerp_low, vb2, vc2, vneg, vbc2,
		        veps);
}

// swiglu16: out = g*u / (1 + e^-g) on the lanes of k (kernel/swiglu.go's swiglu).
static INL T512 void swiglu16(__mmask16 k, float* out, const float* gate, const float* up) {
	__m512 g = _mm512_maskz_loadu_ps(k, gate), u = _mm512_maskz_loadu_ps(k, up);
	__m512 e = exp_poly512(_mm512_xor_ps(g, _mm512_set1_ps(-0.0f)));
	_mm512_mask_storeu_ps(out, k, _mm512_div_ps(_mm512_mul_ps(g, u), _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
}

T512 void mk_swiglu(float* out, long ldo, const float* gate, const float* up, long ld, long rows, long cols) {
	for (long r = 0; r < rows; r++) {
		float* o = out + r * ldo;
		const float *g = gate + r * ld, *u = up + r * ld;
		long j = 0;
		for (; j + 16 <= cols; j += 16) swiglu16(0xffff, o + j, g + j, u + j);
		if (j < cols) swiglu16(lanes(cols - j), o + j, g + j, u + j);
	}
}

// swiglu_bwd16 is kernel/swiglu.go's swigluBackward on the lanes of k: gate
// clamped below at -88, s = 1/(1 + e), 1 - s formed as e*s.
static INL T512 void swiglu_bwd16(__mmask16 k, float* dgate, float* dup, const float* dout,
                                  const float* gate, const float* up) {
	__m512 g = _mm512_maskz_loadu_ps(k, gate), u = _mm512_maskz_loadu_ps(k, up);
	__m512 d = _mm512_maskz_loadu_ps(k, dout), one = _mm512_set1_ps(1.0f);
	g = _mm512_max_ps(_mm512_set1_ps(-88.0f), g); // NaN passes
	__m512 e = exp_poly512(_mm512_xor_ps(g, _mm512_set1_ps(-0.0f)));
	__m512 s = _mm512_div_ps(one, _mm512_add_ps(one, e));
	__m512 du = _mm512_mul_ps(_mm512_mul_ps(d, g), s);
	__m512 dg = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(d, u), s),
	                          _mm512_fmadd_ps(g, _mm512_mul_ps(e, s), one));
	_mm512_mask_storeu_ps(dup, k, du);
	_mm512_mask_storeu_ps(dgate, k, dg);
}

T512 void mk_swiglu_bwd(float* dgate, float* dup, const float* dout, long ldo, const float* gate,
                        const float* up, long ld, long rows, long cols) {
	for (long r = 0; r < rows; r++) {
		float *dg = dgate + r * ld, *du = dup + r * ld;
		const float *d = dout + r * ldo, *g = gate + r * ld, *u = up + r * ld;
		long j = 0;
		for (; j + 16 <= cols; j += 16) swiglu_bwd16(0xffff, dg + j, du + j, d + j, g + j, u + j);
		if (j < cols) swiglu_bwd16(lanes(cols - j), dg + j, du + j, d + j, g + j, u + j);
	}
}

T512 void mk_exp_rows(float* p, long rows, long n, const float* lse, long diag, long window) {
	for (long i = 0; i < rows; i++) {
		float* row = p + i * n;
		long hi = lmin(n - 1, diag + i);
		long lo = window > 0 ? lmax(0, diag + i - window + 1) : 0;
		if (hi < lo) lo = n, hi = n - 1; // nothing visible: all zeros
		for (long j = 0; j < lo; j += 16) _mm512_mask_storeu_ps(row + j, lanes(lo - j), _mm512_setzero_ps());
		__m512 l = _mm512_set1_ps(lse[i]);
		long j = lo;
		for (; j + 16 <= hi + 1; j += 16)
			_mm512_storeu_ps(row + j, exp_poly512(_mm512_sub_ps(_mm512_loadu_ps(row + j), l)));
		if (j <= hi) {
			__mmask16 k = lanes(hi + 1 - j);
			_mm512_mask_storeu_ps(row + j, k, exp_poly512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, row + j), l)));
		}
		for (j = hi + 1; j < n; j += 16) _mm512_mask_storeu_ps(row + j, lanes(n - j), _mm512_setzero_ps());
	}
}

// ---- machine probes ------------------------------------------------------

// Peak probes: 24 independent accumulator chains, written out so each stays
// in a register (the asm barrier stops the compiler folding the chains).
#define REP24(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) \
	X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)

T512 float mk_peak_fma(long n) {
	__m512 x = _mm512_set1_ps(0.999999f), y = _mm512_set1_ps(1e-7f);
#define DECL(i) __m512 a##i = _mm512_set1_ps((float)i);
	REP24(DECL)
	for (long it = 0; it < n; it++) {
#define STEP(i) a##i = _mm512_fmadd_ps(a##i, x, y);
		REP24(STEP)
#define KEEP(i) __asm__ volatile("" : "+v"(a##i));
		REP24(KEEP)
	}
	__m512 s = _mm512_setzero_ps();
#define SUM(i) s = _mm512_add_ps(s, a##i);
	REP24(SUM)
	return _mm512_reduce_add_ps(s);
}

T512BF float mk_peak_bf16(long n) {
	__m512i x = _mm512_set1_epi32(0x3f803f80), y = _mm512_set1_epi32(0x00010001);
	REP24(DECL)
	for (long it = 0; it < n; it++) {
#undef STEP
#define STEP(i) a##i = _mm512_dpbf16_ps(a##i, (__m512bh)x, (__m512bh)y);
		REP24(STEP)
		REP24(KEEP)
	}
	__m512 s = _mm512_setzero_ps();
	REP24(SUM)
	return _mm512_reduce_add_ps(s);
}
#undef DECL
#undef STEP
#undef KEEP
#undef SUM

// mk_read_bw sums p[0..n) with 512-bit loads. streams == 1: one sequential
// stream into 4 accumulators; streams == 8: 8 equal segments read at once
// (more misses in flight, as in the GEMV). The bandwidth bound is the better
// of the two.
T512 float mk_read_bw(const float* p, long n, int streams) {
	__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
	long i = 0;
	if (streams == 8) {
		long seg = n / 8 / 16 * 16;
		const float *p0 = p, *p1 = p + seg, *p2 = p + 2 * seg, *p3 = p + 3 * seg, *p4 = p + 4 * seg,
		            *p5 = p + 5 * seg, *p6 = p + 6 * seg, *p7 = p + 7 * seg;
		for (long k = 0; k < seg; k += 16) {
			a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p0 + k));
			a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p1 + k));
			a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p2 + k));
			a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p3 + k));
			a4 = _mm512_add_ps(a4, _mm512_loadu_ps(p4 + k));
			a5 = _mm512_add_ps(a5, _mm512_loadu_ps(p5 + k));
			a6 = _mm512_add_ps(a6, _mm512_loadu_ps(p6 + k));
			a7 = _mm512_add_ps(a7, _mm512_loadu_ps(p7 + k));
		}
		i = 8 * seg;
	} else {
		for (; i + 64 <= n; i += 64) {
			a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
			a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
			a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
			a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
		}
	}
	__m512 t = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
	                         _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
	float s = _mm512_reduce_add_ps(t);
	for (; i < n; i++) s += p[i];
	return s;
}

// ---- GEMV over pre-packed weights ----------------------------------------

// mk_gemv_packed computes y = alpha * x * B + beta * y for columns [0, N) of a
// pre-packed B (K x N; see mk_pack_b): each NR-column panel is one
// contiguous stream. bf16-dot panels ([Kp][NR][2]) are widened exactly
// (even k by a shift, odd k by a mask), so x stays f32: the products are
// exact, unlike the dot-product GEMM.
T512 void mk_gemv_packed(float* y, const void* Bp, int bkind, long N, long K, const float* x,
                         float alpha, float beta) {
	long panels = (N + NR - 1) / NR;
	const __m512i himask = _mm512_set1_epi32((int)0xffff0000u);
	for (long p = 0; p < panels; p++) {
		__m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
		if (bkind == MK_B_BF16DOT) {
			long kp_n = (K + 1) / 2;
			const uint16_t* b = (const uint16_t*)Bp + p * kp_n * NR * 2;
			for (long kp = 0; kp < kp_n; kp++) {
				__m512i w0 = _mm512_load_si512((const void*)(b + kp * NR * 2));
				__m512i w1 = _mm512_load_si512((const void*)(b + kp * NR * 2 + 32));
				__m512 xe = _mm512_set1_ps(x[2 * kp]);
				__m512 xo = _mm512_set1_ps(2 * kp + 1 < K ? x[2 * kp + 1] : 0.0f);
				a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(w0, 16)), xe, a0);
				a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(w0, himask)), xo, a1);
				a2 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(w1, 16)), xe, a2);
				a3 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(w1, himask)), xo, a3);
			}
		} else { // f32 panels [K][NR]
			const float* b = (const float*)Bp + p * K * NR;
			long k = 0;
			for (; k + 1 < K; k += 2) {
				__m512 x0 = _mm512_set1_ps(x[k]), x1 = _mm512_set1_ps(x[k + 1]);
				a0 = _mm512_fmadd_ps(_mm512_load_ps(b + k * NR), x0, a0);
				a2 = _mm512_fmadd_ps(_mm512_load_ps(b + k * NR + 16), x0, a2);
				a1 = _mm512_fmadd_ps(_mm512_load_ps(b + (k + 1) * NR), x1, a1);
				a3 = _mm512_fmadd_ps(_mm512_load_ps(b + (k + 1) * NR + 16), x1, a3);
			}
			if (k < K) {
				__m512 x0 = _mm512_set1_ps(x[k]);
				a0 = _mm512_fmadd_ps(_mm512_load_ps(b + k * NR), x0, a0);
				a2 = _mm512_fmadd_ps(_mm512_load_ps(b + k * NR + 16), x0, a2);
			}
		}
		long n = lmin(NR, N - p * NR);
		__mmask16 k0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
		__mmask16 k1 = n >= 32 ? 0xffff : n > 16 ? (__mmask16)((1u << (n - 16)) - 1) : 0;
		float* yp = y + p * NR;
		__m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
		__m512 r0 = _mm512_mul_ps(va, _mm512_add_ps(a0, a1));
		__m512 r1 = _mm512_mul_ps(va, _mm512_add_ps(a2, a3));
		if (beta != 0.0f) {
			r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k0, yp), r0);
			r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k1, yp + 16), r1);
		}
		_mm512_mask_storeu_ps(yp, k0, r0);
		_mm512_mask_storeu_ps(yp + 16, k1, r1);
	}
}

// ---- GEMV of several rows over pre-packed weights ------------------------

// GPR_PF: kp steps (of 128 bytes) a multi-row GEMV prefetches its panel
// stream ahead. Several rows compute long enough per byte that the hardware
// prefetcher alone leaves DRAM idle: 8 rows over 24 MB of expert weights
// (one thread, in-process A/B) 2.2 ms with it against 2.9-3.3 without; one
// row streams as fast without it (and pairing two panels for one row, to
// give the FMAs more chains, was 25% slower from DRAM: not done).
#ifndef GPR_PF
#define GPR_PF 32
#endif

// gpr_tile computes m rows (x rows ldx apart, y rows ldy apart) of np
// consecutive panels (np * m <= 4 x 4 accumulators; the driver uses np = 1,
// see GPR_PF): every (row, panel) has the accumulators a0..a3 of
// mk_gemv_packed, updated in the same order with the same operations, so
// each row's result is bit-identical to mk_gemv_packed on that row alone.
// Several rows give the FMA pipes independent chains that one row's four
// cannot fill, and read each weight panel once for all rows.
static INL T512 void gpr_tile(const int m, const int np, const void* Bp, int bkind, long pstride,
                              long K, const float* x, long ldx, float* y, long ldy, long ncols,
                              float alpha, float beta, int pf) {
	__m512 acc[2][4][4];
#pragma GCC unroll 2
	for (int q = 0; q < 2; q++)
#pragma GCC unroll 4
		for (int i = 0; i < 4; i++)
#pragma GCC unroll 4
			for (int j = 0; j < 4; j++) acc[q][i][j] = _mm512_setzero_ps();
	if (bkind == MK_B_BF16DOT) {
		const __m512i himask = _mm512_set1_epi32((int)0xffff0000u);
		const uint16_t* b = (const uint16_t*)Bp;
		long kp_n = (K + 1) / 2;
		for (long kp = 0; kp < kp_n; kp++) {
			int odd = 2 * kp + 1 < K;
#pragma GCC unroll 2
			for (int q = 0; q < np; q++) {
				const uint16_t* w = b + q * pstride + kp * NR * 2;
				if (pf) {
					_mm_prefetch((const char*)(w + GPR_PF * NR * 2), _MM_HINT_T0);
					_mm_prefetch((const char*)(w + GPR_PF * NR * 2 + 32), _MM_HINT_T0);
				}
				__m512i w0 = _mm512_load_si512((const void*)w), w1 = _mm512_load_si512((const void*)(w + 32));
				__m512 e0 = _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16));
				__m512 o0 = _mm512_castsi512_ps(_mm512_and_si512(w0, himask));
				__m512 e1 = _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16));
				__m512 o1 = _mm512_castsi512_ps(_mm512_and_si512(w1, himask));
#pragma GCC unroll 4
				for (int i = 0; i < m; i++) {
					const float* xr = x + i * ldx;
					__m512 xe = _mm512_set1_ps(xr[2 * kp]);
					__m512 xo = _mm512_set1_ps(odd ? xr[2 * kp + 1] : 0.0f);
					acc[q][i][0] = _mm512_fmadd_ps(e0, xe, acc[q][i][0]);
					acc[q][i][1] = _mm512_fmadd_ps(o0, xo, acc[q][i][1]);
					acc[q][i][2] = _mm512_fmadd_ps(e1, xe, acc[q][i][2]);
					acc[q][i][3] = _mm512_fmadd_ps(o1, xo, acc[q][i][3]);
				}
			}
		}
	} else { // f32 panels [K][NR]
		const float* b = (const float*)Bp;
		long k = 0;
		for (; k + 1 < K; k += 2) {
#pragma GCC unroll 2
			for (int q = 0; q < np; q++) {
				const float* w = b + q * pstride + k * NR;
				__m512 e0 = _mm512_load_ps(w), e1 = _mm512_load_ps(w + 16);
				__m512 o0 = _mm512_load_ps(w + NR), o1 = _mm512_load_ps(w + NR + 16);
#pragma GCC unroll 4
				for (int i = 0; i < m; i++) {
					const float* xr = x + i * ldx;
					__m512 x0 = _mm512_set1_ps(xr[k]), x1 = _mm512_set1_ps(xr[k + 1]);
					acc[q][i][0] = _mm512_fmadd_ps(e0, x0, acc[q][i][0]);
					acc[q][i][2] = _mm512_fmadd_ps(e1, x0, acc[q][i][2]);
					acc[q][i][1] = _mm512_fmadd_ps(o0, x1, acc[q][i][1]);
					acc[q][i][3] = _mm512_fmadd_ps(o1, x1, acc[q][i][3]);
				}
			}
		}
		if (k < K) {
#pragma GCC unroll 2
			for (int q = 0; q < np; q++) {
				const float* w = b + q * pstride + k * NR;
				__m512 e0 = _mm512_load_ps(w), e1 = _mm512_load_ps(w + 16);
#pragma GCC unroll 4
				for (int i = 0; i < m; i++) {
					__m512 x0 = _mm512_set1_ps(x[i * ldx + k]);
					acc[q][i][0] = _mm512_fmadd_ps(e0, x0, acc[q][i][0]);
					acc[q][i][2] = _mm512_fmadd_ps(e1, x0, acc[q][i][2]);
				}
			}
		}
	}
	__m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 2
	for (int q = 0; q < np; q++) {
		long n = lmin(NR, ncols - q * NR);
		__mmask16 k0 = n >= 16 ? 0xffff : (__mmask16)((1u << n) - 1);
		__mmask16 k1 = n >= 32 ? 0xffff : n > 16 ? (__mmask16)((1u << (n - 16)) - 1) : 0;
#pragma GCC unroll 4
		for (int i = 0; i < m; i++) {
			float* yp = y + i * ldy + q * NR;
			__m512 r0 = _mm512_mul_ps(va, _mm512_add_ps(acc[q][i][0], acc[q][i][1]));
			__m512 r1 = _mm512_mul_ps(va, _mm512_add_ps(acc[q][i][2], acc[q][i][3]));
			if (beta != 0.0f) {
				r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k0, yp), r0);
				r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(k1, yp + 16), r1);
			}
			_mm512_mask_storeu_ps(yp, k0, r0);
			_mm512_mask_storeu_ps(yp + 16, k1, r1);
		}
	}
}

// mk_gemv_packed_rows is mk_gemv_packed for M rows at once over panels
// [p0, p1) of B: row r reads x + r*ldx and writes y + r*ldy (y points at
// column 0). Rows go in groups of up to 4, as even as possible, panel by
// panel (the later groups find the panel in L1); 3 or more rows prefetch.
T512 void mk_gemv_packed_rows(float* y, long ldy, const void* Bp, int bkind, long N, long K,
                              const float* x, long ldx, long M, long p0, long p1, float alpha,
                              float beta) {
	long pstride = bkind == MK_B_BF16DOT ? ((K + 1) / 2) * NR * 2 : K * NR; // elements
	size_t esz = bkind == MK_B_BF16DOT ? 2 : 4;
	long groups = (M + 3) / 4;
	long step = 1;
	int pf = M >= 3 && GPR_PF > 0;
	for (long p = p0; p < p1; p += step) {
		int np = (int)lmin(step, p1 - p);
		const char* bp = (const char*)Bp + esz * (size_t)(p * pstride);
		long ncols = N - p * NR;
		for (long g = 0, r0 = 0; g < groups; g++) {
			long r1 = M * (g + 1) / groups;
			int m = (int)(r1 - r0);
			const float* xr = x + r0 * ldx;
			float* yr = y + r0 * ldy + p * NR;
#define GPR(MM, NP) gpr_tile(MM, NP, bp, bkind, pstride, K, xr, ldx, yr, ldy, ncols, alpha, beta, pf)
			switch (m * 2 + np) {
			case 3: GPR(1, 1); break;
			case 4: GPR(1, 2); break;
			case 5: GPR(2, 1); break;
			case 6: GPR(2, 2); break;
			case 7: GPR(3, 1); break;
			case 9: GPR(4, 1); break;
			}
#undef GPR
			r0 = r1;
		}
	}
}
