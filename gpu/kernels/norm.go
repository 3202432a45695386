package kernels

import "github.com/moesys/moesys/gpu/cuda"

// RMSNorm queues out = x·rstd·w per row, rstd = 1/sqrt(mean(x²)+eps), as
// kernel.RMSNorm (float32 sums: within a few ulp of it). Shapes: x (rows,
// dim) f32; w (dim) f32; out (rows, dim) of outT, F32 or the Set's Act.
// out may equal x when outT is F32. For Qwen3's per-head q/k norm pass
// the (T·H, Dh) view.
func (k *Set) RMSNorm(s *cuda.Stream, out cuda.DevPtr, outT cuda.DataType, x, w cuda.DevPtr, rows, dim int, eps float32) error {
	const op = "RMSNorm"
	if err := checkDims(op, "rows", rows, "dim", dim); err != nil {
		return err
	}
	if err := checkType(op, "output", outT, cuda.F32, k.act); err != nil {
		return err
	}
	if out == x && outT != cuda.F32 {
		return errorf(op, "out may alias x only for an f32 output; outT is %v", outT)
	}
	if rows == 0 || dim == 0 {
		return nil
	}
	name := "rmsnorm_f32"
	if outT != cuda.F32 {
		name = "rmsnorm_act"
	}
	return k.launch(op, s, name, cuda.Dim3{X: rows}, cuda.Dim3{X: rowBlock(dim)}, 0, out, x, w, rows, dim, eps)
}
