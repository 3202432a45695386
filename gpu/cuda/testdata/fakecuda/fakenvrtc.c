// fakenvrtc.c: a FAKE NVRTC (libnvrtc.so.12) for package cuda's unit
// tests. It compiles nothing: the "image" is "FAKECUBIN" or "FAKEPTX", a
// newline, the options separated by spaces, a newline and the source, so
// tests can see what was asked for; fakecuda.c loads such images.
//
// A source containing "#error" fails with NVRTC_ERROR_COMPILATION and a
// log; with FAKENVRTC_REJECT_SM set, --gpu-arch=sm_XY fails with
// NVRTC_ERROR_INVALID_OPTION (an NVRTC too old for the device). Built with
// -DFAKE_NO_CUBIN it lacks nvrtcGetCUBIN (NVRTC before 11.1). A successful
// compile logs "fake nvrtc: compiled for ARCH".

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { OK = 0, INVALID_INPUT = 3, INVALID_PROGRAM = 4, INVALID_OPTION = 5, COMPILATION = 6 };

typedef struct {
	char *src;
	char *opts;
	char log[256];
	char *image;
	size_t image_len;
} prog_t;

const char *nvrtcGetErrorString(int r) {
	switch (r) {
	case OK: return "NVRTC_SUCCESS";
	case INVALID_INPUT: return "NVRTC_ERROR_INVALID_INPUT";
	case INVALID_PROGRAM: return "NVRTC_ERROR_INVALID_PROGRAM";
	case INVALID_OPTION: return "NVRTC_ERROR_INVALID_OPTION";
	case COMPILATION: return "NVRTC_ERROR_COMPILATION";
	}
	return "NVRTC_ERROR unknown";
}

int nvrtcVersion(int *major, int *minor) {
	*major = 12;
	*minor = 4;
	return OK;
}

int nvrtcCreateProgram(void **p, const char *src, const char *name, int nh,
                       const char *const *headers, const char *const *names) {
	(void)name;
	(void)headers;
	(void)names;
	if (src == NULL || nh != 0) return INVALID_INPUT;
	prog_t *pr = calloc(1, sizeof *pr);
	pr->src = strdup(src);
	*p = pr;
	return OK;
}

int nvrtcDestroyProgram(void **p) {
	prog_t *pr = *p;
	if (pr == NULL) return INVALID_PROGRAM;
	free(pr->src);
	free(pr->opts);
	free(pr->image);
	free(pr);
	*p = NULL;
	return OK;
}

int nvrtcCompileProgram(void *p, int n, const char *const *opts) {
	prog_t *pr = p;
	size_t len = 1;
	const char *arch = "";
	for (int i = 0; i < n; i++) {
		len += strlen(opts[i]) + 1;
		if (strncmp(opts[i], "--gpu-arch=", 11) == 0) arch = opts[i] + 11;
	}
	pr->opts = calloc(1, len);
	for (int i = 0; i < n; i++) {
		if (i > 0) strcat(pr->opts, " ");
		strcat(pr->opts, opts[i]);
	}
	if (getenv("FAKENVRTC_REJECT_SM") != NULL && strncmp(arch, "sm_", 3) == 0) {
		snprintf(pr->log, sizeof pr->log, "nvrtc: error: invalid value for --gpu-arch (-arch)\n");
		return INVALID_OPTION;
	}
	if (strstr(pr->src, "#error") != NULL) {
		snprintf(pr->log, sizeof pr->log, "fake.cu(1): error: #error directive: fake failure\n");
		return COMPILATION;
	}
	snprintf(pr->log, sizeof pr->log, "fake nvrtc: compiled for %s\n", arch);
	const char *kind = strncmp(arch, "sm_", 3) == 0 ? "FAKECUBIN" : "FAKEPTX";
	pr->image_len = strlen(kind) + 1 + strlen(pr->opts) + 1 + strlen(pr->src) + 1;
	pr->image = malloc(pr->image_len);
	snprintf(pr->image, pr->image_len, "%s\n%s\n%s", kind, pr->opts, pr->src);
	if (kind[4] == 'C') pr->image_len--; // a CUBIN has no trailing NUL
	return OK;
}

int nvrtcGetProgramLogSize(void *p, size_t *n) {
	*n = strlen(((prog_t *)p)->log) + 1;
	return OK;
}

int nvrtcGetProgramLog(void *p, char *buf) {
	strcpy(buf, ((prog_t *)p)->log);
	return OK;
}

static int get_size(prog_t *pr, const char *kind, size_t *n) {
	if (pr->image == NULL || strncmp(pr->image, kind, strlen(kind)) != 0) return INVALID_INPUT;
	*n = pr->image_len;
	return OK;
}

static int get(prog_t *pr, const char *kind, char *buf) {
	if (pr->image == NULL || strncmp(pr->image, kind, strlen(kind)) != 0) return INVALID_INPUT;
	memcpy(buf, pr->image, pr->image_len);
	return OK;
}

int nvrtcGetPTXSize(void *p, size_t *n) { return get_size(p, "FAKEPTX", n); }
int nvrtcGetPTX(void *p, char *buf) { return get(p, "FAKEPTX", buf); }

#ifndef FAKE_NO_CUBIN
int nvrtcGetCUBINSize(void *p, size_t *n) { return get_size(p, "FAKECUBIN", n); }
int nvrtcGetCUBIN(void *p, char *buf) { return get(p, "FAKECUBIN", buf); }
#endif
