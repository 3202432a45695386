package safetensors

import (
	"encoding/binary"
	"math"
	"unsafe"
)

// nativeLittle reports whether the host is little-endian, the byte order of
// safetensors data: only then can raw bytes be viewed as numbers in place.
var nativeLittle = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// f32View reinterprets b (length a multiple of 4) as float32s without copying
// when b is 4-byte aligned on a little-endian host; otherwise it decodes into
// a new slice.
func f32View(b []byte) []float32 {
	n := len(b) / 4
	if n == 0 {
		return []float32{}
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	if nativeLittle && uintptr(p)%unsafe.Alignof(float32(0)) == 0 {
		return unsafe.Slice((*float32)(p), n)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// u16View is f32View for 16-bit values.
func u16View(b []byte) []uint16 {
	n := len(b) / 2
	if n == 0 {
		return []uint16{}
	}
	p := unsafe.Pointer(unsafe.SliceData(b))
	if nativeLittle && uintptr(p)%unsafe.Alignof(uint16(0)) == 0 {
		return unsafe.Slice((*uint16)(p), n)
	}
	out := make([]uint16, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return out
}
