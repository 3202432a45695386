package kernels

import "github.com/moesys/moesys/gpu/cuda"

// RoPE queues the rotary embedding of x in place, as kernel.RoPE (Hugging
// Face rotate_half; dims rotDim..Dh-1 pass through): float32 arithmetic on
// the same tables, so within an ulp or two of the CPU. Shapes: x (T, H,
// Dh) f32; pos (T) int32; cos, sin (maxPos, rotDim/2) f32 from
// kernel.RoPEFreqs. For keys pass the KV-head count as H. Every pos must
// be in [0, maxPos), which the kernel cannot check (a negative one leaves
// its row unrotated); RoPEChecked also skips rows at or past maxPos.
func (k *Set) RoPE(s *cuda.Stream, x, pos cuda.DevPtr, T, H, Dh, rotDim int, cos, sin cuda.DevPtr) error {
	return k.rope("RoPE", s, x, pos, T, H, Dh, rotDim, cos, sin, -1)
}

// RoPEChecked is RoPE with the tables' row count: rows whose position is
// outside [0, maxPos) are left unrotated instead of reading past the tables.
func (k *Set) RoPEChecked(s *cuda.Stream, x, pos cuda.DevPtr, T, H, Dh, rotDim int, cos, sin cuda.DevPtr, maxPos int) error {
	if maxPos < 0 {
		return errorf("RoPEChecked", "maxPos=%d < 0", maxPos)
	}
	return k.rope("RoPEChecked", s, x, pos, T, H, Dh, rotDim, cos, sin, maxPos)
}

func (k *Set) rope(op string, s *cuda.Stream, x, pos cuda.DevPtr, T, H, Dh, rotDim int, cos, sin cuda.DevPtr, maxPos int) error {
	if err := checkDims(op, "T", T, "H", H, "Dh", Dh, "rotDim", rotDim); err != nil {
		return err
	}
	if rotDim < 2 || rotDim%2 != 0 || rotDim > Dh {
		return errorf(op, "rotDim=%d Dh=%d: need rotDim even in [2, Dh]", rotDim, Dh)
	}
	n := int64(T) * int64(H) * int64(rotDim/2)
	if n == 0 {
		return nil
	}
	return k.launch(op, s, "rope", cuda.Dim3{X: flatGrid(n)}, cuda.Dim3{X: flatThreads}, 0, x, pos, T, H, Dh, rotDim, cos, sin, maxPos)
}
