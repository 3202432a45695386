//go:build cgo && amd64

package kernel

/*
#cgo CFLAGS: -O3 -std=gnu11
#cgo LDFLAGS: -lm
#include "native_x86.h"
*/
import "C"

import "unsafe"

// nativeAvailable reports whether the C SIMD kernels are compiled in.
const nativeAvailable = true

// nr is the packed-B panel width shared with the C kernels (MK_NR).
const nr = C.MK_NR

func f32p(s []float32) *C.float {
	if len(s) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&s[0]))
}

func ptr[T any](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}

func b2i(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// The GEMM, packing and GEMV bindings run the current tier's C kernels:
// mk_* (native_x86.c) at LevelAVX512 and above, mk2_* (native_avx2.c) at
// LevelAVX2. Callers check useNative and pass bkBF16Dot only at
// LevelAVX512BF16.

func nativeGemm(transA, transB bool, M, N, K int, alpha float32, a []float32, lda int,
	b unsafe.Pointer, bkind int, packed bool, ldb int, beta float32, c []float32, ldc int) {
	if level >= LevelAVX512 {
		C.mk_gemm(b2i(transA), b2i(transB), C.long(M), C.long(N), C.long(K), C.float(alpha),
			f32p(a), C.long(lda), b, C.int(bkind), b2i(packed), C.long(ldb), C.float(beta), f32p(c), C.long(ldc))
		return
	}
	C.mk2_gemm(b2i(transA), b2i(transB), C.long(M), C.long(N), C.long(K), C.float(alpha),
		f32p(a), C.long(lda), b, C.int(bkind), b2i(packed), C.long(ldb), C.float(beta), f32p(c), C.long(ldc))
}

func nativePackB(dst unsafe.Pointer, bkind int, transB bool, b unsafe.Pointer, ldb, K, N int) {
	if level >= LevelAVX512 {
		C.mk_pack_b(dst, C.int(bkind), b2i(transB), b, C.long(ldb), C.long(K), C.long(N))
		return
	}
	C.mk2_pack_b(dst, C.int(bkind), b2i(transB), b, C.long(ldb), C.long(K), C.long(N))
}

func nativeGemv(y []float32, w unsafe.Pointer, bf16 bool, ldw int, x []float32, N, K int, alpha, beta float32) {
	if level >= LevelAVX512 {
		C.mk_gemv(f32p(y), w, b2i(bf16), C.long(ldw), f32p(x), C.long(N), C.long(K), C.float(alpha), C.float(beta))
		return
	}
	C.mk2_gemv(f32p(y), w, b2i(bf16), C.long(ldw), f32p(x), C.long(N), C.long(K), C.float(alpha), C.float(beta))
}

func nativeAttnPackKV(kp, vp, k, v []float32, ld, S, Dh int) {
	C.mk_attn_pack_kv(f32p(kp), f32p(vp), f32p(k), f32p(v), C.long(ld), C.long(S), C.long(Dh))
}

func nativeAttnRows(out []float32, ldo int, lse []float32, q []float32, ldq int, kp, vp []float32,
	S, Dh, r0, r1, pos0, window int, scale float32) {
	C.mk_attn_rows(f32p(out), C.long(ldo), f32p(lse), f32p(q), C.long(ldq), f32p(kp), f32p(vp),
		C.long(S), C.long(Dh), C.long(r0), C.long(r1), C.long(pos0), C.long(window), C.float(scale))
}

func nativeAttnDecode(out []float32, ldo int, lse []float32, lseStride int, q []float32, ldq, rep int,
	k, v []float32, ldkv, lo, hi, Dh int, scale float32, scratch []float32) {
	C.mk_attn_decode(f32p(out), C.long(ldo), f32p(lse), C.long(lseStride), f32p(q), C.long(ldq), C.int(rep),
		f32p(k), f32p(v), C.long(ldkv), C.long(lo), C.long(hi), C.long(Dh), C.float(scale), f32p(scratch))
}

func nativePeakFMA(n int) float32  { return float32(C.mk_peak_fma(C.long(n))) }
func nativePeakBF16(n int) float32 { return float32(C.mk_peak_bf16(C.long(n))) }
func nativeReadBW(p []float32, streams int) float32 {
	return float32(C.mk_read_bw(f32p(p), C.long(len(p)), C.int(streams)))
}

// AVX2 probes (native_avx2.c).
func nativePeakFMA2(n int) float32 { return float32(C.mk2_peak_fma(C.long(n))) }
func nativeReadBW2(p []float32, streams int) float32 {
	return float32(C.mk2_read_bw(f32p(p), C.long(len(p)), C.int(streams)))
}

func nativeGemvPacked(y []float32, b unsafe.Pointer, bkind, N, K int, x []float32, alpha, beta float32) {
	C.mk_gemv_packed(f32p(y), b, C.int(bkind), C.long(N), C.long(K), f32p(x), C.float(alpha), C.float(beta))
}

func nativeGemvPackedRows(y []float32, ldy int, b unsafe.Pointer, bkind, N, K int, x []float32, ldx, M, p0, p1 int, alpha, beta float32) {
	C.mk_gemv_packed_rows(f32p(y), C.long(ldy), b, C.int(bkind), C.long(N), C.long(K), f32p(x), C.long(ldx),
		C.long(M), C.long(p0), C.long(p1), C.float(alpha), C.float(beta))
}

// The elementwise bindings run mk_* at LevelAVX512 and above, mk2_* at
// LevelAVX2; callers check useNative. Each is one cgo call for the whole
// operand (see nativeMinElems).

func nativeAdamW(p, g, m, v []float32, decay, w1 float32, lerpLow bool, beta2, c2, negStep, bc2Sqrt, eps float32) {
	n := C.long(len(p))
	if level >= LevelAVX512 {
		C.mk_adamw(f32p(p), f32p(g), f32p(m), f32p(v), n, C.float(decay), C.float(w1), b2i(lerpLow),
			C.float(beta2), C.float(c2), C.float(negStep), C.float(bc2Sqrt), C.float(eps))
		return
	}
	C.mk2_adamw(f32p(p), f32p(g), f32p(m), f32p(v), n, C.float(decay), C.float(w1), b2i(lerpLow),
		C.float(beta2), C.float(c2), C.float(negStep), C.float(bc2Sqrt), C.float(eps))
}

func nativeSwiGLU(out []float32, ldo int, gate, up []float32, ld, rows, cols int) {
	if level >= LevelAVX512 {
		C.mk_swiglu(f32p(out), C.long(ldo), f32p(gate), f32p(up), C.long(ld), C.long(rows), C.long(cols))
		return
	}
	C.mk2_swiglu(f32p(out), C.long(ldo), f32p(gate), f32p(up), C.long(ld), C.long(rows), C.long(cols))
}

func nativeSwiGLUBackward(dgate, dup, dout []float32, ldo int, gate, up []float32, ld, rows, cols int) {
	if level >= LevelAVX512 {
		C.mk_swiglu_bwd(f32p(dgate), f32p(dup), f32p(dout), C.long(ldo), f32p(gate), f32p(up), C.long(ld),
			C.long(rows), C.long(cols))
		return
	}
	C.mk2_swiglu_bwd(f32p(dgate), f32p(dup), f32p(dout), C.long(ldo), f32p(gate), f32p(up), C.long(ld),
		C.long(rows), C.long(cols))
}

func nativeExpRows(p []float32, rows, n int, lse []float32, diag, window int) {
	if level >= LevelAVX512 {
		C.mk_exp_rows(f32p(p), C.long(rows), C.long(n), f32p(lse), C.long(diag), C.long(window))
		return
	}
	C.mk2_exp_rows(f32p(p), C.long(rows), C.long(n), f32p(lse), C.long(diag), C.long(window))
}
