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
// latency (4 cycles) on two FMA pipes. Measured on Zen 5 (2048^3, one
// thread, same process, alternating): 3 x 32 ran 3-9% faster than 6 x 16
// (two 16-column halves of a panel) and ~25% faster than 2 x 32 (8 chains).
#define MR 3
// KC: depth of a packed slice. The B micro-panel (KC x NR floats = 48 KiB)
// is what stays in L1 while the thin A micro-panels stream past it (see
// COL_ROWS); C is read and written once per slice.
#ifndef KC
#define KC 384
#endif
// NC: columns of a packed B block (KC x NC floats = 1.1 MiB, L2 + L3).
#ifndef NC
#define NC 768
#endif
// MC: rows of a packed A block (cap on the per-thread A buffer: 6 MiB).
#ifndef MC
#define MC 4096
#endif
// COL_ROWS: at or below this many rows of A per block, sweep row panels
// inside column panels, so each B micro-panel is loaded into L1 once and
// used by every row panel; above it, each A micro-panel stays in L1 across
// the B panels. With only 3 rows per tile a B panel is reused 3 times per
// load, which makes streaming B from L2 the bottleneck: column-outer won at
// every size measured (see docs/ARCHITECTURE.md).
#ifndef COL_ROWS
#define COL_ROWS MC
#endif

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
				int col = mc <= COL_ROWS;
				long nir = (mc + mr - 1) / mr, njr = (nc + NR - 1) / NR;
				for (long o = 0; o < nir * njr; o++) {
					long ir = (col ? o % nir : o / njr) * mr;
					long jr = (col ? o / nir : o % njr) * NR;
					int m = (int)lmin(mr, mc - ir);
					int n = (int)lmin(NR, nc - jr);
					ukr_any(m, kc, tl_a + ir * kc, bp + (jr / NR) * pstride, Cblk + ir * ldc + jr, ldc, n,
					        alpha, bet);
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

static INL T2 __m256 load_w(const void* W, int bf16, long k) {
	if (bf16) {
		__m128i h = _mm_loadu_si128((const __m128i*)((const uint16_t*)W + k));
		return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
	}
	return _mm256_loadu_ps((const float*)W + k);
}

static INL T2 void gemv_rows(int rows, float* y, const void* W, int bf16, long ldw,
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
	for (; k + 8 <= K; k += 8) {
		__m256 xv = _mm256_loadu_ps(x + k);
#pragma GCC unroll 8
		for (int r = 0; r < GEMV_ROWS; r++) {
			if (r >= rows) break;
			acc[r] = _mm256_fmadd_ps(load_w(w[r], bf16, k), xv, acc[r]);
		}
	}
#pragma GCC unroll 8
	for (int r = 0; r < GEMV_ROWS; r++) {
		if (r >= rows) break;
		float s = hsum(acc[r]);
		for (long t = k; t < K; t++) // fewer than 8 left: scalar
			s += (bf16 ? bf16_to_f32(((const uint16_t*)w[r])[t]) : ((const float*)w[r])[t]) * x[t];
		s *= alpha;
		y[r] = beta == 0.0f ? s : s + beta * y[r];
	}
}

T2 void mk2_gemv(float* y, const void* W, int bf16, long ldw, const float* x, long N, long K,
                 float alpha, float beta) {
	size_t esz = bf16 ? 2 : 4;
	long n = 0;
	for (; n + GEMV_ROWS <= N; n += GEMV_ROWS)
		gemv_rows(GEMV_ROWS, y + n, (const char*)W + esz * n * ldw, bf16, ldw, x, K, alpha, beta);
	for (; n < N; n++) gemv_rows(1, y + n, (const char*)W + esz * n * ldw, bf16, ldw, x, K, alpha, beta);
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
