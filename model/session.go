package model

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/moe"
)

// Session is one sequence's inference state: a KV cache preallocated for
// MaxT positions and the position reached. Forward appends tokens (a prefill
// chunk or one decode step); Batch.Forward runs several sessions' tokens in
// one pass. A Session is not safe for concurrent use; sessions share the
// Model's weights read-only.
type Session struct {
	m    *Model
	MaxT int
	Pos  int // positions already in the cache

	kc, vc   [][]float32 // per layer (MaxT, G, Dh)
	cos, sin []float32   // RoPE tables (MaxT, RotaryDim/2)

	// RecordRouting makes Forward keep, per MoE layer, the expert ids chosen
	// for each of its tokens (T, K) in Routing[l] (nil for dense layers).
	RecordRouting bool
	Routing       [][]int32

	own *Batch // scratch for Forward
}

// Batch runs the tokens of several sessions through the model in one pass:
// every weight is read once for all their rows (the point of batching
// decode), while attention runs per session over its own cache. It holds the
// pass's scratch buffers; one Batch serves one goroutine at a time.
type Batch struct {
	m *Model
	s scratch
	// RecordRouting keeps each MoE layer's expert ids of the last pass,
	// (rows, K), rows in the order of the sessions given.
	RecordRouting bool
	Routing       [][]int32
}

// scratch holds a forward pass's buffers, grown to the largest pass seen.
type scratch struct {
	T                          int
	x, h, q, k, v, att         []float32
	logits, routerTE, gateT    []float32
	ffnG, ffnU, ffnA, routed   []float32
	routedOut, sharedOut, attW []float32
	off, wsAt                  []int // attention: each session's first row and workspace offset
	pos, toks                  []int32
	active                     []int // experts with rows in the current plan
	// The pass's rows as each session alone would compute them (rowSeg):
	// rowSeq[t] is row t's session, segs the pass's segments, and jobs,
	// items, gemms and eseg the per-call lists built from them.
	rowSeq       []int32
	segs, eseg   []rowSeg
	jobs         []kernel.PackedGemv
	items, gemms []ffnItem
	// pregateTE holds, per MoE layer a pre-gate routes, its routing logits
	// (T, E), written earlier in the pass by the source layer's pre-gate;
	// nil for every other layer (all of them in a model without pre-gates).
	pregateTE [][]float32

	// With an ExpertSource (offload.go): one turn's acquired weights and
	// their Mats (E each), the prefetch hint's expert set, and the
	// speculated routing logits (T, E) of the next MoE layer.
	srcW        []moe.ExpertWeights
	srcX        []Expert
	used        []bool
	prefetchIDs []int
	specTE      []float32
}

// NewSession allocates a KV cache for maxT positions.
func (m *Model) NewSession(maxT int) *Session {
	c := m.Cfg
	s := &Session{m: m, MaxT: maxT, kc: make([][]float32, c.L), vc: make([][]float32, c.L), Routing: make([][]int32, c.L), own: m.NewBatch()}
	for l := range s.kc {
		s.kc[l] = make([]float32, maxT*c.G*c.Dh)
		s.vc[l] = make([]float32, maxT*c.G*c.Dh)
	}
	half := c.RotaryDim / 2
	s.cos, s.sin = make([]float32, maxT*half), make([]float32, maxT*half)
	kernel.RoPEFreqs(s.cos, s.sin, maxT, c.RotaryDim, c.RopeTheta)
	return s
}

// NewBatch returns an empty batch runner for m.
func (m *Model) NewBatch() *Batch { return &Batch{m: m, Routing: make([][]int32, m.Cfg.L)} }

// Reset empties the cache (the buffers are kept).
func (s *Session) Reset() { s.Pos = 0 }

func (s *scratch) grow(c *Config, T int) {
	if T <= s.T {
		return
	}
	s.T = T
	F := max(c.DenseFFN, c.ExpertFFN, c.SharedFFN)
	R := T * max(c.K, 1)
	s.x, s.h = make([]float32, T*c.D), make([]float32, T*c.D)
	s.q, s.att = make([]float32, T*c.H*c.Dh), make([]float32, T*c.H*c.Dh)
	s.k, s.v = make([]float32, T*c.G*c.Dh), make([]float32, T*c.G*c.Dh)
	s.logits = make([]float32, T*c.V)
	s.routerTE, s.gateT = make([]float32, T*max(c.E, 1)), make([]float32, T)
	s.ffnG, s.ffnU, s.ffnA = make([]float32, max(R, T)*F), make([]float32, max(R, T)*F), make([]float32, max(R, T)*F)
	s.routed, s.routedOut, s.sharedOut = make([]float32, R*c.D), make([]float32, R*c.D), make([]float32, T*c.D)
	s.pos, s.toks = make([]int32, T), make([]int32, T)
	if c.PregateDist > 0 {
		s.pregateTE = make([][]float32, c.L)
		for l := range s.pregateTE {
			if c.RouteSource(l) >= 0 {
				s.pregateTE[l] = make([]float32, T*c.E)
			}
		}
	}
}

