package tensor

import "math"

// BF16ToF32 widens a bfloat16 bit pattern to float32; exact.
func BF16ToF32(b uint16) float32 {
	return math.Float32frombits(uint32(b) << 16)
}

// F32ToBF16 rounds f to the nearest bfloat16, ties to even. NaN stays NaN
// (quiet), infinities and signed zeros are kept.
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 { // NaN: keep sign, force a quiet mantissa bit
		return uint16(u>>16) | 0x0040
	}
	// Add 0x7fff plus the lowest kept bit: rounds to nearest, ties to even.
	// Overflow past the largest finite value carries into the exponent and
	// yields infinity, as IEEE rounding requires.
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// F16ToF32 widens an IEEE 754 half-precision bit pattern to float32; exact,
// including subnormals, infinities and NaN payloads.
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0: // signed zero
		return math.Float32frombits(sign)
	}
	// Subnormal half: value = man * 2^-24; normalise into a float32.
	e := uint32(113) // exponent of 2^-14 in float32 bias, minus one shift below
	for man&0x400 == 0 {
		man <<= 1
		e--
	}
	man &= 0x3ff
	return math.Float32frombits(sign | e<<23 | man<<13)
}

// F32ToF16 rounds f to the nearest IEEE half, ties to even; values beyond the
// half range become infinity, tiny values become subnormals or zero, NaN stays NaN.
func F32ToF16(f float32) uint16 {
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	exp := int32(u>>23) & 0xff
	man := u & 0x7fffff
	if exp == 0xff { // Inf or NaN
		if man != 0 {
			return sign | 0x7e00 | uint16(man>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15 // rebias
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal or zero: shift the full significand (with hidden bit) right.
		if e < -10 {
			return sign
		}
		m := man | 0x800000
		shift := uint32(14 - e) // 24-bit significand down to 10 bits, plus the extra exponent gap
		half := uint32(1) << (shift - 1)
		rem := m & (1<<shift - 1)
		r := m >> shift
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, and to infinity: both correct
	}
	return sign | uint16(r)
}

// BF16SliceToF32 widens src into dst; len(dst) must be >= len(src).
func BF16SliceToF32(dst []float32, src []uint16) {
	_ = dst[len(src)-1:]
	for i, b := range src {
		dst[i] = math.Float32frombits(uint32(b) << 16)
	}
}

// F32SliceToBF16 rounds src into dst; len(dst) must be >= len(src).
func F32SliceToBF16(dst []uint16, src []float32) {
	_ = dst[len(src)-1:]
	for i, f := range src {
		dst[i] = F32ToBF16(f)
	}
}

// F16SliceToF32 widens src into dst; len(dst) must be >= len(src).
func F16SliceToF32(dst []float32, src []uint16) {
	_ = dst[len(src)-1:]
	for i, h := range src {
		dst[i] = F16ToF32(h)
	}
}

// F32SliceToF16 rounds src into dst; len(dst) must be >= len(src).
func F32SliceToF16(dst []uint16, src []float32) {
	_ = dst[len(src)-1:]
	for i, f := range src {
		dst[i] = F32ToF16(f)
	}
}
