package gpu

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/moesys/moesys/gpu/cuda"
	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/moe"
)

// Session is one sequence on the device: its KV cache (MaxT positions per
// layer, in the compute type), the RoPE tables and the pass's scratch.
// Forward appends tokens, as model.Session.Forward does. Not safe for
// concurrent use; sessions share the Model's weights.
type Session struct {
	g    *Model
	MaxT int
	Pos  int

	// RecordRouting keeps each MoE layer's expert ids of the last pass,
	// (T, K), in Routing[l].
	RecordRouting bool
	Routing       [][]int32

	kv       cuda.DevPtr   // every layer's K and V caches
	kc, vc   []cuda.DevPtr // per layer (MaxT, G*Dh)
	cos, sin cuda.DevPtr   // (MaxT, RotaryDim/2) f32
	sc       scratch
	err      error // the first launch error of the pass

	// Host buffers of a MoE layer, reused: the logits copied back (router,
	// pre-gate target, speculation) and each assignment's routed row.
	hostTE  []float32
	slotRow []int32
}

// scratch is a pass's device buffers for up to T rows, and its pinned host
// staging for uploads (token ids, positions, each MoE layer's plan) and
// downloads (routing logits, logits).
type scratch struct {
	T   int
	mem cuda.DevPtr

	x, q, k, v, logits, router, spec, g, u, out, shared, gate cuda.DevPtr   // f32
	cast                                                      cuda.DevPtr   // bf16 copy of a cuBLAS product's input
	h, att, a, routed                                         cuda.DevPtr   // compute type
	pregate                                                   []cuda.DevPtr // per target layer (T, E) f32
	ids, pos                                                  cuda.DevPtr   // int32 (T)
	plan                                                      cuda.DevPtr   // a MoE turn's arrays, then the combine's

	up, down             []byte // pinned staging: uploads, downloads
	upPinned, downPinned bool

	srcW []moe.ExpertWeights
}