// Forward runs tokens through the model at positions Pos..Pos+T-1, appends
// their keys and values to the cache and returns the logits (T, V), valid
// until the next Forward.
func (s *Session) Forward(tokens []int32) ([]float32, error) {
	return s.ForwardContext(context.Background(), tokens)
}

// ForwardContext is Forward with a context for the model's ExpertSource,
// which may wait for experts on a slow tier. On error (a failed read,
// ctx ended) the session's position does not advance: the same tokens can
// be run again.
func (s *Session) ForwardContext(ctx context.Context, tokens []int32) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, nil
	}
	s.own.RecordRouting = s.RecordRouting
	out, err := s.own.ForwardContext(ctx, []*Session{s}, [][]int32{tokens})
	if err != nil {
		return nil, err
	}
	copy(s.Routing, s.own.Routing)
	return out[0], nil
}

// Forward runs tokens[i] through the model for seqs[i], all in one pass, and
// returns each sequence's logits (T_i, V), valid until the next pass. Each
// session's cache and position advance as if it had run alone, and so do its
// logits (up to summation order in the shared products).
func (b *Batch) Forward(seqs []*Session, tokens [][]int32) ([][]float32, error) {
	return b.ForwardContext(context.Background(), seqs, tokens)
}

// ForwardContext is Forward with a context for the model's ExpertSource.
// On error no session's position advances.
func (b *Batch) ForwardContext(ctx context.Context, seqs []*Session, tokens [][]int32) ([][]float32, error) {
	c, m := b.m.Cfg, b.m
	if m.src == nil && m.noExperts {
		return nil, fmt.Errorf("model: the routed experts were not loaded (LoadOffloaded) and no ExpertSource is set")
	}
	if len(seqs) != len(tokens) {
		return nil, fmt.Errorf("model: %d sessions for %d token lists", len(seqs), len(tokens))
	}
	T := 0
	for i, s := range seqs {
		if s.m != m {
			return nil, fmt.Errorf("model: session %d belongs to another model", i)
		}
		if s.Pos+len(tokens[i]) > s.MaxT {
			return nil, fmt.Errorf("model: %d positions exceed the session's cache of %d", s.Pos+len(tokens[i]), s.MaxT)
		}
		for j, id := range tokens[i] {
			if id < 0 || int(id) >= c.V {
				return nil, fmt.Errorf("model: token %d (position %d) outside the vocabulary [0, %d)", id, s.Pos+j, c.V)
			}
		}
		T += len(tokens[i])
	}
	if T == 0 {
		return make([][]float32, len(seqs)), nil
	}
	b.s.grow(c, T)
	sc := &b.s
	toks, pos := sc.toks[:0], sc.pos[:0]
	sc.rowSeq = grow(sc.rowSeq, T)
	for i, s := range seqs {
		for j := range tokens[i] {
			sc.rowSeq[len(toks)+j] = int32(i)
			pos = append(pos, int32(s.Pos+j))
		}
		toks = append(toks, tokens[i]...)
	}
	sc.segs = appendSegs(sc.segs[:0], 0, T, func(r int) int32 { return sc.rowSeq[r] })
	x, h := sc.x[:T*c.D], sc.h[:T*c.D]
	if m.Embed.BF16 != nil {
		kernel.EmbeddingBF16(x, m.Embed.BF16, toks, T, c.D)
	} else {
		kernel.Embedding(x, m.Embed.F32, toks, T, c.D)
	}
	eps := float32(c.NormEps)
	for l := range m.Layers {
		ly := &m.Layers[l]
		kernel.RMSNorm(h, nil, x, ly.InNorm, T, c.D, eps)
		b.attention(l, ly, seqs, tokens, h, x, T)
		kernel.RMSNorm(h, nil, x, ly.PostNorm, T, c.D, eps)
		if ly.MoE {
			if err := b.moe(ctx, l, ly, h, x, T); err != nil {
				return nil, err
			}
		} else {
			b.Routing[l] = nil
			b.ffn(x, h, ly.Dense, T, c.DenseFFN, 1)
		}
	}
	kernel.RMSNorm(h, nil, x, m.Norm, T, c.D, eps)
	logits := sc.logits[:T*c.V]
	b.apply(h, T, 0, matY{&m.Head, logits})
	out := make([][]float32, len(seqs))
	o := 0
	for i, s := range seqs {
		n := len(tokens[i])
		out[i] = logits[o*c.V : (o+n)*c.V]
		o += n
		s.Pos += n
	}
	return out, nil
}

