package model

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/moe"
	"github.com/moesys/moesys/safetensors"
	"github.com/moesys/moesys/tensor"
)

// LoadOffloaded opens a checkpoint directory without its routed experts:
// config.json and the safetensors of everything else (attention, norms,
// routers, pre-gates, shared experts, dense layers, embeddings), which is
// all an offload layout written by ConvertToOffload keeps there. The routed
// experts come from src (an offload.Scheduler over the same directory),
// which the model borrows: the caller closes it after the model's last
// pass. A nil src must be set with SetExpertSource before Forward.
func LoadOffloaded(dir string, src moe.ExpertSource) (*Model, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	set, err := safetensors.OpenModel(dir)
	if err != nil {
		return nil, fmt.Errorf("model: open weights: %w", err)
	}
	m := &Model{Cfg: cfg, set: set, noExperts: true}
	if err := m.load(true); err != nil {
		set.Close()
		return nil, err
	}
	m.SetExpertSource(src)
	return m, nil
}

// SetExpertSource makes every MoE layer take its routed experts from src:
// after routing, a layer acquires its active experts, runs them and
// releases them (in turns when src hands out fewer than asked). A source
// that is also a moe.Prefetcher is told each pre-gate-routed layer's
// experts once the pre-gate's layer has taken its own (see
// moe.AcquireThener); a
// moe.Speculator that wants predictions is also told, for each MoE layer
// followed by a MoE layer with its own router, that router's choice on
// this layer's input (see Batch.hintAhead). nil goes back to the experts
// loaded with the model (an error for LoadOffloaded models). Not safe while
// a pass runs.
func (m *Model) SetExpertSource(src moe.ExpertSource) {
	m.src, m.prefetch, m.speculate = src, nil, nil
	if src == nil {
		return
	}
	m.prefetch, _ = src.(moe.Prefetcher)
	if sp, ok := src.(moe.Speculator); ok && sp.WantsPrediction() {
		m.speculate = speculationTargets(m)
	}
	if m.expertName == nil {
		c, sp := m.Cfg, SpecFor(m.Cfg.Arch)
		m.expertName = make([][][3]string, c.L)
		for l := range c.L {
			if !c.MoE[l] {
				continue
			}
			m.expertName[l] = make([][3]string, c.E)
			for e := range c.E {
				g, u, d := sp.Expert(l, e)
				m.expertName[l][e] = [3]string{g, u, d}
			}
		}
	}
}

// ExpertSource returns the source set by SetExpertSource, or nil.
func (m *Model) ExpertSource() moe.ExpertSource { return m.src }

// SpeculationTargets returns, per layer, the MoE layer a Speculator is
// told to expect from that layer's input, or -1 (see speculationTargets);
// for other engines running this model's weights (the GPU backend).
func (m *Model) SpeculationTargets() []int { return speculationTargets(m) }

// speculationTargets returns, per layer, the MoE layer whose experts a
// Speculator is told to expect from that layer's input: the next MoE layer,
// when l is a MoE layer and that layer has its own router (one a pre-gate
// routes gets the pre-gate's exact hint instead); else -1.
func speculationTargets(m *Model) []int {
	t := make([]int, len(m.Layers))
	next := -1
	for l := len(m.Layers) - 1; l >= 0; l-- {
		t[l] = -1
		if !m.Layers[l].MoE {
			continue
		}
		if next >= 0 && m.Layers[next].Router.Rows > 0 {
			t[l] = next
		}
		next = l
	}
	return t
}

// sourcedExperts runs layer l's active experts with weights from the
// model's source, in as many turns as it takes: run(e, ex) computes expert
// e with ex, in parallel over a turn's experts. Acquire may reorder active.
// ahead, if not nil, runs once, during the first turn's Acquire (from
// AcquireThen, between starting the layer's own fetches and waiting for
// them) or after it, before the experts run: the prefetch hints for later
// layers go out while this layer waits and computes, without taking the
// memory of its own experts.
func (bt *Batch) sourcedExperts(ctx context.Context, l int, active []int, run func(e int, ex *Expert), ahead func()) error {
	m, sc := bt.m, &bt.s
	if len(sc.srcW) < len(active) {
		sc.srcW = make([]moe.ExpertWeights, m.Cfg.E)
		sc.srcX = make([]Expert, m.Cfg.E)
	}
	for len(active) > 0 {
		w := sc.srcW[:len(active)]
		var n int
		var err error
		if at, ok := m.src.(moe.AcquireThener); ok && ahead != nil {
			n, err = at.AcquireThen(ctx, l, active, w, ahead)
			ahead = nil
		} else {
			n, err = m.src.Acquire(ctx, l, active, w)
		}
		if err == nil && (n < 1 || n > len(active)) {
			err = fmt.Errorf("acquired %d of %d experts", n, len(active))
		}
		if err != nil {
			return fmt.Errorf("model: layer %d experts: %w", l, err)
		}
		for i := range n {
			if err := m.expertMats(&sc.srcX[i], l, active[i], &w[i]); err != nil {
				m.src.Release(w[:n])
				return err
			}
		}
		if ahead != nil {
			ahead()
			ahead = nil
		}
		turn := active[:n]
		kernel.Parallel(n, func(i int) { run(turn[i], &sc.srcX[i]) })
		m.src.Release(w[:n])
		clear(sc.srcX[:n]) // no views of released memory stay behind
		active = active[n:]
	}
	return nil
}

