// fakecublas.c: a FAKE cuBLAS (libcublas.so.12) for package cuda's unit
// tests, to go with fakecuda.c (device pointers are host pointers). It
// computes GEMMs on the host, straight from cuBLAS's documented meaning
// (column-major, C = alpha*op(A)*op(B) + beta*C), for f32 and bf16
// operands, and checks the arguments cuBLAS would reject, so the tests see
// every argument reach its slot.

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { OK = 0, INVALID_VALUE = 7, NOT_SUPPORTED = 15 };
enum { R_32F = 0, R_16BF = 14, COMPUTE_32F = 68, GEMM_DEFAULT = -1 };

typedef struct { unsigned magic; void *stream; } handle_t;
#define MAGIC 0x424c4153U

int cublasCreate_v2(void **h) {
	handle_t *b = calloc(1, sizeof *b);
	b->magic = MAGIC;
	*h = b;
	return OK;
}

static int handle_ok(void *h) { return h != NULL && ((handle_t *)h)->magic == MAGIC; }

int cublasDestroy_v2(void *h) {
	if (!handle_ok(h)) return 1; // NOT_INITIALIZED
	((handle_t *)h)->magic = 0;
	free(h);
	return OK;
}

int cublasGetVersion_v2(void *h, int *v) {
	if (!handle_ok(h)) return 1;
	*v = 120400;
	return OK;
}

int cublasSetStream_v2(void *h, void *s) {
	if (!handle_ok(h)) return 1;
	((handle_t *)h)->stream = s;
	return OK;
}

static float load(const void *p, int t, long long i) {
	if (t == R_32F) return ((const float *)p)[i];
	uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static void store(void *p, int t, long long i, float v) {
	if (t == R_32F) {
		((float *)p)[i] = v;
		return;
	}
	uint32_t u;
	memcpy(&u, &v, 4);
	u += 0x7fff + ((u >> 16) & 1); // round to nearest even
	((uint16_t *)p)[i] = (uint16_t)(u >> 16);
}

static int check(int ta, int tb, int m, int n, int k, int at, int lda, int bt, int ldb,
                 int ct, int ldc, int compute, int algo) {
	if ((ta != 0 && ta != 1) || (tb != 0 && tb != 1) || m < 0 || n < 0 || k < 0) return INVALID_VALUE;
	if (lda < (ta ? k : m) || lda < 1 || ldb < (tb ? n : k) || ldb < 1 || ldc < m || ldc < 1) return INVALID_VALUE;
	if (compute != COMPUTE_32F || algo != GEMM_DEFAULT) return INVALID_VALUE;
	if ((at != R_32F && at != R_16BF) || bt != at || (ct != R_32F && ct != R_16BF)) return NOT_SUPPORTED;
	return OK;
}

static void gemm(int ta, int tb, int m, int n, int k, float alpha,
                 const void *a, int at, int lda, const void *b, int bt, int ldb,
                 float beta, void *c, int ct, int ldc) {
	for (int j = 0; j < n; j++) {
		for (int i = 0; i < m; i++) {
			double sum = 0;
			for (int p = 0; p < k; p++) {
				float x = load(a, at, ta ? p + (long long)i * lda : i + (long long)p * lda);
				float y = load(b, bt, tb ? j + (long long)p * ldb : p + (long long)j * ldb);
				sum += (double)x * y;
			}
			long long ci = i + (long long)j * ldc;
			float v = alpha * (float)sum;
			if (beta != 0) v += beta * load(c, ct, ci);
			store(c, ct, ci, v);
		}
	}
}

int cublasGemmEx(void *h, int ta, int tb, int m, int n, int k, const void *alpha,
                 const void *a, int at, int lda, const void *b, int bt, int ldb,
                 const void *beta, void *c, int ct, int ldc, int compute, int algo) {
	if (!handle_ok(h)) return 1;
	int r = check(ta, tb, m, n, k, at, lda, bt, ldb, ct, ldc, compute, algo);
	if (r != OK) return r;
	gemm(ta, tb, m, n, k, *(const float *)alpha, a, at, lda, b, bt, ldb, *(const float *)beta, c, ct, ldc);
	return OK;
}

int cublasGemmStridedBatchedEx(void *h, int ta, int tb, int m, int n, int k, const void *alpha,
                               const void *a, int at, int lda, long long sa,
                               const void *b, int bt, int ldb, long long sb,
                               const void *beta, void *c, int ct, int ldc, long long sc,
                               int batch, int compute, int algo) {
	if (!handle_ok(h)) return 1;
	int r = check(ta, tb, m, n, k, at, lda, bt, ldb, ct, ldc, compute, algo);
	if (r != OK) return r;
	if (batch < 0) return INVALID_VALUE;
	int as = at == R_32F ? 4 : 2, bs = bt == R_32F ? 4 : 2, cs = ct == R_32F ? 4 : 2;
	for (int i = 0; i < batch; i++) {
		gemm(ta, tb, m, n, k, *(const float *)alpha,
		     (const char *)a + i * sa * as, at, lda, (const char *)b + i * sb * bs, bt, ldb,
		     *(const float *)beta, (char *)c + i * sc * cs, ct, ldc);
	}
	return OK;
}
