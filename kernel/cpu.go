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
	// LevelAVX2 is detected on x86 CPUs with AVX2+FMA; it currently runs the
	// portable kernels (an AVX2 micro-kernel is future work).
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
	case x.HasAVX2 && x.HasFMA:
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

// useNative reports whether the C AVX-512 kernels run.
func useNative() bool { return level >= LevelAVX512 }

// Note describes, in one line, what the kernels run on and what is missing.
func Note() string {
	switch {
	case level >= LevelAVX512BF16:
		return fmt.Sprintf("kernels: %s, %d threads", level, Threads())
	case level == LevelAVX512:
		return fmt.Sprintf("kernels: %s (no AVX512_BF16: bf16-dot GEMM widens to f32), %d threads", level, Threads())
	case !nativeAvailable && runtime.GOARCH == "amd64":
		return fmt.Sprintf("kernels: portable Go (built without cgo: SIMD kernels unavailable, much slower), %d threads", Threads())
	}
	return fmt.Sprintf("kernels: portable Go (CPU %s lacks AVX-512: much slower), %d threads", Detected, Threads())
}
