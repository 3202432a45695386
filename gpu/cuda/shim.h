// shim.h: the C side of package cuda. It declares only the CUDA driver,
// cuBLAS and NVRTC entry points moesys calls (no CUDA headers), loads them
// with dlopen/dlsym and wraps them. Handles cross into Go as uintptr_t;
// every wrapper that needs a context makes ctx current first, in the same
// C call, because Go moves goroutines between OS threads.

#ifndef MOESYS_CUDA_SHIM_H
#define MOESYS_CUDA_SHIM_H

#include <stddef.h>
#include <stdint.h>

// ms_status is a wrapper's outcome: code 0 is success; otherwise call names
// the entry point that failed and lib says whose status code it is.
enum { MS_LIB_DRIVER = 0, MS_LIB_CUBLAS = 1, MS_LIB_NVRTC = 2, MS_LIB_SHIM = 3 };

typedef struct {
	int code;
	int lib;
	const char *call; // static string
} ms_status;

// The most kernel parameters ms_launch takes (8-byte slots).
#define MS_MAX_ARGS 64

// Loading: each returns NULL on success or a malloc'd message (free it).
char *ms_load_driver(const char *path);
char *ms_load_cublas(const char *path);
char *ms_load_nvrtc(const char *path);

// Driver.
const char *ms_error_name(int code); // NULL if unknown
ms_status ms_init(void);
ms_status ms_driver_version(int *v);
ms_status ms_device_count(int *n);
ms_status ms_device_get(int ordinal, int *dev);
ms_status ms_device_name(int dev, char *buf, int len);
ms_status ms_device_attr(int dev, int attr, int *v);
ms_status ms_device_total_mem(int dev, size_t *bytes);
ms_status ms_ctx_retain(int dev, uintptr_t *ctx);
ms_status ms_ctx_release(int dev);
ms_status ms_ctx_sync(uintptr_t ctx);
ms_status ms_mem_info(uintptr_t ctx, size_t *free_bytes, size_t *total_bytes);
ms_status ms_mem_alloc(uintptr_t ctx, uint64_t *p, size_t bytes);
ms_status ms_mem_free(uintptr_t ctx, uint64_t p);
ms_status ms_host_alloc(uintptr_t ctx, void **p, size_t bytes);
ms_status ms_host_free(uintptr_t ctx, void *p);
ms_status ms_host_register(uintptr_t ctx, void *p, size_t bytes);
ms_status ms_host_unregister(uintptr_t ctx, void *p);
ms_status ms_stream_create(uintptr_t ctx, uintptr_t *s);
ms_status ms_stream_destroy(uintptr_t ctx, uintptr_t s);
ms_status ms_stream_sync(uintptr_t ctx, uintptr_t s);
ms_status ms_stream_wait(uintptr_t ctx, uintptr_t s, uintptr_t e);
ms_status ms_copy_htod(uintptr_t ctx, uintptr_t s, uint64_t dst, const void *src, size_t bytes);
ms_status ms_copy_dtoh(uintptr_t ctx, uintptr_t s, void *dst, uint64_t src, size_t bytes);
ms_status ms_copy_dtod(uintptr_t ctx, uintptr_t s, uint64_t dst, uint64_t src, size_t bytes);
ms_status ms_memset8(uintptr_t ctx, uintptr_t s, uint64_t dst, unsigned char v, size_t bytes);
ms_status ms_event_create(uintptr_t ctx, unsigned flags, uintptr_t *e);
ms_status ms_event_destroy(uintptr_t ctx, uintptr_t e);
ms_status ms_event_record(uintptr_t ctx, uintptr_t e, uintptr_t s);
ms_status ms_event_sync(uintptr_t ctx, uintptr_t e);
ms_status ms_event_query(uintptr_t ctx, uintptr_t e);
ms_status ms_event_elapsed(uintptr_t ctx, float *ms, uintptr_t start, uintptr_t end);
ms_status ms_module_load(uintptr_t ctx, const void *image, uintptr_t *m);
ms_status ms_module_unload(uintptr_t ctx, uintptr_t m);
ms_status ms_module_function(uintptr_t ctx, uintptr_t m, const char *name, uintptr_t *f);
ms_status ms_func_set_attr(uintptr_t ctx, uintptr_t f, int attr, int value);
ms_status ms_launch(uintptr_t ctx, uintptr_t f, unsigned gx, unsigned gy, unsigned gz,
                    unsigned bx, unsigned by, unsigned bz, unsigned shared, uintptr_t s,
                    const uint64_t *slots, int nslots);

// cuBLAS.
ms_status ms_cublas_create(uintptr_t ctx, uintptr_t *h);
ms_status ms_cublas_destroy(uintptr_t ctx, uintptr_t h);
ms_status ms_cublas_version(uintptr_t ctx, uintptr_t h, int *v);
ms_status ms_gemm(uintptr_t ctx, uintptr_t h, uintptr_t s, int transa, int transb,
                  int m, int n, int k, float alpha,
                  uint64_t a, int atype, int lda,
                  uint64_t b, int btype, int ldb, float beta,
                  uint64_t c, int ctype, int ldc);
ms_status ms_gemm_strided(uintptr_t ctx, uintptr_t h, uintptr_t s, int transa, int transb,
                          int m, int n, int k, float alpha,
                          uint64_t a, int atype, int lda, long long stridea,
                          uint64_t b, int btype, int ldb, long long strideb, float beta,
                          uint64_t c, int ctype, int ldc, long long stridec, int batch);

// NVRTC.
const char *ms_nvrtc_error_string(int code); // NULL if unknown
ms_status ms_nvrtc_version(int *major, int *minor);
int ms_nvrtc_has_cubin(void);
// ms_nvrtc_compile compiles src; on return *log and *image (when not NULL)
// are malloc'd buffers the caller frees. cubin selects nvrtcGetCUBIN over
// nvrtcGetPTX.
ms_status ms_nvrtc_compile(const char *src, const char *name, int nopts, char **opts,
                           int cubin, char **log, size_t *loglen,
                           char **image, size_t *imagelen);

#endif
