package kernel

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/cpu"
)

// Level is the instruction-set tier the kernels run at.
type Level int

// The tiers, slowest first. Each is chosen at run time from the CPU's features.
const (
	// LevelGeneric is portable Go: any CPU, any GOARCH, no cgo needed.
	LevelGeneric Level = iota
	// LevelAVX2 runs the GEMM, GEMV and the elementwise AdamW, SwiGLU and
	// attention-backward probability kernels in C with 256-bit FMA (x86 CPUs
	// with AVX2+FMA but no AVX-512, e.g. AMD Zen 2/3, Intel Haswell to Alder
	// Lake; cgo builds only). BF16Dot widens to f32, and attention's forward
	// and the other kernels run the portable Go code.
	LevelAVX2
	// LevelAVX512 runs the C micro-kernels with 512-bit FMA (AVX-512 F/BW/DQ/VL).
	LevelAVX512
	// LevelAVX512BF16 adds VDPBF16PS for bf16 dot products (BF16Dot mode).
	LevelAVX512BF16
)

func (l Level) String() string {
	switch l {
	case LevelGeneric:
		return "generic"
	case LevelAVX2:
		return "avx2"
	case LevelAVX512:
		return "avx512"
	case LevelAVX512BF16:
		return "avx512bf16"
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// Detected is the best tier this CPU and build support.
var Detected = detect()

// level is the tier in use; tests lower it to exercise the portable path.
var level = Detected

func detect() Level {
	if runtime.GOARCH != "amd64" {
		return LevelGeneric
	}
	x := cpu.X86
	avx512 := x.HasAVX512F && x.HasAVX512BW && x.HasAVX512DQ && x.HasAVX512VL && x.HasFMA
	switch {
	case avx512 && x.HasAVX512BF16 && nativeAvailable:
		return LevelAVX512BF16
	case avx512 && nativeAvailable:
		return LevelAVX512
	case x.HasAVX2 && x.HasFMA && nativeAvailable:
		return LevelAVX2
	}
	return LevelGeneric
}

// CurrentLevel returns the tier the kernels run at.
func CurrentLevel() Level { return level }

// SetLevel lowers the tier (for tests and for comparing paths); asking for
// more than Detected gives Detected. It returns the previous tier. Not safe to
// call while kernels run.
func SetLevel(l Level) Level {
	prev := level
	if l > Detected {
		l = Detected
	}
	level = l
	return prev
}

// useNative reports whether the C kernels with both an AVX2 and an AVX-512
// build run (GEMM, GEMV, AdamW, SwiGLU, attention-backward probabilities);
// the bindings in native_cgo.go pick the tier's entry points.
func useNative() bool { return level >= LevelAVX2 }

// nativeMinElems is the element count below which the elementwise kernels
// (AdamW, SwiGLU, attention-backward probabilities) stay in Go: the cgo call
// (~50 ns) costs more than the vector loop saves on fewer elements.
const nativeMinElems = 256

// useAVX512 reports whether the C kernels that exist only for AVX-512 run
// (attention).
func useAVX512() bool { return level >= LevelAVX512 }

// Note describes, in one line, what the kernels run on and what is missing.
func Note() string {
	switch {
	case level >= LevelAVX512BF16:
		return fmt.Sprintf("kernels: %s, %d threads", level, Threads())
	case level == LevelAVX512:
		return fmt.Sprintf("kernels: %s (no AVX512_BF16: bf16-dot GEMM widens to f32), %d threads", level, Threads())
	case level == LevelAVX2:
		return fmt.Sprintf("kernels: %s (GEMM and GEMV at 256 bits, bf16-dot GEMM widens to f32, attention in portable Go), %d threads", level, Threads())
	case !nativeAvailable && runtime.GOARCH == "amd64":
		return fmt.Sprintf("kernels: portable Go (built without cgo: SIMD kernels unavailable, much slower), %d threads", Threads())
	case Detected > LevelGeneric:
		return fmt.Sprintf("kernels: portable Go (lowered from %s by SetLevel: much slower), %d threads", Detected, Threads())
	}
	return fmt.Sprintf("kernels: portable Go (no AVX2+FMA on this CPU: much slower), %d threads", Threads())
}
