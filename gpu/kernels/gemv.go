package kernels

import (
	"fmt"

	"github.com/moesys/moesys/gpu/cuda"
)

// ExpertsGemv geometry, as in gemv.cu.
const (
	gemvWarps = 8 // warps per block
	gemvNR    = 4 // weight rows per warp
	// gemvSharedBytes bounds the staged x tile (M rows × KT float32): 32 KiB
	// leaves room for several blocks per multiprocessor.
	gemvSharedBytes = 32 << 10
	gemvMaxE        = maxGridYZ // experts per call (grid.y)
)

// gemvRowBuckets are the kernel variants' rows per pass (M).
var gemvRowBuckets = []int{1, 2, 4, 8, 16}

func gemvName(w, v string, m int) string { return fmt.Sprintf("gemv_%s_%s_m%d", w, v, m) }

// gemvGeom is ExpertsGemv's launch plan.
type gemvGeom struct {
	kernel string
	m, v   int // rows per pass, weights per lane and step
	kt     int // x columns staged per tile
	grid   cuda.Dim3
	shared int
}

// gemvPlan picks the variant and tile: M the smallest bucket ≥ maxRows
// (16 beyond), 16-byte weight loads when Kd keeps every row 16-byte
// aligned, and the widest x tile (a multiple of a warp's step) that fits
// gemvSharedBytes.
func gemvPlan(wt cuda.DataType, nE, maxRows, N, Kd int) gemvGeom {
	var g gemvGeom
	g.m = gemvRowBuckets[len(gemvRowBuckets)-1]
	for _, b := range gemvRowBuckets {
		if b >= maxRows {
			g.m = b
			break
		}
	}
	w, vec := "f32", 4
	if wt == cuda.BF16 {
		w, vec = "bf16", 8
	}
	g.v = 1
	vs := "s"
	if Kd%vec == 0 {
		g.v, vs = vec, "v"
	}
	step := 32 * g.v
	g.kt = min((Kd+step-1)/step*step, gemvSharedBytes/4/g.m/step*step)
	g.kernel = gemvName(w, vs, g.m)
	rowsPerBlock := gemvWarps * gemvNR
	g.grid = cuda.Dim3{X: (N + rowsPerBlock - 1) / rowsPerBlock, Y: nE}
	g.shared = g.m * g.kt * 4
	return g
}

// ExpertsGemv queues the grouped expert product for decode and small
// batches: for each expert i and each of its rows r in rowOff[i] ..
// rowOff[i+1]−1,
//
//	out[r] = x[r]·W_iᵀ + beta·out[r]     (beta = 0: out is only written)
//
// reading each weight once for all of the expert's rows (up to 16 per
// pass; an expert with more rows takes more passes, so give those to
// cuBLAS). float32 accumulation in a different order from the CPU's:
// expect relative differences around 1e-6·sqrt(Kd). With nE = 1 and rowOff
// = {0, T} it is the plain small-T GEMV (projections, router, LM head).
//
// Shapes: out (R, N) f32; x (R, Kd) Act; wptrs a device array of nE
// uint64 device addresses, each of an (N, Kd) row-major matrix of wt (F32
// or BF16), 16-byte aligned; rowOff (nE+1) int32 ascending; maxRows the
// most rows of any expert (it selects the kernel variant: rows beyond it
// are still computed, in extra passes). nE ≤ 65535.
func (k *Set) ExpertsGemv(s *cuda.Stream, out, x, wptrs cuda.DevPtr, wt cuda.DataType, rowOff cuda.DevPtr, nE, maxRows, N, Kd int, beta float32) error {
	const op = "ExpertsGemv"
	if err := checkDims(op, "nE", nE, "maxRows", maxRows, "N", N, "Kd", Kd); err != nil {
		return err
	}
	if err := checkType(op, "weight", wt, cuda.F32, cuda.BF16); err != nil {
		return err
	}
	if nE > gemvMaxE {
		return fmt.Errorf("kernels.%s: nE=%d experts exceed %d: %w", op, nE, gemvMaxE, ErrUnsupported)
	}
	if nE == 0 || maxRows == 0 || N == 0 {
		return nil
	}
	if Kd == 0 {
		return errorf(op, "Kd=0: an empty product (out = beta·out) is not a GEMV; scale out instead")
	}
	g := gemvPlan(wt, nE, maxRows, N, Kd)
	return k.launch(op, s, g.kernel, g.grid, cuda.Dim3{X: gemvWarps * 32}, g.shared,
		out, x, wptrs, rowOff, nE, N, Kd, g.kt, beta)
}
