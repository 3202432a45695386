//go:build cgo && amd64

// native_common.h: plain-C helpers shared by the AVX-512 (native_x86.c) and
// AVX2 (native_avx2.c) translation units: no SIMD intrinsics, so each file
// compiles them for its own target (the always-inline ones inside its own
// target-attributed callers).
#ifndef MOESYS_NATIVE_COMMON_H
#define MOESYS_NATIVE_COMMON_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "native_x86.h"

#define INL inline __attribute__((always_inline))

// NO_CONTRACT keeps each a*b + c written with intrinsics as two roundings, as
// in the Go loops a C kernel must match bit for bit: GCC contracts them into
// FMAs under its default -ffp-contract=fast; clang contracts only within one
// C expression, so never across intrinsics.
#if defined(__clang__)
#define NO_CONTRACT
#else
#define NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#endif

static inline long lmin(long a, long b) { return a < b ? a : b; }
static inline long lmax(long a, long b) { return a > b ? a : b; }

#define HUGE_PAGE ((size_t)2 << 20)

// grow makes *p (capacity *cap bytes) hold at least bytes; it returns NULL
// when out of memory. Used for the per-thread packing buffers, which each
// file keeps for the thread's life.
static void* grow(float** p, size_t* cap, size_t bytes) {
	if (*cap < bytes) {
		free(*p);
		// 2 MiB-aligned and advised as huge pages: packed blocks span
		// hundreds of 4 KiB pages (measured +2-5% on a 2048^3 GEMM).
		bytes = (bytes + HUGE_PAGE - 1) & ~(size_t)(HUGE_PAGE - 1);
		*p = aligned_alloc(HUGE_PAGE, bytes);
		if (*p) madvise(*p, bytes, MADV_HUGEPAGE);
		*cap = *p ? bytes : 0;
	}
	return *p;
}

static inline uint16_t f32_to_bf16(float f) {
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fffu + ((u >> 16) & 1u);
	return (uint16_t)(u >> 16);
}

static inline float bf16_to_f32(uint16_t h) {
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

// pack_a writes rows [0, mc) x cols [0, kc) of op(A) as micro-panels of mr
// rows: panel p holds dst[k*m + i] for its m <= mr rows, panels back to back.
static void pack_a(float* dst, const float* A, long lda, int transA, long mc, long kc, int mr) {
	for (long i0 = 0; i0 < mc; i0 += mr) {
		int m = (int)lmin(mr, mc - i0);
		if (!transA) {
			for (int i = 0; i < m; i++) {
				const float* src = A + (i0 + i) * lda;
				for (long k = 0; k < kc; k++) dst[k * m + i] = src[k];
			}
		} else {
			for (long k = 0; k < kc; k++) {
				const float* src = A + k * lda + i0;
				for (int i = 0; i < m; i++) dst[k * m + i] = src[i];
			}
		}
		dst += kc * m;
	}
}

// pack_b_panel writes op(B) rows [k0, k0+kc) x cols [j, j+n), n <= MK_NR, of
// a float32 (MK_B_F32) or bf16 (MK_B_BF16, widened exactly) B as one f32
// panel dst[k*MK_NR + jj], columns n..MK_NR-1 zero.
static INL void pack_b_panel(float* dst, int bkind, int transB, const void* Bv, long ldb,
                             long k0, long kc, long j, long n) {
	if (bkind == MK_B_F32) {
		const float* B = Bv;
		if (!transB) {
			for (long k = 0; k < kc; k++) {
				const float* src = B + (k0 + k) * ldb + j;
				float* d = dst + k * MK_NR;
				long jj = 0;
				for (; jj < n; jj++) d[jj] = src[jj];
				for (; jj < MK_NR; jj++) d[jj] = 0;
			}
		} else {
			if (n < MK_NR) memset(dst, 0, sizeof(float) * kc * MK_NR);
			for (long jj = 0; jj < n; jj++) {
				const float* src = B + (j + jj) * ldb + k0;
				for (long k = 0; k < kc; k++) dst[k * MK_NR + jj] = src[k];
			}
		}
		return;
	}
	const uint16_t* B = Bv;
	if (!transB) {
		for (long k = 0; k < kc; k++) {
			const uint16_t* src = B + (k0 + k) * ldb + j;
			float* d = dst + k * MK_NR;
			long jj = 0;
			for (; jj < n; jj++) d[jj] = bf16_to_f32(src[jj]);
			for (; jj < MK_NR; jj++) d[jj] = 0;
		}
	} else {
		if (n < MK_NR) memset(dst, 0, sizeof(float) * kc * MK_NR);
		for (long jj = 0; jj < n; jj++) {
			const uint16_t* src = B + (j + jj) * ldb + k0;
			for (long k = 0; k < kc; k++) dst[k * MK_NR + jj] = bf16_to_f32(src[k]);
		}
	}
}

// rows_per_panel balances micro-panels of at most mr rows: with mr = 12, 16
// rows become 8+8, not 12+4.
static int rows_per_panel(long mc, int mr) {
	long panels = (mc + mr - 1) / mr;
	return (int)((mc + panels - 1) / panels);
}
#endif
