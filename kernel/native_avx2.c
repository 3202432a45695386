//go:build cgo && amd64

// native_avx2.c: AVX2+FMA GEMM and GEMV for x86 CPUs without AVX-512 (AMD
// Zen 2/3, Intel Haswell to Alder Lake). Every function here is compiled for
// "avx2,fma" only: nothing in this file may use an AVX-512 instruction, and it
// must only be called when the Go side has detected AVX2 and FMA. The GEMM is
// the Goto/BLIS scheme of native_x86.c with a tile sized for 16 ymm registers,
// reading the same packed-B layout (NR = 32 columns), so a PackedB serves both
// tiers.

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "native_common.h"
#include "native_x86.h"

#define T2 __attribute__((target("avx2,fma")))

#define NR MK_NR
// NV: ymm vectors per tile row (NV x 8 = NR columns: one whole packed panel).
#define NV (NR / 8)
// MR: rows of the register tile. 3 rows x 4 vectors = 12 accumulators, one
// broadcast and up to three B vectors in the 16 ymm registers (the fourth B
// vector is an FMA memory operand); 12 independent FMA chains cover the FMA
// latency (4 cycles) on two FMA pipes. Measured on Zen 5 (2048^3, one thread,
// variants alternating in one process, medians of 11-25 runs): 3 x 32 ran
// 3-9% faster than 6 x 16 (two 16-column halves of a panel: 12 accumulators,
// 2 B vectors) and 20-30% faster than 2 x 32 (8 accumulators, 4 B vectors:
// too few chains).
#define MR 3
// KC, NC, MC: as in native_x86.c (KC x NR B micro-panel 64 KiB, KC x NC B
// block 1.5 MiB, A block up to MC x KC). Measured on Zen 5 with the loop
// order below: KC 512 beat 384, 256 and 192 by 1-3% on 2048^3 and by 2-9% on
// 512x1024x4096 with transposed B (C is read and written once per slice).
#define KC 512
#define NC 768
#define MC 4096

// Per-thread packing buffers, grown on first use and kept for the thread's life.
static __thread float* tl_a;
static __thread size_t tl_a_cap;
static __thread float* tl_b;
static __thread size_t tl_b_cap;

