package kernel

import "fmt"

// GroupedGemm runs one GEMM per expert over contiguous row groups: for group
// e, rows offs[e] <= r < offs[e+1] of A (R x K, row-major) and C (R x N):
//
//	C[rows] = alpha * A[rows] * op(B_e) + beta * C[rows]
//
// where B_e starts at b[e*strideB] and op(B_e) is K x N (stored N x K, the
// Hugging Face expert layout, if transB). len(offs) = E+1, offs non-decreasing
// from offs[0] = 0; empty groups cost nothing. Groups run in parallel when
// there are enough of them, else each group's GEMM is parallel. It does not
// allocate beyond the pool's dispatch.
func GroupedGemm(transB bool, offs []int, N, K int, alpha float32, a []float32, b []float32, strideB int, beta float32, c []float32) {
	checkGrouped("GroupedGemm", offs, N, K, len(a), len(c), len(b), strideB, transB)
	ldb := N
	if transB {
		ldb = K
	}
	grouped(offs, func(e, r0, r1 int) {
		Gemm(false, transB, r1-r0, N, K, alpha, a[r0*K:r1*K], K, b[e*strideB:], ldb, beta, c[r0*N:r1*N], N)
	})
}

// GroupedGemmBF16 is GroupedGemm with bf16 expert weights.
func GroupedGemmBF16(mode BF16Mode, transB bool, offs []int, N, K int, alpha float32, a []float32, b []uint16, strideB int, beta float32, c []float32) {
	checkGrouped("GroupedGemmBF16", offs, N, K, len(a), len(c), len(b), strideB, transB)
	ldb := N
	if transB {
		ldb = K
	}
	grouped(offs, func(e, r0, r1 int) {
		GemmBF16(mode, false, transB, r1-r0, N, K, alpha, a[r0*K:r1*K], K, b[e*strideB:], ldb, beta, c[r0*N:r1*N], N)
	})
}

// GroupedGemmPacked is GroupedGemm with each expert's weights pre-packed:
// bs[e] is op(B_e), K x N, the same K and N for all experts.
func GroupedGemmPacked(offs []int, alpha float32, a []float32, bs []*PackedB, beta float32, c []float32) {
	if len(bs) != len(offs)-1 || len(bs) == 0 {
		panic(fmt.Sprintf("kernel.GroupedGemmPacked: %d packed experts for %d offsets", len(bs), len(offs)))
	}
	N, K := bs[0].N, bs[0].K
	checkGrouped("GroupedGemmPacked", offs, N, K, len(a), len(c), 0, 0, false)
	for e, b := range bs { // before dispatch: a panic on a worker would kill the process
		if b.N != N || b.K != K {
			panic(fmt.Sprintf("kernel.GroupedGemmPacked: expert %d is %dx%d, expert 0 %dx%d", e, b.K, b.N, K, N))
		}
	}
	grouped(offs, func(e, r0, r1 int) {
		GemmPacked(false, r1-r0, alpha, a[r0*K:r1*K], K, bs[e], beta, c[r0*N:r1*N], N)
	})
}

// GroupedGemmWeightGrad accumulates per-expert weight gradients: for group e,
//
//	dB_e (N x K) = alpha * dC[rows]^T (N x R_e) * A[rows] (R_e x K) + beta * dB_e
//
// with dC (R x N) and A (R x K); dB_e starts at db[e*strideB] — the
// Hugging Face (out, in) layout, the gradient of GroupedGemm with transB.
// Groups with no rows are scaled by beta only.
func GroupedGemmWeightGrad(offs []int, N, K int, alpha float32, dc []float32, a []float32, beta float32, db []float32, strideB int) {
	checkGrouped("GroupedGemmWeightGrad", offs, N, K, len(a), len(dc), len(db), strideB, true)
	E := len(offs) - 1
	grouped(offs, func(e, r0, r1 int) {
		Gemm(true, false, N, K, r1-r0, alpha, dc[r0*N:r1*N], N, a[r0*K:r1*K], K, beta, db[e*strideB:e*strideB+N*K], K)
	})
	if beta != 1 {
		for e := 0; e < E; e++ {
			if offs[e] == offs[e+1] {
				g := db[e*strideB : e*strideB+N*K]
				if beta == 0 {
					clear(g)
				} else {
					for i := range g {
						g[i] *= beta
					}
				}
			}
		}
	}
}

// grouped calls f(e, r0, r1) for every non-empty group, in parallel across
// groups when there are at least two per thread (each GEMM then runs on one
// thread: nested pool calls run inline), largest groups first.
func grouped(offs []int, f func(e, r0, r1 int)) {
	E := len(offs) - 1
	var order [256]int // group ids by size; E <= 256 keeps it on the stack
	var ids []int
	if E <= len(order) {
		ids = order[:0]
	} else {
		ids = make([]int, 0, E)
	}
	for e := 0; e < E; e++ {
		if offs[e+1] > offs[e] {
			ids = append(ids, e)
		}
	}
	threads := Threads()
	if len(ids) < 2*threads {
		for _, e := range ids {
			f(e, offs[e], offs[e+1])
		}
		return
	}
	// Insertion sort by size, largest first (no allocation; E is small).
	size := func(e int) int { return offs[e+1] - offs[e] }
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && size(ids[j]) > size(ids[j-1]); j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
	parallel(threads, func(p int) {
		for i := p; i < len(ids); i += threads {
			e := ids[i]
			f(e, offs[e], offs[e+1])
		}
	})
}

func checkGrouped(op string, offs []int, N, K, la, lc, lb, strideB int, transB bool) {
	E := len(offs) - 1
	bad := E < 1 || offs[0] != 0 || N < 0 || K < 0
	for e := 0; !bad && e < E; e++ {
		bad = offs[e+1] < offs[e]
	}
	if !bad {
		R := offs[E]
		bad = la < R*K || lc < R*N
		if strideB > 0 || lb > 0 {
			bad = bad || strideB < N*K || lb < (E-1)*strideB+N*K
		}
	}
	if bad {
		panic(fmt.Sprintf("kernel.%s: bad shapes offs=%v N=%d K=%d len(a)=%d len(c)=%d len(b)=%d strideB=%d transB=%v",
			op, offs, N, K, la, lc, lb, strideB, transB))
	}
}
