//go:build linux && cgo

// shim.c: dlopen'd CUDA driver, cuBLAS and NVRTC entry points (see shim.h).

#include "shim.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Opaque CUDA types as the libraries' ABI has them: handles are pointers,
// CUdevice is an int, CUdeviceptr a 64-bit integer, enums are ints.
typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUstream;
typedef void *CUevent;
typedef void *CUmodule;
typedef void *CUfunction;
typedef unsigned long long CUdeviceptr;
typedef int cublasStatus_t;
typedef void *cublasHandle_t;
typedef int nvrtcResult;
typedef void *nvrtcProgram;

enum {
	CU_STREAM_NON_BLOCKING = 1,
	CUBLAS_COMPUTE_32F = 68,
	CUBLAS_GEMM_DEFAULT = -1,
};

// Driver entry points (the _v2 symbols where the driver has them).
static struct {
	CUresult (*cuInit)(unsigned);
	CUresult (*cuGetErrorName)(CUresult, const char **);
	CUresult (*cuDriverGetVersion)(int *);
	CUresult (*cuDeviceGetCount)(int *);
	CUresult (*cuDeviceGet)(CUdevice *, int);
	CUresult (*cuDeviceGetName)(char *, int, CUdevice);
	CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
	CUresult (*cuDeviceTotalMem_v2)(size_t *, CUdevice);
	CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
	CUresult (*cuDevicePrimaryCtxRelease_v2)(CUdevice);
	CUresult (*cuCtxSetCurrent)(CUcontext);
	CUresult (*cuCtxSynchronize)(void);
	CUresult (*cuMemGetInfo_v2)(size_t *, size_t *);
	CUresult (*cuMemAlloc_v2)(CUdeviceptr *, size_t);
	CUresult (*cuMemFree_v2)(CUdeviceptr);
	CUresult (*cuMemHostAlloc)(void **, size_t, unsigned);
	CUresult (*cuMemFreeHost)(void *);
	CUresult (*cuMemHostRegister_v2)(void *, size_t, unsigned);
	CUresult (*cuMemHostUnregister)(void *);
	CUresult (*cuStreamCreate)(CUstream *, unsigned);
	CUresult (*cuStreamDestroy_v2)(CUstream);
	CUresult (*cuStreamSynchronize)(CUstream);
	CUresult (*cuStreamWaitEvent)(CUstream, CUevent, unsigned);
	CUresult (*cuMemcpyHtoDAsync_v2)(CUdeviceptr, const void *, size_t, CUstream);
	CUresult (*cuMemcpyDtoHAsync_v2)(void *, CUdeviceptr, size_t, CUstream);
	CUresult (*cuMemcpyDtoDAsync_v2)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
	CUresult (*cuMemsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
	CUresult (*cuEventCreate)(CUevent *, unsigned);
	CUresult (*cuEventDestroy_v2)(CUevent);
	CUresult (*cuEventRecord)(CUevent, CUstream);
	CUresult (*cuEventSynchronize)(CUevent);
	CUresult (*cuEventQuery)(CUevent);
	CUresult (*cuEventElapsedTime)(float *, CUevent, CUevent);
	CUresult (*cuModuleLoadData)(CUmodule *, const void *);
	CUresult (*cuModuleUnload)(CUmodule);
	CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
	CUresult (*cuFuncSetAttribute)(CUfunction, int, int);
	CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned,
	                           unsigned, unsigned, unsigned, unsigned, CUstream,
	                           void **, void **);
} drv;

// cuBLAS entry points.
static struct {
	cublasStatus_t (*cublasCreate_v2)(cublasHandle_t *);
	cublasStatus_t (*cublasDestroy_v2)(cublasHandle_t);
	cublasStatus_t (*cublasGetVersion_v2)(cublasHandle_t, int *);
	cublasStatus_t (*cublasSetStream_v2)(cublasHandle_t, CUstream);
	cublasStatus_t (*cublasGemmEx)(cublasHandle_t, int, int, int, int, int,
	                               const void *, const void *, int, int,
	                               const void *, int, int, const void *,
	                               void *, int, int, int, int);
	cublasStatus_t (*cublasGemmStridedBatchedEx)(cublasHandle_t, int, int, int, int, int,
	                                             const void *, const void *, int, int, long long,
	                                             const void *, int, int, long long, const void *,
	                                             void *, int, int, long long, int, int, int);
} blas;

