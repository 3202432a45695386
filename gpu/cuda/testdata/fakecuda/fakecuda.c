// fakecuda.c: a FAKE CUDA driver (libcuda.so.1) for package cuda's unit
// tests, built by the test with gcc. It is not CUDA: "device memory" is
// host memory from malloc, copies are memcpy, streams and events do
// nothing but check their handles, and there is one device, "FakeGPU",
// compute capability 9.0. Calls that need a context fail with
// CUDA_ERROR_INVALID_CONTEXT unless one is current on the calling thread,
// which checks that the shim sets it in every call.
//
// Kernels: cuModuleLoadData accepts images starting "FAKE" (from the fake
// NVRTC); a function named "recordN" takes N parameters and, launched,
// writes to the 8-byte words at its first parameter (a device pointer):
// grid x, y, z, block x, y, z, shared bytes, its max dynamic shared
// memory attribute, then the 8 bytes at each of its other N-1 parameters.
//
// Environment: FAKECUDA_NO_DEVICE makes cuInit fail with
// CUDA_ERROR_NO_DEVICE. Built with -DFAKE_NO_LAUNCH it lacks
// cuLaunchKernel (a driver missing an entry point).

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

enum {
	SUCCESS = 0,
	INVALID_VALUE = 1,
	NOT_INITIALIZED = 3,
	NO_DEVICE = 100,
	INVALID_DEVICE = 101,
	INVALID_IMAGE = 200,
	INVALID_CONTEXT = 201,
	INVALID_HANDLE = 400,
	NOT_FOUND = 500,
	NOT_READY = 600,
	HOST_MEMORY_NOT_REGISTERED = 713,
};

#define MAGIC_STREAM 0x5354524dU
#define MAGIC_EVENT 0x45564e54U
#define MAGIC_MODULE 0x4d4f444cU
#define MAGIC_FUNC 0x46554e43U

static int initialised;
static int primary_ctx = 1; // the context's identity; its address is the handle
static int ctx_refs;
static __thread void *current;
static long long allocated;

typedef struct { unsigned magic; } stream_t;
typedef struct { unsigned magic, flags; int pending; } event_t;
typedef struct { unsigned magic; char *image; } module_t;
typedef struct { unsigned magic; int nparams; int max_shared; } func_t;

#define NEED_INIT() do { if (!initialised) return NOT_INITIALIZED; } while (0)
#define NEED_CTX() do { if (current != &primary_ctx || ctx_refs == 0) return INVALID_CONTEXT; } while (0)

static int stream_ok(void *s) { return s == NULL || ((stream_t *)s)->magic == MAGIC_STREAM; }

CUresult cuGetErrorName(CUresult e, const char **s) {
	switch (e) {
	case SUCCESS: *s = "CUDA_SUCCESS"; return 0;
	case INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; return 0;
	case NOT_INITIALIZED: *s = "CUDA_ERROR_NOT_INITIALIZED"; return 0;
	case NO_DEVICE: *s = "CUDA_ERROR_NO_DEVICE"; return 0;
	case INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; return 0;
	case INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; return 0;
	case INVALID_CONTEXT: *s = "CUDA_ERROR_INVALID_CONTEXT"; return 0;
	case INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; return 0;
	case NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; return 0;
	case NOT_READY: *s = "CUDA_ERROR_NOT_READY"; return 0;
	case HOST_MEMORY_NOT_REGISTERED: *s = "CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED"; return 0;
	}
	*s = NULL;
	return INVALID_VALUE;
}

CUresult cuInit(unsigned flags) {
	if (flags != 0) return INVALID_VALUE;
	if (getenv("FAKECUDA_NO_DEVICE") != NULL) return NO_DEVICE;
	initialised = 1;
	return SUCCESS;
}

CUresult cuDriverGetVersion(int *v) { *v = 12040; return SUCCESS; }
CUresult cuDeviceGetCount(int *n) { NEED_INIT(); *n = 1; return SUCCESS; }

CUresult cuDeviceGet(int *dev, int ordinal) {
	NEED_INIT();
	if (ordinal != 0) return INVALID_DEVICE;
	*dev = 0;
	return SUCCESS;
}

CUresult cuDeviceGetName(char *buf, int len, int dev) {
	NEED_INIT();
	if (dev != 0) return INVALID_DEVICE;
	snprintf(buf, len, "FakeGPU");
	return SUCCESS;
}

CUresult cuDeviceGetAttribute(int *v, int attr, int dev) {
	NEED_INIT();
	if (dev != 0) return INVALID_DEVICE;
	switch (attr) {
	case 1: *v = 1024; return SUCCESS;    // MAX_THREADS_PER_BLOCK
	case 16: *v = 132; return SUCCESS;    // MULTIPROCESSOR_COUNT
	case 75: *v = 9; return SUCCESS;      // COMPUTE_CAPABILITY_MAJOR
	case 76: *v = 0; return SUCCESS;      // COMPUTE_CAPABILITY_MINOR
	case 97: *v = 232448; return SUCCESS; // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
	}
	return INVALID_VALUE;
}