// attention adds the attention block's output for h (T, D) into x: the
// projections over all rows, attention per session over its own cache.
func (b *Batch) attention(l int, ly *Layer, seqs []*Session, tokens [][]int32, h, x []float32, T int) {
	c, sc := b.m.Cfg, &b.s
	qd, kd := c.H*c.Dh, c.G*c.Dh
	q, k, v := sc.q[:T*qd], sc.k[:T*kd], sc.v[:T*kd]
	b.apply(h, T, 0, matY{&ly.Q, q}, matY{&ly.K, k}, matY{&ly.V, v})
	if ly.QB != nil {
		addBias(q, ly.QB, T)
		addBias(k, ly.KB, T)
		addBias(v, ly.VB, T)
	}
	eps := float32(c.NormEps)
	switch c.QKNorm {
	case QKNormPerHead:
		kernel.RMSNorm(q, nil, q, ly.QNorm, T*c.H, c.Dh, eps)
		kernel.RMSNorm(k, nil, k, ly.KNorm, T*c.G, c.Dh, eps)
	case QKNormFull:
		kernel.RMSNorm(q, nil, q, ly.QNorm, T, qd, eps)
		kernel.RMSNorm(k, nil, k, ly.KNorm, T, kd, eps)
	}
	pos := sc.pos[:T]
	// Every session's RoPE table holds the same angles from position 0 up to
	// its MaxT: the longest serves all rows.
	cos, sin := seqs[0].cos, seqs[0].sin
	for _, s := range seqs {
		if len(s.cos) > len(cos) {
			cos, sin = s.cos, s.sin
		}
	}
	kernel.RoPE(q, pos, T, c.H, c.Dh, c.RotaryDim, cos, sin)
	kernel.RoPE(k, pos, T, c.G, c.Dh, c.RotaryDim, cos, sin)
	att := sc.att[:T*qd]
	scale := float32(1 / math.Sqrt(float64(c.Dh)))
	// Session i's rows start at off[i]; in parallel its workspace is
	// attW[wsAt[i]:wsAt[i+1]], in turn every session reuses the largest.
	sc.off, sc.wsAt = grow(sc.off, len(seqs)+1), grow(sc.wsAt, len(seqs)+1)
	decode := len(seqs) > 1 // every session a few rows: one session per thread
	largest := 0
	for i, s := range seqs {
		n := len(tokens[i])
		w := kernel.AttentionWorkspace(n, s.Pos+n, c.H, c.G, c.Dh)
		sc.off[i+1], sc.wsAt[i+1] = sc.off[i]+n, sc.wsAt[i]+w
		largest = max(largest, w)
		decode = decode && n <= sessionRows
	}
	need := largest
	if decode {
		need = sc.wsAt[len(seqs)]
	}
	if len(sc.attW) < need {
		sc.attW = make([]float32, need)
	}
	one := func(i int) {
		s, n, o := seqs[i], len(tokens[i]), sc.off[i]
		if n == 0 {
			return
		}
		copy(s.kc[l][s.Pos*kd:], k[o*kd:(o+n)*kd])
		copy(s.vc[l][s.Pos*kd:], v[o*kd:(o+n)*kd])
		S := s.Pos + n
		ws := sc.attW
		if decode {
			ws = sc.attW[sc.wsAt[i]:sc.wsAt[i+1]]
		}
		kernel.Attention(att[o*qd:(o+n)*qd], nil, q[o*qd:(o+n)*qd], s.kc[l][:S*kd], s.vc[l][:S*kd], n, S, c.H, c.G, c.Dh, s.Pos, c.Window[l], scale, ws)
	}
	if decode {
		// Sessions in parallel, each attention inline on one thread: a
		// decode step's attention is too small to split across threads
		// (each would cost a fork and join per session per layer).
		kernel.Parallel(len(seqs), one)
	} else {
		for i := range seqs {
			one(i)
		}
	}
	b.apply(att, T, 1, matY{&ly.O, x})
}