// lane_mask(n) has its first n (clamped to 0..8) 32-bit lanes all ones: the
// mask of _mm256_maskload_ps / _mm256_maskstore_ps for an n-column edge.
static const int32_t mask_tab[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static INL T2 __m256i lane_mask(long n) {
	n = n < 0 ? 0 : n > 8 ? 8 : n;
	return _mm256_loadu_si256((const __m256i*)(mask_tab + 8 - n));
}

// ---- packing -------------------------------------------------------------

// pack_b_block writes op(B) rows [k0, k0+kc) x cols [j0, j0+nc) as NR-wide f32
// panels with panel stride pstride floats (f32 or bf16-exact B).
static T2 void pack_b_block(float* dst, int bkind, int transB, const void* B, long ldb, long k0,
                            long kc, long j0, long nc, long pstride) {
	for (long jp = 0; jp < nc; jp += NR)
		pack_b_panel(dst + (jp / NR) * pstride, bkind, transB, B, ldb, k0, kc, j0 + jp, lmin(NR, nc - jp));
}

void mk2_pack_b(void* dst, int bkind, int transB, const void* B, long ldb, long K, long N) {
	if (bkind == MK_B_BF16DOT) abort(); // no bf16 dot product on AVX2: callers widen
	pack_b_block(dst, bkind, transB, B, ldb, 0, K, 0, N, K * NR);
}

// ---- micro-kernel --------------------------------------------------------

// store_tile writes C[m x n] = alpha*c + beta*C (C not read when beta == 0).
static INL T2 void store_tile(int m, __m256 c[MR][NV], float* C, long ldc, int n, float alpha, float beta) {
	__m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
	if (n == NR) {
#pragma GCC unroll 4
		for (int i = 0; i < MR; i++) {
			if (i >= m) break;
			float* r = C + i * ldc;
#pragma GCC unroll 4
			for (int j = 0; j < NV; j++) {
				__m256 x = alpha == 1.0f ? c[i][j] : _mm256_mul_ps(va, c[i][j]);
				if (beta == 1.0f) x = _mm256_add_ps(x, _mm256_loadu_ps(r + 8 * j));
				else if (beta != 0.0f) x = _mm256_fmadd_ps(vb, _mm256_loadu_ps(r + 8 * j), x);
				_mm256_storeu_ps(r + 8 * j, x);
			}
		}
		return;
	}
	// Edge columns: masked loads and stores (no mask registers on AVX2).
	__m256i mk[NV];
#pragma GCC unroll 4
	for (int j = 0; j < NV; j++) mk[j] = lane_mask(n - 8 * j);
#pragma GCC unroll 4
	for (int i = 0; i < MR; i++) {
		if (i >= m) break;
		float* r = C + i * ldc;
#pragma GCC unroll 4
		for (int j = 0; j < NV; j++) {
			if (8 * j >= n) break;
			__m256 x = alpha == 1.0f ? c[i][j] : _mm256_mul_ps(va, c[i][j]);
			if (beta == 1.0f) x = _mm256_add_ps(x, _mm256_maskload_ps(r + 8 * j, mk[j]));
			else if (beta != 0.0f) x = _mm256_fmadd_ps(vb, _mm256_maskload_ps(r + 8 * j, mk[j]), x);
			_mm256_maskstore_ps(r + 8 * j, mk[j], x);
		}
	}
}

// ukr: C[m x n] = alpha * a(m x kc) * b(kc x NR) + beta * C, m <= MR, n <= NR.
// a is an m-row micro-panel (a[k*m + i]), b an NR-wide B panel (b[k*NR + j]).
static INL T2 void ukr(const int m, long kc, const float* restrict a, const float* restrict b,
                       float* C, long ldc, int n, float alpha, float beta) {
	__m256 c[MR][NV];
#pragma GCC unroll 4
	for (int i = 0; i < MR; i++) {
#pragma GCC unroll 4
		for (int j = 0; j < NV; j++) c[i][j] = _mm256_setzero_ps();
		// Prefetch the C tile (a 128-byte row spans two or three lines) so it
		// arrives while the tile computes, as in native_x86.c.
		if (i < m) {
			_mm_prefetch((const char*)(C + i * ldc), _MM_HINT_T0);
			_mm_prefetch((const char*)(C + i * ldc + 16), _MM_HINT_T0);
			_mm_prefetch((const char*)(C + i * ldc + NR - 1), _MM_HINT_T0);
		}
	}
	for (long k = 0; k < kc; k++) {
		__m256 bv[NV];
#pragma GCC unroll 4
		for (int j = 0; j < NV; j++) bv[j] = _mm256_loadu_ps(b + 8 * j);
#pragma GCC unroll 4
		for (int i = 0; i < MR; i++) {
			if (i >= m) break;
			__m256 ai = _mm256_broadcast_ss(a + i);
#pragma GCC unroll 4
			for (int j = 0; j < NV; j++) c[i][j] = _mm256_fmadd_ps(ai, bv[j], c[i][j]);
		}
		a += m;
		b += NR;
	}
	store_tile(m, c, C, ldc, n, alpha, beta);
}

static T2 void ukr_any(int m, long kc, const float* a, const float* b, float* C, long ldc, int n,
                       float alpha, float beta) {
	switch (m) {
	case 1: ukr(1, kc, a, b, C, ldc, n, alpha, beta); break;
	case 2: ukr(2, kc, a, b, C, ldc, n, alpha, beta); break;
	case 3: ukr(3, kc, a, b, C, ldc, n, alpha, beta); break;
	}
}

// ---- GEMM driver ---------------------------------------------------------

void mk2_gemm(int transA, int transB, long M, long N, long K, float alpha,
              const float* A, long lda, const void* B, int bkind, int packed, long ldb,
              float beta, float* C, long ldc) {
	if (bkind == MK_B_BF16DOT) abort(); // no bf16 dot product on AVX2: callers widen
	long kcmax = lmin(KC, K);
	if (!grow(&tl_a, &tl_a_cap, sizeof(float) * (size_t)lmin(MC, M) * (size_t)(kcmax + 1)) ||
	    (!packed && !grow(&tl_b, &tl_b_cap, sizeof(float) * (size_t)kcmax * (size_t)(NC + NR)))) {
		abort(); // out of memory: nothing sensible to return from a kernel
	}
	for (long pc = 0; pc < K; pc += KC) {
		long kc = lmin(KC, K - pc);
		float bet = pc == 0 ? beta : 1.0f;
		for (long ic = 0; ic < M; ic += MC) {
			long mc = lmin(MC, M - ic);
			int mr = rows_per_panel(mc, MR);
			const float* Ablk = transA ? A + pc * lda + ic : A + ic * lda + pc;
			pack_a(tl_a, Ablk, lda, transA, mc, kc, mr);
			for (long jc = 0; jc < N; jc += NC) {
				long nc = lmin(NC, N - jc);
				const float* bp;
				long pstride; // floats between panels
				if (packed) {
					pstride = K * NR;
					bp = (const float*)B + (jc / NR) * pstride + pc * NR;
				} else {
					pstride = kc * NR;
					pack_b_block(tl_b, bkind, transB, B, ldb, pc, kc, jc, nc, pstride);
					bp = tl_b;
				}
				float* Cblk = C + ic * ldc + jc;
				// Row panels inside column panels at every size: each B
				// micro-panel is used by all row panels while it is in
				// L1/L2 and the thin 3-row A panels stream past it. The
				// other order (A panel in L1 across the B panels, as
				// native_x86.c does above 48 rows) measured 3-5% slower
				// on 2048^3 and 512x1024x4096 on Zen 5.
				for (long jr = 0; jr < nc; jr += NR) {
					int n = (int)lmin(NR, nc - jr);
					const float* b = bp + (jr / NR) * pstride;
					for (long ir = 0; ir < mc; ir += mr) {
						int m = (int)lmin(mr, mc - ir);
						ukr_any(m, kc, tl_a + ir * kc, b, Cblk + ir * ldc + jr, ldc, n, alpha, bet);
					}
				}
			}
		}
	}
}

// ---- GEMV ----------------------------------------------------------------

// Rows of W processed together: 8 concurrent sequential streams keep enough
// cache misses in flight (as in native_x86.c); one ymm accumulator per row
// leaves registers for x and the widened weights.
#define GEMV_ROWS 8

static INL T2 float hsum(__m256 v) {
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

// gemv_rows computes y[r] = alpha * W[r,:] . x + beta * y[r] for r < rows,
// 16 columns per step. bf16 weights are widened without a shuffle: a 32-bit
// word holds the pair (k, k+1), so word << 16 is the even element and
// word & 0xffff0000 the odd one as f32, multiplied by x split once per step
// into its even and odd elements (shared by all rows). Measured on Zen 5
// (one thread, bf16): 59 vs 51 GB/s for widening with vpmovzxwd + shift (two
// more uops per 16 weights) on an 8 MiB W in L3; the same ~18 GB/s on a
// 117 MB W in DRAM, where software prefetch (512-2048 bytes ahead) only hurt.
static INL T2 void gemv_rows(const int rows, float* y, const void* W, const int bf16, long ldw,
                             const float* x, long K, float alpha, float beta) {
	size_t esz = bf16 ? 2 : 4;
	const char* w[GEMV_ROWS];
	__m256 acc[GEMV_ROWS];
#pragma GCC unroll 8
	for (int r = 0; r < GEMV_ROWS; r++) {
		w[r] = (const char*)W + esz * (size_t)(r < rows ? r : 0) * (size_t)ldw;
		acc[r] = _mm256_setzero_ps();
	}
	long k = 0;
	if (bf16) {
		const __m256i hi = _mm256_set1_epi32((int)0xffff0000u);
		for (; k + 16 <= K; k += 16) {
			__m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
			// shuffle_ps picks within 128-bit lanes; permute4x64 restores order.
			__m256 xe = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(x0, x1, 0x88)), 0xd8));
			__m256 xo = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(x0, x1, 0xdd)), 0xd8));
