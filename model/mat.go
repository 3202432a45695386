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
}

// Apply computes y (T x Rows) = x (T x Cols) * M^T + beta*y. bf16 weights are
// widened exactly (f32 products), so results match an f32 reference. One
// token uses the GEMV kernel, more use the GEMM. It does not allocate.
func (m *Mat) Apply(y, x []float32, T int, beta float32) {
	switch {
	case T == 1 && m.BF16 != nil:
		kernel.GemvBF16(y, m.BF16, m.Cols, x, m.Rows, m.Cols, 1, beta)
	case T == 1:
		kernel.Gemv(y, m.F32, m.Cols, x, m.Rows, m.Cols, 1, beta)
	case m.BF16 != nil:
		kernel.GemmBF16(kernel.BF16Exact, false, true, T, m.Rows, m.Cols, 1, x, m.Cols, m.BF16, m.Cols, beta, y, m.Rows)
	default:
		kernel.Gemm(false, true, T, m.Rows, m.Cols, 1, x, m.Cols, m.F32, m.Cols, beta, y, m.Rows)
	}
}

// Bytes returns the weight bytes.
func (m *Mat) Bytes() int { return 4*len(m.F32) + 2*len(m.BF16) }

func (m *Mat) String() string {
	dt := "f32"
	if m.BF16 != nil {
		dt = "bf16"
	}
	return fmt.Sprintf("%dx%d %s", m.Rows, m.Cols, dt)
}