// NVRTC entry points; nvrtcGetCUBINSize/nvrtcGetCUBIN are optional (NVRTC 11.1+).
static struct {
	const char *(*nvrtcGetErrorString)(nvrtcResult);
	nvrtcResult (*nvrtcVersion)(int *, int *);
	nvrtcResult (*nvrtcCreateProgram)(nvrtcProgram *, const char *, const char *, int,
	                                  const char *const *, const char *const *);
	nvrtcResult (*nvrtcDestroyProgram)(nvrtcProgram *);
	nvrtcResult (*nvrtcCompileProgram)(nvrtcProgram, int, const char *const *);
	nvrtcResult (*nvrtcGetProgramLogSize)(nvrtcProgram, size_t *);
	nvrtcResult (*nvrtcGetProgramLog)(nvrtcProgram, char *);
	nvrtcResult (*nvrtcGetPTXSize)(nvrtcProgram, size_t *);
	nvrtcResult (*nvrtcGetPTX)(nvrtcProgram, char *);
	nvrtcResult (*nvrtcGetCUBINSize)(nvrtcProgram, size_t *);
	nvrtcResult (*nvrtcGetCUBIN)(nvrtcProgram, char *);
} rtc;

// A symbol to resolve: its name, where to store it, whether it may be absent.
typedef struct {
	const char *name;
	void **slot;
	int optional;
} sym;

#define SYM(table, fn) {#fn, (void **)&table.fn, 0}
#define OPTSYM(table, fn) {#fn, (void **)&table.fn, 1}

static char *dup_msg(const char *a, const char *b) {
	size_t n = strlen(a) + strlen(b) + 1;
	char *s = malloc(n);
	if (s != NULL) {
		snprintf(s, n, "%s%s", a, b);
	}
	return s;
}

// load opens path and resolves syms; on failure it clears them, closes the
// library and returns a message.
static char *load(const char *path, sym *syms, int n) {
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		return dup_msg(e != NULL ? e : path, e != NULL ? "" : ": dlopen failed");
	}
	for (int i = 0; i < n; i++) {
		*syms[i].slot = dlsym(h, syms[i].name);
		if (*syms[i].slot == NULL && !syms[i].optional) {
			char prefix[512];
			snprintf(prefix, sizeof prefix, "%s: missing symbol ", path);
			char *msg = dup_msg(prefix, syms[i].name);
			for (int j = 0; j < n; j++) {
				*syms[j].slot = NULL;
			}
			dlclose(h);
			return msg;
		}
	}
	return NULL;
}

char *ms_load_driver(const char *path) {
	sym syms[] = {
		SYM(drv, cuInit), SYM(drv, cuGetErrorName), SYM(drv, cuDriverGetVersion),
		SYM(drv, cuDeviceGetCount), SYM(drv, cuDeviceGet), SYM(drv, cuDeviceGetName),
		SYM(drv, cuDeviceGetAttribute), SYM(drv, cuDeviceTotalMem_v2),
		SYM(drv, cuDevicePrimaryCtxRetain), SYM(drv, cuDevicePrimaryCtxRelease_v2),
		SYM(drv, cuCtxSetCurrent), SYM(drv, cuCtxSynchronize), SYM(drv, cuMemGetInfo_v2),
		SYM(drv, cuMemAlloc_v2), SYM(drv, cuMemFree_v2), SYM(drv, cuMemHostAlloc),
		SYM(drv, cuMemFreeHost), SYM(drv, cuMemHostRegister_v2), SYM(drv, cuMemHostUnregister),
		SYM(drv, cuStreamCreate), SYM(drv, cuStreamDestroy_v2), SYM(drv, cuStreamSynchronize),
		SYM(drv, cuStreamWaitEvent), SYM(drv, cuMemcpyHtoDAsync_v2),
		SYM(drv, cuMemcpyDtoHAsync_v2), SYM(drv, cuMemcpyDtoDAsync_v2),
		SYM(drv, cuMemsetD8Async), SYM(drv, cuEventCreate), SYM(drv, cuEventDestroy_v2),
		SYM(drv, cuEventRecord), SYM(drv, cuEventSynchronize), SYM(drv, cuEventQuery),
		SYM(drv, cuEventElapsedTime), SYM(drv, cuModuleLoadData), SYM(drv, cuModuleUnload),
		SYM(drv, cuModuleGetFunction), SYM(drv, cuFuncSetAttribute), SYM(drv, cuLaunchKernel),
	};
	return load(path, syms, sizeof syms / sizeof syms[0]);
}