#pragma GCC unroll 8
			for (int r = 0; r < GEMV_ROWS; r++) {
				if (r >= rows) break;
				__m256i p = _mm256_loadu_si256((const __m256i*)((const uint16_t*)w[r] + k));
				acc[r] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(p, 16)), xe, acc[r]);
				acc[r] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(p, hi)), xo, acc[r]);
			}
		}
	} else {
		for (; k + 16 <= K; k += 16) {
			__m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
#pragma GCC unroll 8
			for (int r = 0; r < GEMV_ROWS; r++) {
				if (r >= rows) break;
				acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps((const float*)w[r] + k), x0, acc[r]);
				acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps((const float*)w[r] + k + 8), x1, acc[r]);
			}
		}
	}
#pragma GCC unroll 8
	for (int r = 0; r < GEMV_ROWS; r++) {
		if (r >= rows) break;
		float s = hsum(acc[r]);
		for (long t = k; t < K; t++) // fewer than 16 left: scalar
			s += (bf16 ? bf16_to_f32(((const uint16_t*)w[r])[t]) : ((const float*)w[r])[t]) * x[t];
		s *= alpha;
		y[r] = beta == 0.0f ? s : s + beta * y[r];
	}
}

// gemv_n runs gemv_rows over all N rows for a constant bf16 (one copy each).
static INL T2 void gemv_n(float* y, const void* W, const int bf16, long ldw, const float* x, long N,
                          long K, float alpha, float beta) {
	size_t esz = bf16 ? 2 : 4;
	long n = 0;
	for (; n + GEMV_ROWS <= N; n += GEMV_ROWS)
		gemv_rows(GEMV_ROWS, y + n, (const char*)W + esz * n * ldw, bf16, ldw, x, K, alpha, beta);
	for (; n < N; n++) gemv_rows(1, y + n, (const char*)W + esz * n * ldw, bf16, ldw, x, K, alpha, beta);
}