// expertMats points ex's Mats at the acquired weights w of layer l's
// expert e, checking names, dtypes, shapes and alignment: a source with a
// mismatched layout gives an error, not wrong products.
func (m *Model) expertMats(ex *Expert, l, e int, w *moe.ExpertWeights) error {
	if w.Data == nil && w.Addr != 0 {
		return fmt.Errorf("model: layer %d expert %d: the source lends device memory (a GPU's), which the CPU model cannot read; run on the GPU backend (--device cuda)", l, e)
	}
	ts, err := ExpertTensors(w, l, e, m.expertName[l][e], m.Cfg.ExpertFFN, m.Cfg.D)
	if err != nil {
		return err
	}
	dst := [3]*Mat{&ex.Gate, &ex.Up, &ex.Down}
	for j, t := range ts {
		if t.Offset < 0 || t.Offset+t.Bytes > int64(len(w.Data)) {
			return fmt.Errorf("%w: offloaded tensor %s: %d bytes at %d of %d", ErrWeights, t.Name, t.Bytes, t.Offset, len(w.Data))
		}
		rows, cols := t.Shape[0], t.Shape[1]
		p := unsafe.Pointer(unsafe.SliceData(t.View(w.Data)))
		x := Mat{Rows: rows, Cols: cols, Mode: m.expertMode}
		switch {
		case t.DType == tensor.BF16 && uintptr(p)%2 == 0:
			x.BF16 = unsafe.Slice((*uint16)(p), rows*cols)
		case t.DType == tensor.F32 && uintptr(p)%4 == 0:
			x.F32 = unsafe.Slice((*float32)(p), rows*cols)
		default:
			return fmt.Errorf("%w: offloaded tensor %s: dtype %v at offset %d: want aligned BF16 or F32 (convert F16 checkpoints to BF16 first)",
				ErrWeights, t.Name, t.DType, t.Offset)
		}
		*dst[j] = x
	}
	return nil
}

// ExpertTensors finds the gate, up and down tensors (names, in that
// order) of layer l's expert e in w, lent by an ExpertSource: it checks
// that the source returned that expert, and each tensor's shape ((F, D),
// (F, D), (D, F)) and byte count. Every engine running lent experts uses it
// (this package's Batch, the GPU's Session); each then checks what its
// memory needs (bounds, dtype, alignment).
func ExpertTensors(w *moe.ExpertWeights, l, e int, names [3]string, F, D int) ([3]*moe.ExpertTensor, error) {
	var out [3]*moe.ExpertTensor
	if w.Layer != l || w.Expert != e {
		return out, fmt.Errorf("model: layer %d expert %d: the source returned layer %d expert %d", l, e, w.Layer, w.Expert)
	}
	shape := [3][2]int{{F, D}, {F, D}, {D, F}}
	for ti := range w.Tensors {
		t := &w.Tensors[ti]
		j := 0
		for j < 3 && t.Name != names[j] {
			j++
		}
		if j == 3 {
			continue
		}
		rows, cols := shape[j][0], shape[j][1]
		if !tensor.Shape(t.Shape).Equal(tensor.Shape{rows, cols}) || t.Bytes != int64(rows*cols*t.DType.Size()) {
			return out, fmt.Errorf("%w: offloaded tensor %s: shape %v, %d bytes, want (%d, %d) %v",
				ErrWeights, t.Name, t.Shape, t.Bytes, rows, cols, t.DType)
		}
		out[j] = t
	}
	for _, t := range out {
		if t == nil {
			return out, fmt.Errorf("%w: layer %d expert %d: the source lacks tensors of %v", ErrWeights, l, e, names)
		}
	}
	return out, nil
}

// hintAhead sends MoE layer l's prefetch hints (the source is a
// Prefetcher): its pre-gate's routing of its target layer, computed with
// l's routing into pregateTE; and, for a Speculator that wants them, the
// prediction of the next MoE layer: that layer's router applied to hTD, l's
// MoE input, which is what the router would see if the hidden state did
// not change in between.
func (bt *Batch) hintAhead(ctx context.Context, l int, ly *Layer, hTD []float32, T int) {
	c, m, sc := bt.m.Cfg, bt.m, &bt.s
	if ly.Pregate.Rows > 0 {
		bt.prefetchRouted(ctx, ly.PregateTarget, sc.pregateTE[ly.PregateTarget][:T*c.E], T)
	}
	if m.speculate != nil && m.speculate[l] >= 0 {
		next := m.speculate[l]
		if len(sc.specTE) < T*c.E {
			sc.specTE = make([]float32, T*c.E)
		}
		logits := sc.specTE[:T*c.E]
		m.Layers[next].Router.Apply(logits, hTD, T, 0)
		bt.prefetchRouted(ctx, next, logits, T)
	}
}

// prefetchRouted tells the source which experts layer target will use (or
// is predicted to use), from routing logits (T, E) for it: the union of
// every token's top K.
func (bt *Batch) prefetchRouted(ctx context.Context, target int, logitsTE []float32, T int) {
	c, sc := bt.m.Cfg, &bt.s
	ids := moe.Router{K: c.K, Normalize: c.NormTopK}.Route(logitsTE, T, c.E).IDsTK
	if cap(sc.used) < c.E {
		sc.used = make([]bool, c.E)
	}
	used := sc.used[:c.E]
	clear(used)
	for _, e := range ids {
		used[e] = true
	}
	experts := sc.prefetchIDs[:0]
	for e, u := range used {
		if u {
			experts = append(experts, e)
		}
	}
	sc.prefetchIDs = experts
	bt.m.prefetch.Prefetch(ctx, target, experts)
}
