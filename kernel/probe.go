package kernel

import "runtime"

// Machine probes for benchmarks: they measure this machine's own peaks so that
// kernel speeds are reported as fractions of what the hardware allows.

// ProbeFMAFlops runs n iterations of independent f32 FMA chains at the
// kernels' vector width (24 chains of 512 bits at LevelAVX512 and above, 12 of
// 256 bits at LevelAVX2) and returns the floating-point operations done (2
// per lane per FMA). Without the native kernels it runs a scalar Go loop and
// reports its flops.
func ProbeFMAFlops(n int) float64 {
	if useAVX512() {
		nativePeakFMA(n)
		return float64(n) * 24 * 16 * 2
	}
	if useNative() {
		nativePeakFMA2(n)
		return float64(n) * 12 * 8 * 2
	}
	var a [8]float32
	for it := 0; it < n; it++ {
		for i := range a {
			a[i] = a[i]*0.999999 + 1e-7
		}
	}
	runtime.KeepAlive(a[0])
	return float64(n) * 8 * 2
}

// ProbeBF16Flops runs n iterations of 24 independent VDPBF16PS chains and
// returns the flops done (4 per f32 lane per instruction), or 0 where the CPU
// lacks AVX512_BF16.
func ProbeBF16Flops(n int) float64 {
	if level < LevelAVX512BF16 {
		return 0
	}
	nativePeakBF16(n)
	return float64(n) * 24 * 16 * 4
}

// ProbeRead sums p with wide loads (a memory-bandwidth probe) in 1 or 8
// concurrent sequential streams and returns the bytes read.
func ProbeRead(p []float32, streams int) float64 {
	if useAVX512() {
		runtime.KeepAlive(nativeReadBW(p, streams))
	} else if useNative() {
		runtime.KeepAlive(nativeReadBW2(p, streams))
	} else {
		runtime.KeepAlive(rowSum(p))
	}
	return 4 * float64(len(p))
}