// moe adds the MoE block's output for h (T, D) into x: routed experts
// (weighted) and the shared expert (sigmoid-gated). The routing logits come
// from the layer's own router, or from the pre-gate of an earlier layer of
// the same pass; a layer with a pre-gate computes its target's logits from
// the same h. The experts are the layer's own or, when the model has an
// ExpertSource, acquired from it (the only error source); a Prefetcher
// source gets the layer's hints for later layers once they are acquired
// (hintAhead).
func (bt *Batch) moe(ctx context.Context, l int, ly *Layer, h, x []float32, T int) error {
	c, b := bt.m.Cfg, &bt.s
	var logits []float32
	if ly.Router.Rows > 0 {
		logits = b.routerTE[:T*c.E]
		bt.apply(h, T, 0, matY{&ly.Router, logits})
	} else {
		logits = b.pregateTE[l][:T*c.E]
	}
	if ly.Pregate.Rows > 0 {
		bt.apply(h, T, 0, matY{&ly.Pregate, b.pregateTE[ly.PregateTarget][:T*c.E]})
	}
	routing := moe.Router{K: c.K, Normalize: c.NormTopK}.Route(logits, T, c.E)
	if bt.RecordRouting {
		bt.Routing[l] = routing.IDsTK
	}
	plan := moe.NewPlan(routing, c.E, -1)
	R := plan.Rows()
	routed, out := b.routed[:R*c.D], b.routedOut[:R*c.D]
	moe.Dispatch(routed, h, plan, c.K, c.D)
	// Experts in parallel, each on one thread (kernels nested in a part run
	// inline), with disjoint scratch rows: a decode step's K experts of one
	// row each would otherwise be K tiny GEMVs each split across threads.
	active := b.active[:0]
	for e := 0; e < c.E; e++ {
		if plan.Offsets[e+1] > plan.Offsets[e] {
			active = append(active, e)
		}
	}
	b.active = active
	F := c.ExpertFFN
	switch {
	case bt.m.src == nil && len(active) > 0 && ly.Experts[active[0]].Gate.Packed != nil:
		// Packed weights: every expert's rows as their sessions alone
		// would compute them (see rowSeg), the GEMVs of all experts split
		// over the threads by work in two parallel calls.
		items, gemms := b.items[:0], b.gemms[:0]
		for _, e := range active {
			segs := appendSegs(b.eseg[:0], plan.Offsets[e], plan.Offsets[e+1], func(r int) int32 {
				return b.rowSeq[int(plan.RowSlot[r])/c.K]
			})
			for _, s := range segs {
				if s.each {
					items = append(items, ffnItem{&ly.Experts[e], s.r0, s.n})
				} else {
					gemms = append(gemms, ffnItem{&ly.Experts[e], s.r0, s.n})
				}
			}
			b.eseg = segs
		}
		bt.ffnEach(items, gemms, out, routed, F, 0)
		b.items, b.gemms = items[:0], gemms[:0]
	case bt.m.src == nil:
		kernel.Parallel(len(active), func(i int) {
			e := active[i]
			r0, r1 := plan.Offsets[e], plan.Offsets[e+1]
			ffnRows(out[r0*c.D:r1*c.D], routed[r0*c.D:r1*c.D], &ly.Experts[e], r1-r0, F,
				b.ffnG[r0*F:r1*F], b.ffnU[r0*F:r1*F], b.ffnA[r0*F:r1*F], 0)
		})
	default:
		var ahead func() // the prefetch hints, sent once l's experts are acquired
		if bt.m.prefetch != nil {
			ahead = func() { bt.hintAhead(ctx, l, ly, h, T) }
		}
		if err := bt.sourcedExperts(ctx, l, active, func(e int, ex *Expert) {
			r0, r1 := plan.Offsets[e], plan.Offsets[e+1]
			ffnRows(out[r0*c.D:r1*c.D], routed[r0*c.D:r1*c.D], ex, r1-r0, F,
				b.ffnG[r0*F:r1*F], b.ffnU[r0*F:r1*F], b.ffnA[r0*F:r1*F], 0)
		}, ahead); err != nil {
			return err
		}
	}
	moe.Combine(x, out, plan, routing, c.D)
	if ly.Shared != nil {
		gate, sh := b.gateT[:T], b.sharedOut[:T*c.D]
		bt.apply(h, T, 0, matY{&ly.SharedGate, gate})
		bt.ffn(sh, h, ly.Shared, T, c.SharedFFN, 0)
		for t := 0; t < T; t++ {
			g := float32(1 / (1 + math.Exp(-float64(gate[t]))))
			xr, sr := x[t*c.D:(t+1)*c.D], sh[t*c.D:(t+1)*c.D]
			for i := range xr {
				xr[i] += g * sr[i]
			}
		}
	}
	return nil
}