T2 void mk2_gemv(float* y, const void* W, int bf16, long ldw, const float* x, long N, long K,
                 float alpha, float beta) {
	if (bf16) gemv_n(y, W, 1, ldw, x, N, K, alpha, beta);
	else gemv_n(y, W, 0, ldw, x, N, K, alpha, beta);
}

// ---- machine probes ------------------------------------------------------

// mk2_peak_fma: 12 independent 256-bit FMA chains (enough to fill two FMA
// pipes of latency 4), written out so each stays in a register.
#define REP12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

T2 float mk2_peak_fma(long n) {
	__m256 x = _mm256_set1_ps(0.999999f), y = _mm256_set1_ps(1e-7f);
#define DECL(i) __m256 a##i = _mm256_set1_ps((float)i);
	REP12(DECL)
	for (long it = 0; it < n; it++) {
#define STEP(i) a##i = _mm256_fmadd_ps(a##i, x, y);
		REP12(STEP)
#define KEEP(i) __asm__ volatile("" : "+x"(a##i));
		REP12(KEEP)
	}
	__m256 s = _mm256_setzero_ps();
#define SUM(i) s = _mm256_add_ps(s, a##i);
	REP12(SUM)
	return hsum(s);
}
#undef DECL
#undef STEP
#undef KEEP
#undef SUM

// mk2_read_bw is mk_read_bw with 256-bit loads.
T2 float mk2_read_bw(const float* p, long n, int streams) {
	__m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
	long i = 0;
	if (streams == 8) {
		long seg = n / 8 / 16 * 16;
		const float *p0 = p, *p1 = p + seg, *p2 = p + 2 * seg, *p3 = p + 3 * seg, *p4 = p + 4 * seg,
		            *p5 = p + 5 * seg, *p6 = p + 6 * seg, *p7 = p + 7 * seg;
		for (long k = 0; k < seg; k += 8) {
			a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p0 + k));
			a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p1 + k));
			a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p2 + k));
			a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p3 + k));
			a4 = _mm256_add_ps(a4, _mm256_loadu_ps(p4 + k));
			a5 = _mm256_add_ps(a5, _mm256_loadu_ps(p5 + k));
			a6 = _mm256_add_ps(a6, _mm256_loadu_ps(p6 + k));
			a7 = _mm256_add_ps(a7, _mm256_loadu_ps(p7 + k));
		}
		i = 8 * seg;
	} else {
		for (; i + 64 <= n; i += 64) {
			a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
			a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
			a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
			a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
			a4 = _mm256_add_ps(a4, _mm256_loadu_ps(p + i + 32));
			a5 = _mm256_add_ps(a5, _mm256_loadu_ps(p + i + 40));
			a6 = _mm256_add_ps(a6, _mm256_loadu_ps(p + i + 48));
			a7 = _mm256_add_ps(a7, _mm256_loadu_ps(p + i + 56));
		}
	}
	__m256 t = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
	                         _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
	float s = hsum(t);
	for (; i < n; i++) s += p[i];
	return s;
}

