// Package tensor defines the element types moesys stores and moves (F32, BF16,
// F16, I32 and the other integer types of the safetensors format), lossless and
// round-to-nearest-even conversions between the 16-bit floats and float32, and
// shapes. It does no math beyond conversion: kernels live in package kernel.
//
//	bits := tensor.F32ToBF16(1.5)        // round to nearest even
//	f := tensor.BF16ToF32(bits)          // exact
//	n := tensor.Shape{4, 8}.NumElements() // 32
package tensor
