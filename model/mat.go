package model

import (
	"fmt"

	"github.com/moesys/moesys/kernel"
)

// Mat is a weight matrix in the Hugging Face Linear layout: Rows = outputs,
// Cols = inputs, row-major, held as F32 or BF16 (exactly one is set). Views
// of a mapped checkpoint stay valid while its Model is open.
type Mat struct {
	Rows, Cols int
	F32        []float32
	BF16       []uint16
	// Mode is how multi-token products treat bf16 weights (set by
	// Model.SetPrecision); single tokens always widen exactly.
	Mode kernel.BF16Mode
	// Packed, when set (Model.MakeResident with packing), replaces F32/BF16:
	// the weights in the kernels' panel layout, so no product packs them.
	Packed *kernel.PackedB
}

// Apply computes y (T x Rows) = x (T x Cols) * M^T + beta*y. One token uses
// the GEMV kernel (bf16 weights widened exactly: it is bandwidth-bound
// anyway); more use the GEMM in the Mat's Mode. It does not allocate on one
// thread.
func (m *Mat) Apply(y, x []float32, T int, beta float32) {
	switch {
	case m.Packed != nil && T == 1:
		kernel.GemvPacked(y, m.Packed, x, 1, beta)
	case m.Packed != nil:
		kernel.GemmPacked(false, T, 1, x, m.Cols, m.Packed, beta, y, m.Rows)
	case T == 1 && m.BF16 != nil:
		kernel.GemvBF16(y, m.BF16, m.Cols, x, m.Rows, m.Cols, 1, beta)
	case T == 1:
		kernel.Gemv(y, m.F32, m.Cols, x, m.Rows, m.Cols, 1, beta)
	case m.BF16 != nil:
		kernel.GemmBF16(m.Mode, false, true, T, m.Rows, m.Cols, 1, x, m.Cols, m.BF16, m.Cols, beta, y, m.Rows)
	default:
		kernel.Gemm(false, true, T, m.Rows, m.Cols, 1, x, m.Cols, m.F32, m.Cols, beta, y, m.Rows)
	}
}

// Bytes returns the weight bytes.
func (m *Mat) Bytes() int {
	if m.Packed != nil {
		return m.Packed.Bytes()
	}
	return 4*len(m.F32) + 2*len(m.BF16)
}

func (m *Mat) String() string {
	dt := "f32"
	if m.BF16 != nil {
		dt = "bf16"
	}
	return fmt.Sprintf("%dx%d %s", m.Rows, m.Cols, dt)
}