// rowSeg is a run of a pass's rows [r0, r0+n) computed one way, the way
// their sessions would compute them alone, so that a sequence's numbers do
// not depend on the batch it runs in: with each set, rows of sessions that
// bring one row each, through the one-row GEMV (kernel.GemvPackedRows is
// GemvPacked row by row, bit for bit); else the n rows of one session,
// through the product a session of n rows runs (Mat.Apply with T = n).
type rowSeg struct {
	r0, n int
	each  bool
}

// appendSegs appends the segments of rows [r0, r1), whose sessions are
// seq(r); a session's rows are contiguous.
func appendSegs(segs []rowSeg, r0, r1 int, seq func(r int) int32) []rowSeg {
	for i := r0; i < r1; {
		j := i + 1
		for j < r1 && seq(j) == seq(i) {
			j++
		}
		switch n := len(segs); {
		case j-i > 1:
			segs = append(segs, rowSeg{i, j - i, false})
		case n > 0 && segs[n-1].each && segs[n-1].r0+segs[n-1].n == i:
			segs[n-1].n++
		default:
			segs = append(segs, rowSeg{i, 1, true})
		}
		i = j
	}
	return segs
}

// matY is a product of Batch.apply: y = x * m^T (+ beta y).
type matY struct {
	m *Mat
	y []float32
}

// apply computes each y = x (T, Cols) * m^T + beta*y over the pass's rows,
// every row as its session alone would: packed weights take the rows of
// one-row sessions through one GemvPackedJobs call for all the products
// (one fork and join: the Q, K and V projections share it), and every other
// session's rows through Apply with its row count. Unpacked weights apply
// to all rows at once (a multi-row product rounds as a different summation
// order: close to, not bit for bit, the sessions alone).
func (bt *Batch) apply(x []float32, T int, beta float32, ms ...matY) {
	sc := &bt.s
	jobs := sc.jobs[:0]
	for _, p := range ms {
		m := p.m
		if m.Packed == nil || (len(sc.segs) == 1 && !sc.segs[0].each) {
			m.Apply(p.y, x, T, beta)
			continue
		}
		for _, s := range sc.segs {
			xs, ys := x[s.r0*m.Cols:(s.r0+s.n)*m.Cols], p.y[s.r0*m.Rows:(s.r0+s.n)*m.Rows]
			if s.each {
				jobs = append(jobs, kernel.PackedGemv{B: m.Packed, X: xs, Y: ys, LdX: m.Cols, LdY: m.Rows, M: s.n, Alpha: 1, Beta: beta})
			} else {
				m.Apply(ys, xs, s.n, beta)
			}
		}
	}
	kernel.GemvPackedJobs(jobs)
	sc.jobs = jobs[:0]
}

// ffnItem is a run of rows [r0, r0+n) through expert e's FFN.
type ffnItem struct {
	e     *Expert
	r0, n int
}

// ffn computes out (T, D) = down(silu(gate x) * up x) + beta*out over the
// pass's rows, every row as its session alone would (see apply).
func (bt *Batch) ffn(out, x []float32, e *Expert, T, F int, beta float32) {
	sc := &bt.s
	if e.Gate.Packed == nil || (len(sc.segs) == 1 && !sc.segs[0].each) {
		ffn(out, x, e, T, F, sc, beta)
		return
	}
	items, gemms := sc.items[:0], sc.gemms[:0]
	for _, s := range sc.segs {
		if s.each {
			items = append(items, ffnItem{e, s.r0, s.n})
		} else {
			gemms = append(gemms, ffnItem{e, s.r0, s.n})
		}
	}
	bt.ffnEach(items, gemms, out, x, F, beta)
	sc.items, sc.gemms = items[:0], gemms[:0]
}