char *ms_load_cublas(const char *path) {
	sym syms[] = {
		SYM(blas, cublasCreate_v2), SYM(blas, cublasDestroy_v2),
		SYM(blas, cublasGetVersion_v2), SYM(blas, cublasSetStream_v2),
		SYM(blas, cublasGemmEx), SYM(blas, cublasGemmStridedBatchedEx),
	};
	return load(path, syms, sizeof syms / sizeof syms[0]);
}

char *ms_load_nvrtc(const char *path) {
	sym syms[] = {
		SYM(rtc, nvrtcGetErrorString), SYM(rtc, nvrtcVersion), SYM(rtc, nvrtcCreateProgram),
		SYM(rtc, nvrtcDestroyProgram), SYM(rtc, nvrtcCompileProgram),
		SYM(rtc, nvrtcGetProgramLogSize), SYM(rtc, nvrtcGetProgramLog),
		SYM(rtc, nvrtcGetPTXSize), SYM(rtc, nvrtcGetPTX),
		OPTSYM(rtc, nvrtcGetCUBINSize), OPTSYM(rtc, nvrtcGetCUBIN),
	};
	return load(path, syms, sizeof syms / sizeof syms[0]);
}

static ms_status st(int code, int lib, const char *call) {
	ms_status s = {code, lib, call};
	if (code == 0) {
		s.call = NULL;
	}
	return s;
}

// DRV calls a driver entry point and returns its status named after it.
#define DRV(fn, ...) st(drv.fn(__VA_ARGS__), MS_LIB_DRIVER, #fn)

// CTX makes ctx current or returns the failure.
#define CTX(ctx)                                                              \
	do {                                                                      \
		CUresult r_ = drv.cuCtxSetCurrent((CUcontext)(ctx));                  \
		if (r_ != 0) {                                                        \
			return st(r_, MS_LIB_DRIVER, "cuCtxSetCurrent");                  \
		}                                                                     \
	} while (0)

const char *ms_error_name(int code) {
	const char *s = NULL;
	if (drv.cuGetErrorName == NULL || drv.cuGetErrorName(code, &s) != 0) {
		return NULL;
	}
	return s;
}

ms_status ms_init(void) { return DRV(cuInit, 0); }
ms_status ms_driver_version(int *v) { return DRV(cuDriverGetVersion, v); }
ms_status ms_device_count(int *n) { return DRV(cuDeviceGetCount, n); }
ms_status ms_device_get(int ordinal, int *dev) { return DRV(cuDeviceGet, dev, ordinal); }
ms_status ms_device_name(int dev, char *buf, int len) { return DRV(cuDeviceGetName, buf, len, dev); }
ms_status ms_device_attr(int dev, int attr, int *v) { return DRV(cuDeviceGetAttribute, v, attr, dev); }
ms_status ms_device_total_mem(int dev, size_t *bytes) { return DRV(cuDeviceTotalMem_v2, bytes, dev); }

ms_status ms_ctx_retain(int dev, uintptr_t *ctx) {
	CUcontext c = NULL;
	ms_status s = DRV(cuDevicePrimaryCtxRetain, &c, dev);
	*ctx = (uintptr_t)c;
	return s;
}