// ---- elementwise: AdamW, SwiGLU, attention-backward probabilities ---------

// ld8 and st8 move 8 floats, or with full == 0 the lanes of k (lane_mask).
static INL T2 __m256 ld8(const float* p, __m256i k, int full) {
	return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, k);
}
static INL T2 void st8(float* p, __m256i k, int full, __m256 x) {
	if (full) _mm256_storeu_ps(p, x);
	else _mm256_maskstore_ps(p, k, x);
}

// exp_poly256 is native_x86.c's exp_poly512 (kernel/fastmath.go's expPoly)
// in 8 lanes, scaling by 2^n as two factors 2^(n/2)·2^(n-n/2), as expPoly
// does, so n = 128 and gradual underflow need no special case.
static INL T2 __m256 exp_poly256(__m256 x) {
	// min/max return their second operand when either is NaN: NaN passes.
	x = _mm256_max_ps(_mm256_set1_ps(-104.0f), _mm256_min_ps(_mm256_set1_ps(89.0f), x));
	__m256 nf = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
	                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m256 r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(0.693359375f), x);
	r = _mm256_fnmadd_ps(nf, _mm256_set1_ps(-2.12194440e-4f), r);
	__m256 p = _mm256_set1_ps(1.9875691500e-4f);
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
	p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
	p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
	__m256i n = _mm256_cvtps_epi32(nf), bias = _mm256_set1_epi32(127);
	__m256i n1 = _mm256_srai_epi32(n, 1), n2 = _mm256_sub_epi32(n, n1);
	__m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
	__m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
	return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

// adamw8 is native_x86.c's adamw16 in 8 lanes (mk2_adamw is NO_CONTRACT).
static INL T2 void adamw8(__m256i k, int full, float* p, const float* g, float* m, float* v,
                          __m256 decay, __m256 w1, __m256 omw1, int lerp_low, __m256 beta2, __m256 c2,
                          __m256 neg_step, __m256 bc2_sqrt, __m256 eps) {
	__m256 gi = ld8(g, k, full), pi = ld8(p, k, full), mi = ld8(m, k, full), vi = ld8(v, k, full);
	pi = _mm256_mul_ps(pi, decay);
	__m256 d = _mm256_sub_ps(gi, mi);
	mi = lerp_low ? _mm256_add_ps(mi, _mm256_mul_ps(w1, d)) : _mm256_sub_ps(gi, _mm256_mul_ps(d, omw1));
	vi = _mm256_add_ps(_mm256_mul_ps(vi, beta2), _mm256_mul_ps(_mm256_mul_ps(c2, gi), gi));
	__m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2_sqrt), eps);
	pi = _mm256_add_ps(pi, _mm256_mul_ps(neg_step, _mm256_div_ps(mi, den)));
	st8(p, k, full, pi);
	st8(m, k, full, mi);
	st8(v, k, full, vi);
}

NO_CONTRACT T2 void mk2_adamw(
    float* p, const float* g, float* m, float* v, long n, float decay, float w1, int lerp_low,
    float beta2, float c2, float neg_step, float bc2_sqrt, float eps) {
	__m256 vdecay = _mm256_set1_ps(decay), vw1 = _mm256_set1_ps(w1), vomw1 = _mm256_set1_ps(1.0f - w1);
	__m256 vb2 = _mm256_set1_ps(beta2), vc2 = _mm256_set1_ps(c2), vneg = _mm256_set1_ps(neg_step);
	__m256 vbc2 = _mm256_set1_ps(bc2_sqrt), veps = _mm256_set1_ps(eps);
	__m256i all = lane_mask(8);
	long i = 0;
	for (; i + 8 <= n; i += 8)
		adamw8(all, 1, p + i, g + i, m + i, v + i, vdecay, vw1, vomw1, lerp_low, vb2, vc2, vneg, vbc2, veps);
	if (i < n)
		adamw8(lane_mask(n - i), 0, p + i, g + i, m + i, v + i, vdecay, vw1, vomw1, lerp_low, vb2, vc2, vneg,
		       vbc2, veps);
}

