package gpu

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/moesys/moesys/moe"
)

// moe adds the MoE block's output for h into x. Routing runs on the host,
// from the router logits copied back (one synchronisation per MoE layer),
// with moe.Router itself: the same experts and weights as the CPU path for
// the same logits, and the host knows which experts to acquire. The
// routed rows are laid out turn by turn in the order the experts are
// acquired (all at once for uploaded experts; in the source's turns
// otherwise), gathered, run through the grouped expert GEMV (cuBLAS per
// expert for larger batches) and combined in k order, as moe.Combine.
func (s *Session) moe(ctx context.Context, l int, gl *layer, T int) error {
	g, c, sc := s.g, s.g.Cfg, &s.sc
	b := g.b
	E, K := c.E, c.K
	TE := T * E
	logits := sc.router
	if gl.router.ok() {
		s.apply(gl.router, sc.router, sc.h, T, 0)
	} else {
		logits = sc.pregate[l]
	}
	s.run(b.Compute.CopyDtoH(sc.down[:4*TE], logits))
	pre, spec := -1, -1
	if gl.pregate.ok() {
		s.apply(gl.pregate, sc.pregate[gl.pregateTarget], sc.h, T, 0)
		if g.prefetch != nil {
			pre = gl.pregateTarget
			s.run(b.Compute.CopyDtoH(sc.down[4*TE:8*TE], sc.pregate[pre]))
		}
	}
	if g.speculate != nil && g.speculate[l] >= 0 {
		spec = g.speculate[l]
		s.apply(g.layers[spec].router, sc.spec, sc.h, T, 0)
		s.run(b.Compute.CopyDtoH(sc.down[8*TE:12*TE], sc.spec))
	}
	s.run(b.Compute.Sync())
	if s.err != nil {
		return fmt.Errorf("gpu: layer %d router: %w", l, s.err)
	}
	s.hostTE = growTo(s.hostTE, 3*TE)
	host := s.hostTE
	float32s(host, sc.down[:12*TE])
	routing := moe.Router{K: K, Normalize: c.NormTopK}.Route(host[:TE], T, E)
	if s.RecordRouting {
		s.Routing[l] = routing.IDsTK
	}
	plan := moe.NewPlan(routing, E, -1)
	active := sortedActive(&plan, make([]int, 0, E))
	var ahead func()
	if pre >= 0 || spec >= 0 {
		ahead = func() {
			if pre >= 0 {
				g.prefetch.Prefetch(ctx, pre, unionTopK(host[TE:2*TE], T, E, K, c.NormTopK))
			}
			if spec >= 0 {
				g.prefetch.Prefetch(ctx, spec, unionTopK(host[2*TE:], T, E, K, c.NormTopK))
			}
		}
	}
	s.slotRow = growTo(s.slotRow, T*K)
	t := turns{s: s, plan: &plan, T: T, slotRow: s.slotRow}
	for i := range t.slotRow {
		t.slotRow[i] = -1
	}
	if g.src == nil {
		mats := make([]expert, len(active))
		for i, e := range active {
			mats[i] = gl.experts[e]
		}
		if ahead != nil {
			ahead()
		}
		t.run(mats, active)
	} else if err := s.sourced(ctx, l, active, &t, ahead); err != nil {
		return err
	}
	// The combine: slot rows and weights after the turn area.
	R := T * K
	at := turnAreaBytes(R, E)
	rows := unsafeSlice[int32](sc.up[8*T+at:], R)
	copy(rows, t.slotRow)
	w := unsafeSlice[float32](sc.up[8*T+at+4*R:], R)
	copy(w, routing.WeightsTK)
	s.run(b.Compute.CopyHtoD(sc.plan.Add(int64(at)), sc.up[8*T+at:8*T+at+8*R]))
	s.run(b.K.Combine(b.Compute, sc.x, sc.out, sc.plan.Add(int64(at)), sc.plan.Add(int64(at+4*R)), T, K, c.D))
	if gl.shared != nil {
		s.apply(gl.sharedGate, sc.gate, sc.h, T, 0)
		s.ffn(gl.shared, sc.shared, T, 0)
		s.run(b.K.SigmoidGateAdd(b.Compute, sc.x, sc.shared, sc.gate, T, c.D))
	}
	return nil
}

// sourced runs the active experts of layer l in the source's turns: each
// turn acquires what the slots hold, runs it, waits for the device to be
// done with the slots and releases them.
func (s *Session) sourced(ctx context.Context, l int, active []int, t *turns, ahead func()) error {
	g := s.g
	if len(s.sc.srcW) < g.Cfg.E {
		s.sc.srcW = make([]moe.ExpertWeights, g.Cfg.E)
	}
	for len(active) > 0 {
		w := s.sc.srcW[:len(active)]
		var n int
		var err error
		if at, ok := g.src.(moe.AcquireThener); ok && ahead != nil {
			n, err = at.AcquireThen(ctx, l, active, w, ahead)
			ahead = nil
		} else {
			n, err = g.src.Acquire(ctx, l, active, w)
		}
		if err == nil && (n < 1 || n > len(active)) {
			err = fmt.Errorf("acquired %d of %d experts", n, len(active))
		}
		if err != nil {
			return fmt.Errorf("gpu: layer %d experts: %w", l, err)
		}
		mats := make([]expert, n)
		for i := range n {
			if mats[i], err = g.sourcedMats(l, active[i], &w[i]); err != nil {
				g.src.Release(w[:n])
				return err
			}
		}
		if ahead != nil {
			ahead()
			ahead = nil
		}
		t.run(mats, active[:n])
		// A released slot may be refilled at once: the device must be
		// done reading it first.
		s.run(g.b.Compute.Sync())
		g.src.Release(w[:n])
		if s.err != nil {
			return fmt.Errorf("gpu: layer %d experts: %w", l, s.err)
		}
		active = active[n:]
	}
	return nil
}

