//go:build !(cgo && amd64)

package kernel

import "unsafe"

// nativeAvailable reports whether the C SIMD kernels are compiled in.
const nativeAvailable = false

// nr is the packed-B panel width (used only by the native kernels).
const nr = 32

func nativeGemm(transA, transB bool, M, N, K int, alpha float32, a []float32, lda int,
	b unsafe.Pointer, bkind int, packed bool, ldb int, beta float32, c []float32, ldc int) {
	panic("kernel: native kernels not built")
}
func nativePackB(dst unsafe.Pointer, bkind int, transB bool, b unsafe.Pointer, ldb, K, N int) {
	panic("kernel: native kernels not built")
}
func nativeGemv(y []float32, w unsafe.Pointer, bf16 bool, ldw int, x []float32, N, K int, alpha, beta float32) {
	panic("kernel: native kernels not built")
}
func nativeAttnPackKV(kp, vp, k, v []float32, ld, S, Dh int) {
	panic("kernel: native kernels not built")
}
func nativeAttnRows(out []float32, ldo int, lse []float32, q []float32, ldq int, kp, vp []float32,
	S, Dh, r0, r1, pos0, window int, scale float32) {
	panic("kernel: native kernels not built")
}
func nativeAttnDecode(out []float32, ldo int, lse []float32, lseStride int, q []float32, ldq, rep int,
	k, v []float32, ldkv, lo, hi, Dh int, scale float32, scratch []float32) {
	panic("kernel: native kernels not built")
}
func nativePeakFMA(n int) float32                    { panic("kernel: native kernels not built") }
func nativePeakBF16(n int) float32                   { panic("kernel: native kernels not built") }
func nativeReadBW(p []float32, streams int) float32  { panic("kernel: native kernels not built") }
func nativePeakFMA2(n int) float32                   { panic("kernel: native kernels not built") }
func nativeReadBW2(p []float32, streams int) float32 { panic("kernel: native kernels not built") }

func ptr[T any](s []T) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(&s[0])
}

func nativeGemvPacked(y []float32, b unsafe.Pointer, bkind, N, K int, x []float32, alpha, beta float32) {
	panic("kernel: native kernels not built")
}
func nativeGemvPackedRows(y []float32, ldy int, b unsafe.Pointer, bkind, N, K int, x []float32, ldx, M, p0, p1 int, alpha, beta float32) {
	panic("kernel: native kernels not built")
}

func nativeAdamW(p, g, m, v []float32, decay, w1 float32, lerpLow bool, beta2, c2, negStep, bc2Sqrt, eps float32) {
	panic("kernel: native kernels not built")
}
func nativeSwiGLU(out []float32, ldo int, gate, up []float32, ld, rows, cols int) {
	panic("kernel: native kernels not built")
}
func nativeSwiGLUBackward(dgate, dup, dout []float32, ldo int, gate, up []float32, ld, rows, cols int) {
	panic("kernel: native kernels not built")
}
func nativeExpRows(p []float32, rows, n int, lse []float32, diag, window int) {
	panic("kernel: native kernels not built")
}