ms_status ms_ctx_release(int dev) { return DRV(cuDevicePrimaryCtxRelease_v2, dev); }

ms_status ms_ctx_sync(uintptr_t ctx) {
	CTX(ctx);
	return DRV(cuCtxSynchronize);
}

ms_status ms_mem_info(uintptr_t ctx, size_t *free_bytes, size_t *total_bytes) {
	CTX(ctx);
	return DRV(cuMemGetInfo_v2, free_bytes, total_bytes);
}

ms_status ms_mem_alloc(uintptr_t ctx, uint64_t *p, size_t bytes) {
	CTX(ctx);
	CUdeviceptr d = 0;
	ms_status s = DRV(cuMemAlloc_v2, &d, bytes);
	*p = d;
	return s;
}

ms_status ms_mem_free(uintptr_t ctx, uint64_t p) {
	CTX(ctx);
	return DRV(cuMemFree_v2, p);
}

ms_status ms_host_alloc(uintptr_t ctx, void **p, size_t bytes) {
	CTX(ctx);
	return DRV(cuMemHostAlloc, p, bytes, 1 /* CU_MEMHOSTALLOC_PORTABLE */);
}

ms_status ms_host_free(uintptr_t ctx, void *p) {
	CTX(ctx);
	return DRV(cuMemFreeHost, p);
}

ms_status ms_host_register(uintptr_t ctx, void *p, size_t bytes) {
	CTX(ctx);
	return DRV(cuMemHostRegister_v2, p, bytes, 1 /* CU_MEMHOSTREGISTER_PORTABLE */);
}

ms_status ms_host_unregister(uintptr_t ctx, void *p) {
	CTX(ctx);
	return DRV(cuMemHostUnregister, p);
}

ms_status ms_stream_create(uintptr_t ctx, uintptr_t *s) {
	CTX(ctx);
	CUstream h = NULL;
	ms_status r = DRV(cuStreamCreate, &h, CU_STREAM_NON_BLOCKING);
	*s = (uintptr_t)h;
	return r;
}

ms_status ms_stream_destroy(uintptr_t ctx, uintptr_t s) {
	CTX(ctx);
	return DRV(cuStreamDestroy_v2, (CUstream)s);
}

ms_status ms_stream_sync(uintptr_t ctx, uintptr_t s) {
	CTX(ctx);
	return DRV(cuStreamSynchronize, (CUstream)s);
}

ms_status ms_stream_wait(uintptr_t ctx, uintptr_t s, uintptr_t e) {
	CTX(ctx);
	return DRV(cuStreamWaitEvent, (CUstream)s, (CUevent)e, 0);
}

ms_status ms_copy_htod(uintptr_t ctx, uintptr_t s, uint64_t dst, const void *src, size_t bytes) {
	CTX(ctx);
	return DRV(cuMemcpyHtoDAsync_v2, dst, src, bytes, (CUstream)s);
}

ms_status ms_copy_dtoh(uintptr_t ctx, uintptr_t s, void *dst, uint64_t src, size_t bytes) {
	CTX(ctx);
	return DRV(cuMemcpyDtoHAsync_v2, dst, src, bytes, (CUstream)s);
}

ms_status ms_copy_dtod(uintptr_t ctx, uintptr_t s, uint64_t dst, uint64_t src, size_t bytes) {
	CTX(ctx);
	return DRV(cuMemcpyDtoDAsync_v2, dst, src, bytes, (CUstream)s);
}

ms_status ms_memset8(uintptr_t ctx, uintptr_t s, uint64_t dst, unsigned char v, size_t bytes) {
	CTX(ctx);
	return DRV(cuMemsetD8Async, dst, v, bytes, (CUstream)s);
}

ms_status ms_event_create(uintptr_t ctx, unsigned flags, uintptr_t *e) {
	CTX(ctx);
	CUevent h = NULL;
	ms_status r = DRV(cuEventCreate, &h, flags);
	*e = (uintptr_t)h;
	return r;
}

ms_status ms_event_destroy(uintptr_t ctx, uintptr_t e) {
	CTX(ctx);
	return DRV(cuEventDestroy_v2, (CUevent)e);
}