CUresult cuDeviceTotalMem_v2(size_t *bytes, int dev) {
	NEED_INIT();
	if (dev != 0) return INVALID_DEVICE;
	*bytes = (size_t)80 << 30;
	return SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(void **ctx, int dev) {
	NEED_INIT();
	if (dev != 0) return INVALID_DEVICE;
	ctx_refs++;
	*ctx = &primary_ctx;
	return SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease_v2(int dev) {
	NEED_INIT();
	if (dev != 0) return INVALID_DEVICE;
	if (ctx_refs == 0) return INVALID_CONTEXT;
	ctx_refs--;
	return SUCCESS;
}

CUresult cuCtxSetCurrent(void *ctx) {
	NEED_INIT();
	if (ctx != NULL && ctx != &primary_ctx) return INVALID_CONTEXT;
	current = ctx;
	return SUCCESS;
}

CUresult cuCtxSynchronize(void) { NEED_CTX(); return SUCCESS; }

CUresult cuMemGetInfo_v2(size_t *free_bytes, size_t *total) {
	NEED_CTX();
	*total = (size_t)80 << 30;
	*free_bytes = *total - __atomic_load_n(&allocated, __ATOMIC_RELAXED);
	return SUCCESS;
}

// Allocations carry their size in a header so free can count it.
CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t bytes) {
	NEED_CTX();
	if (bytes == 0) return INVALID_VALUE;
	size_t *h = malloc(bytes + 16);
	if (h == NULL) return 2; // OUT_OF_MEMORY
	h[0] = bytes;
	__atomic_fetch_add(&allocated, (long long)bytes, __ATOMIC_RELAXED);
	*p = (CUdeviceptr)(uintptr_t)((char *)h + 16);
	return SUCCESS;
}

CUresult cuMemFree_v2(CUdeviceptr p) {
	NEED_CTX();
	if (p == 0) return INVALID_VALUE;
	size_t *h = (size_t *)((char *)(uintptr_t)p - 16);
	__atomic_fetch_sub(&allocated, (long long)h[0], __ATOMIC_RELAXED);
	free(h);
	return SUCCESS;
}

CUresult cuMemHostAlloc(void **p, size_t bytes, unsigned flags) {
	NEED_CTX();
	if (flags != 1 /* PORTABLE, what moesys asks for */) return INVALID_VALUE;
	*p = malloc(bytes);
	return *p != NULL ? SUCCESS : 2;
}

CUresult cuMemFreeHost(void *p) { NEED_CTX(); free(p); return SUCCESS; }

#define MAX_REG 16
static void *registered[MAX_REG];

CUresult cuMemHostRegister_v2(void *p, size_t bytes, unsigned flags) {
	NEED_CTX();
	if (flags != 1 || p == NULL || bytes == 0) return INVALID_VALUE;
	for (int i = 0; i < MAX_REG; i++) {
		if (registered[i] == NULL) {
			registered[i] = p;
			return SUCCESS;
		}
	}
	return 2;
}

CUresult cuMemHostUnregister(void *p) {
	NEED_CTX();
	for (int i = 0; i < MAX_REG; i++) {
		if (registered[i] == p && p != NULL) {
			registered[i] = NULL;
			return SUCCESS;
		}
	}
	return HOST_MEMORY_NOT_REGISTERED;
}

CUresult cuStreamCreate(void **s, unsigned flags) {
	NEED_CTX();
	if (flags != 1 /* NON_BLOCKING */) return INVALID_VALUE;
	stream_t *st = malloc(sizeof *st);
	st->magic = MAGIC_STREAM;
	*s = st;
	return SUCCESS;
}

CUresult cuStreamDestroy_v2(void *s) {
	NEED_CTX();
	if (s == NULL || !stream_ok(s)) return INVALID_HANDLE;
	((stream_t *)s)->magic = 0;
	free(s);
	return SUCCESS;
}

CUresult cuStreamSynchronize(void *s) { NEED_CTX(); return stream_ok(s) ? SUCCESS : INVALID_HANDLE; }

CUresult cuStreamWaitEvent(void *s, void *e, unsigned flags) {
	NEED_CTX();
	if (!stream_ok(s) || e == NULL || ((event_t *)e)->magic != MAGIC_EVENT || flags != 0) return INVALID_HANDLE;
	return SUCCESS;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, void *s) {
	NEED_CTX();
	if (!stream_ok(s)) return INVALID_HANDLE;
	memcpy((void *)(uintptr_t)dst, src, n);
	return SUCCESS;
}

CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, void *s) {
	NEED_CTX();
	if (!stream_ok(s)) return INVALID_HANDLE;
	memcpy(dst, (const void *)(uintptr_t)src, n);
	return SUCCESS;
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void *s) {
	NEED_CTX();
	if (!stream_ok(s)) return INVALID_HANDLE;
	memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
	return SUCCESS;
}

CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char v, size_t n, void *s) {
	NEED_CTX();
	if (!stream_ok(s)) return INVALID_HANDLE;
	memset((void *)(uintptr_t)dst, v, n);
	return SUCCESS;
}

CUresult cuEventCreate(void **e, unsigned flags) {
	NEED_CTX();
	if (flags & ~2u) return INVALID_VALUE;
	event_t *ev = calloc(1, sizeof *ev);
	ev->magic = MAGIC_EVENT;
	ev->flags = flags;
	*e = ev;
	return SUCCESS;
}

static int event_ok(void *e) { return e != NULL && ((event_t *)e)->magic == MAGIC_EVENT; }

CUresult cuEventDestroy_v2(void *e) {
	NEED_CTX();
	if (!event_ok(e)) return INVALID_HANDLE;
	((event_t *)e)->magic = 0;
	free(e);
	return SUCCESS;
}

// A recorded event reports NOT_READY to its first query, then completes.
CUresult cuEventRecord(void *e, void *s) {
	NEED_CTX();
	if (!event_ok(e) || !stream_ok(s)) return INVALID_HANDLE;
	((event_t *)e)->pending = 1;
	return SUCCESS;
}

CUresult cuEventSynchronize(void *e) {
	NEED_CTX();
	if (!event_ok(e)) return INVALID_HANDLE;
	((event_t *)e)->pending = 0;
	return SUCCESS;
}

CUresult cuEventQuery(void *e) {
	NEED_CTX();
	if (!event_ok(e)) return INVALID_HANDLE;
	if (((event_t *)e)->pending) {
		((event_t *)e)->pending = 0;
		return NOT_READY;
	}
	return SUCCESS;
}

// Every timed interval is 1.5 ms.
CUresult cuEventElapsedTime(float *ms, void *a, void *b) {
	NEED_CTX();
	if (!event_ok(a) || !event_ok(b)) return INVALID_HANDLE;
	if ((((event_t *)a)->flags | ((event_t *)b)->flags) & 2) return INVALID_HANDLE;
	*ms = 1.5f;
	return SUCCESS;
}

CUresult cuModuleLoadData(void **m, const void *image) {
	NEED_CTX();
	if (image == NULL || strncmp(image, "FAKE", 4) != 0) return INVALID_IMAGE;
	module_t *mod = malloc(sizeof *mod);
	mod->magic = MAGIC_MODULE;
	mod->image = strdup(image);
	*m = mod;
	return SUCCESS;
}

CUresult cuModuleUnload(void *m) {
	NEED_CTX();
	if (m == NULL || ((module_t *)m)->magic != MAGIC_MODULE) return INVALID_HANDLE;
	((module_t *)m)->magic = 0;
	free(((module_t *)m)->image);
	free(m);
	return SUCCESS;
}

CUresult cuModuleGetFunction(void **f, void *m, const char *name) {
	NEED_CTX();
	if (m == NULL || ((module_t *)m)->magic != MAGIC_MODULE) return INVALID_HANDLE;
	int n = 0;
	char tail = 0;
	if (sscanf(name, "record%d%c", &n, &tail) != 1 || n < 1) return NOT_FOUND;
	func_t *fn = calloc(1, sizeof *fn);
	fn->magic = MAGIC_FUNC;
	fn->nparams = n;
	fn->max_shared = 48 << 10;
	*f = fn;
	return SUCCESS;
}

CUresult cuFuncSetAttribute(void *f, int attr, int value) {
	NEED_CTX();
	if (f == NULL || ((func_t *)f)->magic != MAGIC_FUNC) return INVALID_HANDLE;
	if (attr != 8 /* MAX_DYNAMIC_SHARED_SIZE_BYTES */ || value < 0 || value > 232448) return INVALID_VALUE;
	((func_t *)f)->max_shared = value;
	return SUCCESS;
}

#ifndef FAKE_NO_LAUNCH
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz,
                        unsigned bx, unsigned by, unsigned bz, unsigned shared,
                        void *s, void **params, void **extra) {
	NEED_CTX();
	func_t *fn = f;
	if (fn == NULL || fn->magic != MAGIC_FUNC || !stream_ok(s)) return INVALID_HANDLE;
	if (params == NULL || extra != NULL) return INVALID_VALUE;
	if (gx == 0 || gy == 0 || gz == 0 || bx * by * bz == 0 || bx * by * bz > 1024) return INVALID_VALUE;
	if ((int)shared > fn->max_shared) return INVALID_VALUE;
	uint64_t *out = (uint64_t *)(uintptr_t)*(CUdeviceptr *)params[0];
	uint64_t head[8] = {gx, gy, gz, bx, by, bz, shared, (uint64_t)fn->max_shared};
	memcpy(out, head, sizeof head);
	for (int i = 1; i < fn->nparams; i++) {
		memcpy(&out[7 + i], params[i], 8);
	}
	return SUCCESS;
}
#endif