// ffnEach runs FFN items with packed weights: out rows = down(silu(gate x)
// * up x) + beta*out for x and out rows indexed like the scratch rows. The
// items hold rows of one-row sessions, through GemvPackedRows (bit for bit
// the one-row GEMV) and SwiGLU row by row, as one row alone runs them. Two
// or more items (the experts of a decode step, 1 to 8 rows each) run whole
// on one thread each, handed out in one parallel call to whichever thread
// is free, the most rows first; a single item (a dense or shared FFN) splits
// its products over the threads instead. The gemms each hold one session's
// rows, run as that session alone runs them (ffnRows), in the same parallel
// call (each on one thread) when there is other work.
func (bt *Batch) ffnEach(items, gemms []ffnItem, out, x []float32, F int, beta float32) {
	sc, D := &bt.s, bt.m.Cfg.D
	g, u, a := sc.ffnG, sc.ffnU, sc.ffnA
	job := func(m *Mat, x, y []float32, n int, beta float32) kernel.PackedGemv {
		return kernel.PackedGemv{B: m.Packed, X: x, Y: y, LdX: m.Cols, LdY: m.Rows, M: n, Alpha: 1, Beta: beta}
	}
	swiglu := func(it ffnItem) {
		for r := it.r0; r < it.r0+it.n; r++ {
			kernel.SwiGLU(a[r*F:(r+1)*F], g[r*F:(r+1)*F], u[r*F:(r+1)*F])
		}
	}
	switch {
	case len(items)+len(gemms) == 1 && len(items) == 1:
		it := items[0]
		r0, r1 := it.r0, it.r0+it.n
		jobs := append(sc.jobs[:0], job(&it.e.Gate, x[r0*D:r1*D], g[r0*F:r1*F], it.n, 0), job(&it.e.Up, x[r0*D:r1*D], u[r0*F:r1*F], it.n, 0))
		kernel.GemvPackedJobs(jobs)
		swiglu(it)
		kernel.GemvPackedJobs(append(jobs[:0], job(&it.e.Down, a[r0*F:r1*F], out[r0*D:r1*D], it.n, beta)))
		sc.jobs = jobs[:0]
	case len(items)+len(gemms) == 1:
		it := gemms[0]
		r0, r1 := it.r0, it.r0+it.n
		ffnRows(out[r0*D:r1*D], x[r0*D:r1*D], it.e, it.n, F, g[r0*F:r1*F], u[r0*F:r1*F], a[r0*F:r1*F], beta)
	default:
		// One work list: the gemms first (a session's several rows), then
		// the one-row items, the most rows first.
		work := append(gemms, items...)
		slices.SortStableFunc(work[len(gemms):], func(p, q ffnItem) int { return q.n - p.n })
		nEach := len(gemms) // work[nEach:] are one-row items
		kernel.ParallelTake(len(work), func(i int) {
			it := work[i]
			r0, r1 := it.r0, it.r0+it.n
			// Nested in a parallel part: each product runs on this thread.
			if i < nEach {
				ffnRows(out[r0*D:r1*D], x[r0*D:r1*D], it.e, it.n, F, g[r0*F:r1*F], u[r0*F:r1*F], a[r0*F:r1*F], beta)
				return
			}
			kernel.GemvPackedRows(g[r0*F:r1*F], F, it.e.Gate.Packed, x[r0*D:r1*D], D, it.n, 1, 0)
			kernel.GemvPackedRows(u[r0*F:r1*F], F, it.e.Up.Packed, x[r0*D:r1*D], D, it.n, 1, 0)
			swiglu(it)
			kernel.GemvPackedRows(out[r0*D:r1*D], D, it.e.Down.Packed, a[r0*F:r1*F], F, it.n, 1, beta)
		})
	}
}

// sessionRows is the most rows a session may bring to a pass for the
// pass's attention to run one session per thread.
const sessionRows = 4

// ffn computes out (T, D) = down(silu(gate x) * up x) + beta*out.
func ffn(out, x []float32, e *Expert, T, F int, b *scratch, beta float32) {
	ffnRows(out, x, e, T, F, b.ffnG[:T*F], b.ffnU[:T*F], b.ffnA[:T*F], beta)
}

// ffnRows is ffn with explicit (T, F) scratch g, u, a.
func ffnRows(out, x []float32, e *Expert, T, F int, g, u, a []float32, beta float32) {
	e.Gate.Apply(g, x, T, 0)
	e.Up.Apply(u, x, T, 0)
	kernel.SwiGLU(a, g, u)
	e.Down.Apply(out, a, T, beta)
}

func addBias(y, bias []float32, T int) {
	n := len(bias)
	for t := 0; t < T; t++ {
		row := y[t*n : (t+1)*n]
		for i, v := range bias {
			row[i] += v
		}
	}
}