ms_status ms_event_record(uintptr_t ctx, uintptr_t e, uintptr_t s) {
	CTX(ctx);
	return DRV(cuEventRecord, (CUevent)e, (CUstream)s);
}

ms_status ms_event_sync(uintptr_t ctx, uintptr_t e) {
	CTX(ctx);
	return DRV(cuEventSynchronize, (CUevent)e);
}

ms_status ms_event_query(uintptr_t ctx, uintptr_t e) {
	CTX(ctx);
	return DRV(cuEventQuery, (CUevent)e);
}

ms_status ms_event_elapsed(uintptr_t ctx, float *ms, uintptr_t start, uintptr_t end) {
	CTX(ctx);
	return DRV(cuEventElapsedTime, ms, (CUevent)start, (CUevent)end);
}

ms_status ms_module_load(uintptr_t ctx, const void *image, uintptr_t *m) {
	CTX(ctx);
	CUmodule h = NULL;
	ms_status r = DRV(cuModuleLoadData, &h, image);
	*m = (uintptr_t)h;
	return r;
}

ms_status ms_module_unload(uintptr_t ctx, uintptr_t m) {
	CTX(ctx);
	return DRV(cuModuleUnload, (CUmodule)m);
}

ms_status ms_module_function(uintptr_t ctx, uintptr_t m, const char *name, uintptr_t *f) {
	CTX(ctx);
	CUfunction h = NULL;
	ms_status r = DRV(cuModuleGetFunction, &h, (CUmodule)m, name);
	*f = (uintptr_t)h;
	return r;
}

ms_status ms_func_set_attr(uintptr_t ctx, uintptr_t f, int attr, int value) {
	CTX(ctx);
	return DRV(cuFuncSetAttribute, (CUfunction)f, attr, value);
}

ms_status ms_launch(uintptr_t ctx, uintptr_t f, unsigned gx, unsigned gy, unsigned gz,
                    unsigned bx, unsigned by, unsigned bz, unsigned shared, uintptr_t s,
                    const uint64_t *slots, int nslots) {
	// The parameters live in this C frame: cuLaunchKernel copies them
	// before it returns, and nothing here points into Go memory after.
	uint64_t vals[MS_MAX_ARGS];
	void *params[MS_MAX_ARGS];
	if (nslots < 0 || nslots > MS_MAX_ARGS) {
		return st(1 /* CUDA_ERROR_INVALID_VALUE */, MS_LIB_DRIVER, "cuLaunchKernel");
	}
	for (int i = 0; i < nslots; i++) {
		vals[i] = slots[i];
		params[i] = &vals[i];
	}
	CTX(ctx);
	return DRV(cuLaunchKernel, (CUfunction)f, gx, gy, gz, bx, by, bz, shared, (CUstream)s,
	           nslots > 0 ? params : NULL, NULL);
}

// cuBLAS.

#define BLAS(fn, ...) st(blas.fn(__VA_ARGS__), MS_LIB_CUBLAS, #fn)

ms_status ms_cublas_create(uintptr_t ctx, uintptr_t *h) {
	CTX(ctx);
	cublasHandle_t b = NULL;
	ms_status r = BLAS(cublasCreate_v2, &b);
	*h = (uintptr_t)b;
	return r;
}

ms_status ms_cublas_destroy(uintptr_t ctx, uintptr_t h) {
	CTX(ctx);
	return BLAS(cublasDestroy_v2, (cublasHandle_t)h);
}

ms_status ms_cublas_version(uintptr_t ctx, uintptr_t h, int *v) {
	CTX(ctx);
	return BLAS(cublasGetVersion_v2, (cublasHandle_t)h, v);
}