static INL T2 void swiglu8(__m256i k, int full, float* out, const float* gate, const float* up) {
	__m256 g = ld8(gate, k, full), u = ld8(up, k, full);
	__m256 e = exp_poly256(_mm256_xor_ps(g, _mm256_set1_ps(-0.0f)));
	st8(out, k, full, _mm256_div_ps(_mm256_mul_ps(g, u), _mm256_add_ps(_mm256_set1_ps(1.0f), e)));
}

T2 void mk2_swiglu(float* out, long ldo, const float* gate, const float* up, long ld, long rows, long cols) {
	__m256i all = lane_mask(8);
	for (long r = 0; r < rows; r++) {
		float* o = out + r * ldo;
		const float *g = gate + r * ld, *u = up + r * ld;
		long j = 0;
		for (; j + 8 <= cols; j += 8) swiglu8(all, 1, o + j, g + j, u + j);
		if (j < cols) swiglu8(lane_mask(cols - j), 0, o + j, g + j, u + j);
	}
}

static INL T2 void swiglu_bwd8(__m256i k, int full, float* dgate, float* dup, const float* dout,
                               const float* gate, const float* up) {
	__m256 g = ld8(gate, k, full), u = ld8(up, k, full), d = ld8(dout, k, full);
	__m256 one = _mm256_set1_ps(1.0f);
	g = _mm256_max_ps(_mm256_set1_ps(-88.0f), g); // NaN passes
	__m256 e = exp_poly256(_mm256_xor_ps(g, _mm256_set1_ps(-0.0f)));
	__m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e));
	__m256 du = _mm256_mul_ps(_mm256_mul_ps(d, g), s);
	__m256 dg = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(d, u), s),
	                          _mm256_fmadd_ps(g, _mm256_mul_ps(e, s), one));
	st8(dup, k, full, du);
	st8(dgate, k, full, dg);
}

T2 void mk2_swiglu_bwd(float* dgate, float* dup, const float* dout, long ldo, const float* gate,
                       const float* up, long ld, long rows, long cols) {
	__m256i all = lane_mask(8);
	for (long r = 0; r < rows; r++) {
		float *dg = dgate + r * ld, *du = dup + r * ld;
		const float *d = dout + r * ldo, *g = gate + r * ld, *u = up + r * ld;
		long j = 0;
		for (; j + 8 <= cols; j += 8) swiglu_bwd8(all, 1, dg + j, du + j, d + j, g + j, u + j);
		if (j < cols) swiglu_bwd8(lane_mask(cols - j), 0, dg + j, du + j, d + j, g + j, u + j);
	}
}

// zero8 clears x[a, b).
static INL T2 void zero8(float* x, long a, long b) {
	for (; a + 8 <= b; a += 8) _mm256_storeu_ps(x + a, _mm256_setzero_ps());
	if (a < b) _mm256_maskstore_ps(x + a, lane_mask(b - a), _mm256_setzero_ps());
}

T2 void mk2_exp_rows(float* p, long rows, long n, const float* lse, long diag, long window) {
	__m256i all = lane_mask(8);
	for (long i = 0; i < rows; i++) {
		float* row = p + i * n;
		long hi = lmin(n - 1, diag + i);
		long lo = window > 0 ? lmax(0, diag + i - window + 1) : 0;
		if (hi < lo) lo = n, hi = n - 1; // nothing visible: all zeros
		zero8(row, 0, lo);
		__m256 l = _mm256_set1_ps(lse[i]);
		long j = lo;
		for (; j + 8 <= hi + 1; j += 8) st8(row + j, all, 1, exp_poly256(_mm256_sub_ps(ld8(row + j, all, 1), l)));
		if (j <= hi) {
			__m256i k = lane_mask(hi + 1 - j);
			st8(row + j, k, 0, exp_poly256(_mm256_sub_ps(ld8(row + j, k, 0), l)));
		}
		zero8(row, hi + 1, n);
	}
}
