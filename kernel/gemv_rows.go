package kernel

import "fmt"

// PackedGemv is one product of GemvPackedJobs: for each of M rows r,
//
//	Y[r*LdY : r*LdY+N] = Alpha * X[r*LdX : r*LdX+K] * B + Beta * Y[r*LdY : r*LdY+N]
//
// for B (K x N) packed by PackB or PackBF16.
type PackedGemv struct {
	B           *PackedB
	X, Y        []float32
	LdX, LdY    int
	M           int
	Alpha, Beta float32
}

// GemvPackedRows computes M rows of GemvPacked at once: row r of y (at
// y[r*ldy:]) = alpha * row r of x (at x[r*ldx:]) * B + beta * that row of y.
// Each row's result is bit-identical to GemvPacked on that row alone (the
// same accumulators in the same order), so batching decode rows does not
// change any sequence's numbers; each weight panel is read once for all the
// rows. Panels are split over the pool as in GemvPacked.
func GemvPackedRows(y []float32, ldy int, b *PackedB, x []float32, ldx, M int, alpha, beta float32) {
	GemvPackedJobs([]PackedGemv{{B: b, X: x, Y: y, LdX: ldx, LdY: ldy, M: M, Alpha: alpha, Beta: beta}})
}

// GemvPackedJobs runs several GemvPackedRows products as one parallel call:
// the panels of all of them are split over the pool by work (rows x depth),
// not by product, so products of different sizes (the Q, K and V
// projections; the experts of a MoE layer with their 1 to 8 rows each)
// share the threads evenly with one fork and join. Each row's result is
// bit-identical to GemvPacked on it alone. The products must not write
// what another reads. It allocates one small closure when it runs in
// parallel.
func GemvPackedJobs(jobs []PackedGemv) {
	var total int64 // work in units of K x (rows + 1) per panel
	weights, panels := 0, 0
	for i := range jobs {
		j := &jobs[i]
		if c := checkPackedGemv(j); c > 0 {
			n := (j.B.N + nr - 1) / nr
			total += c * int64(n)
			weights += j.B.N * j.B.K
			panels += n
		}
	}
	if total == 0 {
		return
	}
	parts := 1
	if weights >= minParallelGemv {
		parts = min(Threads(), panels)
	}
	run := func(p int) {
		lo, hi := total*int64(p)/int64(parts), total*int64(p+1)/int64(parts)
		var at int64 // work before job i
		for i := range jobs {
			j := &jobs[i]
			c := jobCost(j)
			if c == 0 {
				continue
			}
			n := (j.B.N + nr - 1) / nr
			// Panel q belongs to the part whose range holds its start at+q*c.
			if q0, q1 := firstPanel(lo-at, c, n), firstPanel(hi-at, c, n); q0 < q1 {
				gemvPackedPanels(j, q0, q1)
			}
			at += c * int64(n)
		}
	}
	if parts == 1 {
		run(0)
		return
	}
	parallel(parts, run)
}

// firstPanel returns the first of n panels, each c work, whose start is at
// or past w.
func firstPanel(w, c int64, n int) int {
	if w <= 0 {
		return 0
	}
	return int(min((w+c-1)/c, int64(n)))
}

// jobCost is a job's work per panel (0: nothing to multiply).
func jobCost(j *PackedGemv) int64 {
	if j.M == 0 || j.B.N == 0 || j.B.K == 0 || j.Alpha == 0 {
		return 0
	}
	return int64(j.B.K) * int64(j.M+1)
}

// checkPackedGemv panics on bad shapes, scales Y by Beta for a job with no
// product (K or Alpha zero), and returns the job's work per panel.
func checkPackedGemv(j *PackedGemv) int64 {
	b := j.B
	if b == nil || j.M < 0 {
		panic(fmt.Sprintf("kernel.GemvPackedJobs: B %v, M=%d", b, j.M))
	}
	N, K := b.N, b.K
	if j.M > 0 && (len(j.X) < need(j.M, K, j.LdX) || len(j.Y) < need(j.M, N, j.LdY) || (j.M > 1 && (j.LdX < K || j.LdY < N))) {
		panic(fmt.Sprintf("kernel.GemvPackedJobs: M=%d len(x)=%d ldx=%d len(y)=%d ldy=%d for %dx%d", j.M, len(j.X), j.LdX, len(j.Y), j.LdY, K, N))
	}
	if (b.lvl >= LevelAVX2) != useNative() || (b.kind == bkBF16Dot && level < LevelAVX512BF16) {
		panic(fmt.Sprintf("kernel.GemvPackedJobs: B was packed at level %s, kernels run at %s", b.lvl, level))
	}
	c := jobCost(j)
	if c == 0 && j.M > 0 && N > 0 {
		scaleC(j.M, N, j.Beta, j.Y, max(j.LdY, N))
	}
	return c
}

// gemvPackedPanels computes panels [q0, q1) of a job's rows on the current
// thread, with GemvPacked's per-panel kernels (so bit for bit the same).
func gemvPackedPanels(j *PackedGemv, q0, q1 int) {
	b := j.B
	N, K := b.N, b.K
	j0, j1 := q0*nr, min(N, q1*nr)
	switch {
	case b.kind == bkBF16Dot:
		nativeGemvPackedRows(j.Y, j.LdY, ptr(b.u16), bkBF16Dot, N, K, j.X, j.LdX, j.M, q0, q1, j.Alpha, j.Beta)
	case useAVX512():
		nativeGemvPackedRows(j.Y, j.LdY, ptr(b.f32), bkF32, N, K, j.X, j.LdX, j.M, q0, q1, j.Alpha, j.Beta)
	case useNative(): // AVX2: GemvPacked's Go loop, row by row
		for r := 0; r < j.M; r++ {
			y := j.Y[r*j.LdY:]
			gemvPackedGo(y[j0:j1], b.f32[q0*K*nr:], j1-j0, K, j.X[r*j.LdX:], j.Alpha, j.Beta)
		}
	default: // portable layout: B^T row-major (N, K), column by column
		for r := 0; r < j.M; r++ {
			gemvRows(j.Y[r*j.LdY:], b.f32, nil, K, j.X[r*j.LdX:], j0, j1, K, j.Alpha, j.Beta)
		}
	}
}