// NewSession allocates a KV cache of maxT positions on the device.
func (g *Model) NewSession(maxT int) (*Session, error) {
	c := g.Cfg
	if maxT < 1 {
		return nil, fmt.Errorf("gpu: session of %d positions", maxT)
	}
	kd := int64(c.G * c.Dh)
	per := int64(maxT) * kd * int64(g.b.act.Size())
	s := &Session{g: g, MaxT: maxT, Routing: make([][]int32, c.L), kc: make([]cuda.DevPtr, c.L), vc: make([]cuda.DevPtr, c.L)}
	half := c.RotaryDim / 2
	tables := int64(maxT * half * 4)
	var err error
	if s.kv, err = g.b.Malloc(2*int64(c.L)*per + 2*tables); err != nil {
		return nil, fmt.Errorf("gpu: KV cache of %d positions: %w", maxT, err)
	}
	for l := range c.L {
		s.kc[l] = s.kv.Add(int64(2*l) * per)
		s.vc[l] = s.kv.Add(int64(2*l+1) * per)
	}
	s.cos = s.kv.Add(2 * int64(c.L) * per)
	s.sin = s.cos.Add(tables)
	cos, sin := make([]float32, maxT*half), make([]float32, maxT*half)
	kernel.RoPEFreqs(cos, sin, maxT, c.RotaryDim, c.RopeTheta)
	if err = g.b.Compute.CopyHtoD(s.cos, asBytes(cos)); err == nil {
		err = g.b.Compute.CopyHtoD(s.sin, asBytes(sin))
	}
	if err == nil {
		err = g.b.Compute.Sync()
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Reset empties the cache.
func (s *Session) Reset() { s.Pos = 0 }

// Close frees the session's device and pinned memory.
func (s *Session) Close() error {
	b := s.g.b
	err := b.Free(s.kv)
	s.kv = 0
	if ferr := s.freeScratch(); err == nil {
		err = ferr
	}
	return err
}

func (s *Session) freeScratch() error {
	b, sc := s.g.b, &s.sc
	err := b.Free(sc.mem)
	if sc.up != nil {
		if ferr := b.HostFree(sc.up, sc.upPinned); err == nil {
			err = ferr
		}
	}
	if sc.down != nil {
		if ferr := b.HostFree(sc.down, sc.downPinned); err == nil {
			err = ferr
		}
	}
	s.sc = scratch{}
	return err
}

// grow sizes the scratch for T rows.
func (s *Session) grow(T int) error {
	if s.sc.T >= T {
		return nil
	}
	if err := s.freeScratch(); err != nil {
		return err
	}
	g, c := s.g, s.g.Cfg
	act := int64(g.b.act.Size())
	R := int64(T * max(c.K, 1))
	F := int64(max(c.ExpertFFN, c.DenseFFN, c.SharedFFN))
	D, qd, kd, E, TT := int64(c.D), int64(c.H*c.Dh), int64(c.G*c.Dh), int64(max(c.E, 1)), int64(T)
	targets := 0
	for l := range g.layers {
		if g.layers[l].pregate.ok() {
			targets++
		}
	}
	planBytes := int64(turnAreaBytes(int(R), int(E))) + 8*R
	sizes := []int64{
		4 * TT * D, 4 * TT * qd, 4 * TT * kd, 4 * TT * kd, 4 * TT * int64(c.V), 4 * TT * E, 4 * TT * E, // x q k v logits router spec
		4 * R * F, 4 * R * F, 4 * R * D, 4 * TT * D, 4 * TT, // g u out shared gate
		act * TT * D, act * TT * qd, act * R * F, act * R * D, // h att a routed
		4 * TT, 4 * TT, planBytes, // ids pos plan
		2 * max(R*max(F, D), TT*max(D, qd)), // cast
	}
	for range targets {
		sizes = append(sizes, 4*TT*E)
	}
	total := int64(0)
	for _, n := range sizes {
		total += (n + arenaAlign - 1) / arenaAlign * arenaAlign
	}
	mem, err := g.b.Malloc(total)
	if err != nil {
		return fmt.Errorf("gpu: scratch for %d rows: %w", T, err)
	}
	sc := &s.sc
	sc.mem, sc.T = mem, T
	at := int64(0)
	next := func(i int) cuda.DevPtr {
		p := mem.Add(at)
		at += (sizes[i] + arenaAlign - 1) / arenaAlign * arenaAlign
		return p
	}
	ptrs := []*cuda.DevPtr{&sc.x, &sc.q, &sc.k, &sc.v, &sc.logits, &sc.router, &sc.spec, &sc.g, &sc.u, &sc.out, &sc.shared, &sc.gate,
		&sc.h, &sc.att, &sc.a, &sc.routed, &sc.ids, &sc.pos, &sc.plan, &sc.cast}
	for i, p := range ptrs {
		*p = next(i)
	}
	sc.pregate = make([]cuda.DevPtr, c.L)
	i := len(ptrs)
	for l := range g.layers {
		if t := g.layers[l].pregateTarget; g.layers[l].pregate.ok() {
			sc.pregate[t] = next(i)
			i++
		}
	}
	if sc.up, sc.upPinned, err = g.b.HostAlloc(int(8*TT + planBytes)); err != nil {
		return err
	}
	if sc.down, sc.downPinned, err = g.b.HostAlloc(int(4*TT*int64(c.V) + 3*4*TT*E)); err != nil {
		return err
	}
	return nil
}

// run records the first error of a pass's launches.
func (s *Session) run(err error) {
	if err != nil && s.err == nil {
		s.err = err
	}
}

// apply launches y (T, m.rows) f32 = x (T, m.cols) * m^T + beta*y: the
// kernels' GEMV for a few rows, cuBLAS for more.
func (s *Session) apply(m mat, y, x cuda.DevPtr, T int, beta float32) {
	b := s.g.b
	if T <= gemvRows && m.cell != 0 {
		s.run(b.K.ExpertsGemv(b.Compute, y, x, m.cell, b.wt, s.g.rowOff.Add(int64(8*T)), 1, T, m.rows, m.cols, beta))
		return
	}
	s.gemm(m.p, m.rows, y, x, T, m.cols, beta)
}

// gemm launches y (T, N) f32 = x (T, K) * W^T + beta*y through cuBLAS, W
// (N, K) in the weight type at w; x, in the activation type, is first
// copied to the weight type when they differ (cuBLAS multiplies equal
// types).
func (s *Session) gemm(w cuda.DevPtr, N int, y, x cuda.DevPtr, T, K int, beta float32) {
	b := s.g.b
	if b.act != b.wt {
		s.run(b.K.Cast(b.Compute, s.sc.cast, b.wt, x, b.act, T*K))
		x = s.sc.cast
	}
	s.run(b.Blas.Gemm(b.Compute, true, false, N, T, K, 1, w, b.wt, K, x, b.wt, K, beta, y, cuda.F32, N))
}

// Forward runs tokens at the session's next positions and returns their
// logits (T, V), as model.Session.Forward.
func (s *Session) Forward(tokens []int32) ([]float32, error) {
	return s.ForwardContext(context.Background(), tokens)
}

// ForwardContext is Forward with a context for the expert source. On error
// the position does not advance.
func (s *Session) ForwardContext(ctx context.Context, tokens []int32) ([]float32, error) {
	g, c := s.g, s.g.Cfg
	b := g.b
	T := len(tokens)
	if T == 0 {
		return nil, nil
	}
	if g.src == nil && g.layers != nil && c.E > 0 && !g.hasExperts() {
		return nil, fmt.Errorf("gpu: the routed experts were not uploaded (model.LoadOffloaded) and no ExpertSource is set")
	}
	if s.Pos+T > s.MaxT {
		return nil, fmt.Errorf("gpu: %d positions exceed the session's cache of %d", s.Pos+T, s.MaxT)
	}
	for j, id := range tokens {
		if id < 0 || int(id) >= c.V {
			return nil, fmt.Errorf("gpu: token %d (position %d) outside the vocabulary [0, %d)", id, s.Pos+j, c.V)
		}
	}
	if err := s.grow(T); err != nil {
		return nil, err
	}
	s.err = nil
	sc := &s.sc
	// Token ids and positions, staged in pinned memory (the last pass
	// ended with a synchronisation, so the staging is free).
	ids := unsafeSlice[int32](sc.up, 2*T)
	copy(ids, tokens)
	for t := range T {
		ids[T+t] = int32(s.Pos + t)
	}
	s.run(b.Compute.CopyHtoD(sc.ids, asBytes(ids[:T])))
	s.run(b.Compute.CopyHtoD(sc.pos, asBytes(ids[T:])))
	s.run(b.K.Embed(b.Compute, sc.x, g.embed.p, b.wt, sc.ids, T, c.D))
	eps := float32(c.NormEps)
	for l := range g.layers {
		if err := ctx.Err(); err != nil {
			b.Compute.Sync()
			return nil, err
		}
		gl := &g.layers[l]
		s.run(b.K.RMSNorm(b.Compute, sc.h, b.act, sc.x, gl.inNorm, T, c.D, eps))
		s.attention(l, gl, T)
		s.run(b.K.RMSNorm(b.Compute, sc.h, b.act, sc.x, gl.postNorm, T, c.D, eps))
		if gl.moe {
			if err := s.moe(ctx, l, gl, T); err != nil {
				b.Compute.Sync()
				return nil, err
			}
		} else {
			s.Routing[l] = nil
			s.ffn(gl.dense, sc.x, T, 1)
		}
		if s.err != nil {
			b.Compute.Sync()
			return nil, fmt.Errorf("gpu: layer %d: %w", l, s.err)
		}
	}
	s.run(b.K.RMSNorm(b.Compute, sc.h, b.act, sc.x, g.norm, T, c.D, eps))
	s.apply(g.head, sc.logits, sc.h, T, 0)
	n := T * c.V
	s.run(b.Compute.CopyDtoH(sc.down[:4*n], sc.logits))
	s.run(b.Compute.Sync())
	if s.err != nil {
		return nil, fmt.Errorf("gpu: %w", s.err)
	}
	out := make([]float32, n)
	float32s(out, sc.down[:4*n])
	s.Pos += T
	return out, nil
}

func (g *Model) hasExperts() bool {
	for l := range g.layers {
		if g.layers[l].moe {
			return g.layers[l].experts != nil
		}
	}
	return true
}

// attention adds the attention block's output for h into x.
func (s *Session) attention(l int, gl *layer, T int) {
	g, c, sc := s.g, s.g.Cfg, &s.sc
	b := g.b
	qd, kd := c.H*c.Dh, c.G*c.Dh
	s.apply(gl.q, sc.q, sc.h, T, 0)
	s.apply(gl.k, sc.k, sc.h, T, 0)
	s.apply(gl.v, sc.v, sc.h, T, 0)
	if gl.qb != 0 {
		s.run(b.K.AddBias(b.Compute, sc.q, gl.qb, T, qd))
		s.run(b.K.AddBias(b.Compute, sc.k, gl.kb, T, kd))
		s.run(b.K.AddBias(b.Compute, sc.v, gl.vb, T, kd))
	}
	eps := float32(c.NormEps)
	switch c.QKNorm {
	case model.QKNormPerHead:
		s.run(b.K.RMSNorm(b.Compute, sc.q, cuda.F32, sc.q, gl.qnorm, T*c.H, c.Dh, eps))
		s.run(b.K.RMSNorm(b.Compute, sc.k, cuda.F32, sc.k, gl.knorm, T*c.G, c.Dh, eps))
	case model.QKNormFull:
		s.run(b.K.RMSNorm(b.Compute, sc.q, cuda.F32, sc.q, gl.qnorm, T, qd, eps))
		s.run(b.K.RMSNorm(b.Compute, sc.k, cuda.F32, sc.k, gl.knorm, T, kd, eps))
	}
	s.run(b.K.RoPE(b.Compute, sc.q, sc.pos, T, c.H, c.Dh, c.RotaryDim, s.cos, s.sin))
	s.run(b.K.RoPE(b.Compute, sc.k, sc.pos, T, c.G, c.Dh, c.RotaryDim, s.cos, s.sin))
	s.run(b.K.KVAppend(b.Compute, s.kc[l], sc.k, s.Pos, T, kd))
	s.run(b.K.KVAppend(b.Compute, s.vc[l], sc.v, s.Pos, T, kd))
	scale := float32(1 / math.Sqrt(float64(c.Dh)))
	s.run(b.K.Attention(b.Compute, sc.att, sc.q, s.kc[l], s.vc[l], T, s.Pos+T, c.H, c.G, c.Dh, s.Pos, c.Window[l], scale))
	s.apply(gl.o, sc.x, sc.att, T, 1)
}

// ffn computes out (T, D) = down(silu(gate h) * up h) + beta*out.
func (s *Session) ffn(e *expert, out cuda.DevPtr, T int, beta float32) {
	b, sc := s.g.b, &s.sc
	F := e.gate.rows
	s.apply(e.gate, sc.g, sc.h, T, 0)
	s.apply(e.up, sc.u, sc.h, T, 0)
	s.run(b.K.SwiGLU(b.Compute, sc.a, sc.g, sc.u, T, F))
	s.apply(e.down, out, sc.a, T, beta)
}

// sortedActive returns the experts with rows in p, ascending.
func sortedActive(p *moe.Plan, dst []int) []int {
	dst = dst[:0]
	for e := 0; e < p.E; e++ {
		if p.Offsets[e+1] > p.Offsets[e] {
			dst = append(dst, e)
		}
	}
	return slices.Clip(dst)
}