ms_status ms_gemm(uintptr_t ctx, uintptr_t h, uintptr_t s, int transa, int transb,
                  int m, int n, int k, float alpha,
                  uint64_t a, int atype, int lda,
                  uint64_t b, int btype, int ldb, float beta,
                  uint64_t c, int ctype, int ldc) {
	CTX(ctx);
	ms_status r = BLAS(cublasSetStream_v2, (cublasHandle_t)h, (CUstream)s);
	if (r.code != 0) {
		return r;
	}
	return BLAS(cublasGemmEx, (cublasHandle_t)h, transa, transb, m, n, k,
	            &alpha, (const void *)(uintptr_t)a, atype, lda,
	            (const void *)(uintptr_t)b, btype, ldb,
	            &beta, (void *)(uintptr_t)c, ctype, ldc,
	            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

ms_status ms_gemm_strided(uintptr_t ctx, uintptr_t h, uintptr_t s, int transa, int transb,
                          int m, int n, int k, float alpha,
                          uint64_t a, int atype, int lda, long long stridea,
                          uint64_t b, int btype, int ldb, long long strideb, float beta,
                          uint64_t c, int ctype, int ldc, long long stridec, int batch) {
	CTX(ctx);
	ms_status r = BLAS(cublasSetStream_v2, (cublasHandle_t)h, (CUstream)s);
	if (r.code != 0) {
		return r;
	}
	return BLAS(cublasGemmStridedBatchedEx, (cublasHandle_t)h, transa, transb, m, n, k,
	            &alpha, (const void *)(uintptr_t)a, atype, lda, stridea,
	            (const void *)(uintptr_t)b, btype, ldb, strideb,
	            &beta, (void *)(uintptr_t)c, ctype, ldc, stridec, batch,
	            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
}

// NVRTC.

#define RTC(fn, ...) st(rtc.fn(__VA_ARGS__), MS_LIB_NVRTC, #fn)

const char *ms_nvrtc_error_string(int code) {
	if (rtc.nvrtcGetErrorString == NULL) {
		return NULL;
	}
	return rtc.nvrtcGetErrorString(code);
}

ms_status ms_nvrtc_version(int *major, int *minor) { return RTC(nvrtcVersion, major, minor); }

int ms_nvrtc_has_cubin(void) { return rtc.nvrtcGetCUBINSize != NULL && rtc.nvrtcGetCUBIN != NULL; }

ms_status ms_nvrtc_compile(const char *src, const char *name, int nopts, char **opts,
                           int cubin, char **log, size_t *loglen,
                           char **image, size_t *imagelen) {
	*log = NULL;
	*loglen = 0;
	*image = NULL;
	*imagelen = 0;
	if (cubin && !ms_nvrtc_has_cubin()) {
		return st(3 /* NVRTC_ERROR_INVALID_INPUT */, MS_LIB_NVRTC, "nvrtcGetCUBIN");
	}
	nvrtcProgram prog = NULL;
	ms_status r = RTC(nvrtcCreateProgram, &prog, src, name, 0, NULL, NULL);
	if (r.code != 0) {
		return r;
	}
	ms_status res = RTC(nvrtcCompileProgram, prog, nopts, (const char *const *)opts);

	// The log, whether or not the compile succeeded.
	size_t n = 0;
	if (rtc.nvrtcGetProgramLogSize(prog, &n) == 0 && n > 0) {
		char *buf = malloc(n);
		if (buf != NULL && rtc.nvrtcGetProgramLog(prog, buf) == 0) {
			*log = buf;
			*loglen = strnlen(buf, n);
		} else {
			free(buf);
		}
	}

	if (res.code == 0) {
		n = 0;
		res = cubin ? RTC(nvrtcGetCUBINSize, prog, &n) : RTC(nvrtcGetPTXSize, prog, &n);
		if (res.code == 0) {
			char *buf = malloc(n > 0 ? n : 1);
			if (buf == NULL) {
				res = st(1 /* NVRTC_ERROR_OUT_OF_MEMORY */, MS_LIB_NVRTC, "malloc");
			} else {
				res = cubin ? RTC(nvrtcGetCUBIN, prog, buf) : RTC(nvrtcGetPTX, prog, buf);
				if (res.code == 0) {
					*image = buf;
					*imagelen = n;
				} else {
					free(buf);
				}
			}
		}
	}
	rtc.nvrtcDestroyProgram(&prog);
	return res;
}