// turns lays a layer's routed rows out turn by turn.
type turns struct {
	s       *Session
	plan    *moe.Plan
	T       int
	done    int     // rows laid out by earlier turns
	slotRow []int32 // (T*K): the row of each assignment, in this layout
}

// turnAreaBytes is the plan area's turn part: source tokens (R int32),
// row offsets (E+1 int32) and weight pointers (3E u64), 8-byte aligned.
func turnAreaBytes(R, E int) int {
	n := 4*R + 4*(E+1)
	n = (n + 7) &^ 7
	return (n + 24*E + 255) &^ 255
}

// run gathers, computes and leaves in sc.out the rows of experts (with
// weights mats) after the rows of earlier turns.
func (t *turns) run(mats []expert, experts []int) {
	s, p := t.s, t.plan
	g, c, sc := s.g, s.g.Cfg, &s.sc
	b := g.b
	n, K, D, F, E := len(experts), c.K, c.D, c.ExpertFFN, c.E
	R := t.T * K
	base := t.done
	src := unsafeSlice[int32](sc.up[8*t.T:], R)
	offs := unsafeSlice[int32](sc.up[8*t.T+4*R:], n+1)
	ptrAt := (4*R + 4*(E+1) + 7) &^ 7
	ptrs := unsafeSlice[uint64](sc.up[8*t.T+ptrAt:], 3*n)
	j, maxRows := 0, 0
	for i, e := range experts {
		offs[i] = int32(j)
		r0, r1 := p.Offsets[e], p.Offsets[e+1]
		maxRows = max(maxRows, r1-r0)
		for r := r0; r < r1; r++ {
			slot := p.RowSlot[r]
			src[j] = slot / int32(K)
			t.slotRow[slot] = int32(base + j)
			j++
		}
		ptrs[i], ptrs[n+i], ptrs[2*n+i] = uint64(mats[i].gate.p), uint64(mats[i].up.p), uint64(mats[i].down.p)
	}
	offs[n] = int32(j)
	rows := j
	if rows == 0 {
		return
	}
	stage := sc.up[8*t.T:]
	s.run(b.Compute.CopyHtoD(sc.plan, stage[:4*rows]))
	s.run(b.Compute.CopyHtoD(sc.plan.Add(int64(4*R)), stage[4*R:4*R+4*(n+1)]))
	s.run(b.Compute.CopyHtoD(sc.plan.Add(int64(ptrAt)), stage[ptrAt:ptrAt+24*n]))
	act := int64(b.act.Size())
	routed := sc.routed.Add(int64(base*D) * act)
	gp, up := sc.g.Add(int64(base*F)*4), sc.u.Add(int64(base*F)*4)
	a := sc.a.Add(int64(base*F) * act)
	out := sc.out.Add(int64(base*D) * 4)
	s.run(b.K.Gather(b.Compute, routed, sc.h, sc.plan, rows, D))
	offsDev, ptrDev := sc.plan.Add(int64(4*R)), sc.plan.Add(int64(ptrAt))
	if maxRows <= gemvRows {
		s.run(b.K.ExpertsGemv(b.Compute, gp, routed, ptrDev, b.wt, offsDev, n, maxRows, F, D, 0))
		s.run(b.K.ExpertsGemv(b.Compute, up, routed, ptrDev.Add(int64(8*n)), b.wt, offsDev, n, maxRows, F, D, 0))
		s.run(b.K.SwiGLU(b.Compute, a, gp, up, rows, F))
		s.run(b.K.ExpertsGemv(b.Compute, out, a, ptrDev.Add(int64(16*n)), b.wt, offsDev, n, maxRows, D, F, 0))
	} else {
		for i := range n {
			r0, m := int64(offs[i]), int(offs[i+1]-offs[i])
			if m == 0 {
				continue
			}
			x := routed.Add(r0 * int64(D) * act)
			s.gemm(mats[i].gate.p, F, gp.Add(r0*int64(F)*4), x, m, D, 0)
			s.gemm(mats[i].up.p, F, up.Add(r0*int64(F)*4), x, m, D, 0)
		}
		s.run(b.K.SwiGLU(b.Compute, a, gp, up, rows, F))
		for i := range n {
			r0, m := int64(offs[i]), int(offs[i+1]-offs[i])
			if m == 0 {
				continue
			}
			s.gemm(mats[i].down.p, D, out.Add(r0*int64(D)*4), a.Add(r0*int64(F)*act), m, F, 0)
		}
	}
	t.done += rows
}

// unionTopK returns the experts any token's top K picks from logits (T, E).
func unionTopK(logits []float32, T, E, K int, norm bool) []int {
	ids := moe.Router{K: K, Normalize: norm}.Route(logits, T, E).IDsTK
	used := make([]bool, E)
	for _, e := range ids {
		used[e] = true
	}
	var out []int
	for e, u := range used {
		if u {
			out = append(out, e)
		}
	}
	return out
}

// growTo returns b with length n, reallocated only when it is too small.
func growTo[T any](b []T, n int) []T {
	if cap(b) < n {
		return make([]T, n)
	}
	return b[:n]
}

// unsafeSlice views the start of b as n values of T (b is pinned or Go
// memory, 8-byte aligned at the offsets used).
func unsafeSlice[T any](b []byte, n int) []T {
	if n == 0 {
		return nil
	}
	var z T
	if len(b) < n*int(unsafe.Sizeof(z)) {
		panic(fmt.Sprintf("gpu: staging of %d bytes for %d values of %d bytes", len(b), n, unsafe.Sizeof(z)))
	}
	return unsafe.Slice((*T)(unsafe.Pointer(&b[0])), n)
}
