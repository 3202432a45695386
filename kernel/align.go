package kernel

import "unsafe"

// cacheLine is the alignment the SIMD kernels prefer for packed panels: a
// 64-byte aligned panel row never straddles two cache lines.
const cacheLine = 64

// alignPad is the extra float32s (or uint16 pairs) a buffer needs so that an
// aligned start can be found inside it.
const alignPad = cacheLine / 4

// alignF32 returns the largest 64-byte aligned suffix of s whose offset is
// below alignPad; callers size s with alignPad spare elements.
func alignF32(s []float32) []float32 {
	if len(s) == 0 {
		return s
	}
	off := (cacheLine - int(uintptr(unsafe.Pointer(&s[0]))%cacheLine)) % cacheLine / 4
	return s[off:]
}

// alignU16 is alignF32 for uint16 buffers (sized with 2*alignPad spare).
func alignU16(s []uint16) []uint16 {
	if len(s) == 0 {
		return s
	}
	off := (cacheLine - int(uintptr(unsafe.Pointer(&s[0]))%cacheLine)) % cacheLine / 2
	return s[off:]
}

// makeAlignedF32 allocates n float32s starting on a cache line.
func makeAlignedF32(n int) []float32 { return alignF32(make([]float32, n+alignPad))[:n] }

// makeAlignedU16 allocates n uint16s starting on a cache line.
func makeAlignedU16(n int) []uint16 { return alignU16(make([]uint16, n+2*alignPad))[:n] }
