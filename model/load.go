package model

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/moe"
	"github.com/moesys/moesys/safetensors"
	"github.com/moesys/moesys/tensor"
)

// ErrWeights is wrapped by every missing or mis-shaped tensor error.
var ErrWeights = errors.New("model: bad weights")

// Expert is one SwiGLU FFN: down(silu(gate x) * up x).
type Expert struct {
	Gate, Up Mat // (F, D)
	Down     Mat // (D, F)
}

// Layer holds one decoder block's weights.
type Layer struct {
	InNorm, PostNorm []float32 // (D)
	Q, K, V, O       Mat       // (H*Dh, D), (G*Dh, D), (G*Dh, D), (D, H*Dh)
	QB, KB, VB       []float32 // biases (Qwen2) or nil
	QNorm, KNorm     []float32 // (Dh) per head, (H*Dh)/(G*Dh) full width, or nil

	MoE     bool
	Router  Mat // (E, D); zero when an earlier layer's pre-gate routes this one
	Pregate Mat // (E, D) pre-gate computing layer PregateTarget's routing logits, or zero
	// PregateTarget is the MoE layer Pregate routes (Config.PregateTarget), or -1.
	PregateTarget int

	Experts    []Expert // E routed experts
	Shared     *Expert  // Qwen2-MoE shared expert, or nil
	SharedGate Mat      // (1, D) sigmoid gate of the shared expert
	Dense      *Expert  // dense FFN of a non-MoE layer
}

// Model is a loaded checkpoint. Weight views point into the mapped files:
// valid until Close.
type Model struct {
	Cfg    *Config
	Embed  Mat // (V, D)
	Norm   []float32
	Head   Mat // (V, D); the embedding when tied
	Layers []Layer

	set *safetensors.Set

	// Routed experts from an ExpertSource (offload.go); nil src: the
	// Layers' Experts.
	src        moe.ExpertSource
	prefetch   moe.Prefetcher  // src, when it takes prefetch hints
	speculate  []int           // per layer: the MoE layer to predict from its input, or -1; nil: none
	noExperts  bool            // loaded without routed experts (LoadOffloaded)
	expertMode kernel.BF16Mode // the Mode of sourced expert Mats (SetPrecision)
	expertName [][][3]string   // [layer][expert] gate, up, down tensor names
}

// Load opens a checkpoint directory: config.json and model.safetensors (or a
// sharded index). F32 and BF16 tensors are used in place; F16 ones are
// widened to F32 at load. Every expected tensor must exist with its shape.
func Load(dir string) (*Model, error) {
	cfg, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	set, err := safetensors.OpenModel(dir)
	if err != nil {
		return nil, fmt.Errorf("model: open weights: %w", err)
	}
	m := &Model{Cfg: cfg, set: set}
	if err := m.load(false); err != nil {
		set.Close()
		return nil, err
	}
	return m, nil
}

// Precision selects the arithmetic of bf16 weights in multi-token passes.
type Precision int

const (
	// Exact widens bf16 weights to f32: results match a float32 reference
	// (the fixtures' 1e-4 agreement). The default.
	Exact Precision = iota
	// Fast rounds activations to bf16 and uses the bf16 dot-product
	// instruction for prefill (about twice the f32 rate where the CPU has
	// AVX512_BF16), as bf16 inference in other frameworks does.
	Fast
)

// SetPrecision sets how every bf16 weight is applied to more than one token.
// Not safe while a Session runs.
func (m *Model) SetPrecision(p Precision) {
	mode := kernel.BF16Exact
	if p == Fast {
		mode = kernel.BF16Dot
	}
	set := func(x *Mat) { x.Mode = mode }
	m.expertMode = mode
	set(&m.Embed)
	set(&m.Head)
	for i := range m.Layers {
		ly := &m.Layers[i]
		for _, x := range []*Mat{&ly.Q, &ly.K, &ly.V, &ly.O, &ly.Router, &ly.Pregate, &ly.SharedGate} {
			set(x)
		}
		for _, e := range []*Expert{ly.Shared, ly.Dense} {
			if e != nil {
				set(&e.Gate)
				set(&e.Up)
				set(&e.Down)
			}
		}
		for j := range ly.Experts {
			set(&ly.Experts[j].Gate)
			set(&ly.Experts[j].Up)
			set(&ly.Experts[j].Down)
		}
	}
}

// Close releases the mapped weights (nothing after MakeResident).
func (m *Model) Close() error {
	if m.set == nil {
		return nil
	}
	return m.set.Close()
}

// load maps every weight, or every weight but the routed experts.
func (m *Model) load(skipExperts bool) error {
	c, sp := m.Cfg, SpecFor(m.Cfg.Arch)
	if c.Tasks > 0 {
		// Its outputs depend on each sequence's task expert, which the
		// inference path does not run: refuse rather than answer wrongly.
		return fmt.Errorf("%w: a multi-task checkpoint (moesys_tasks %d) runs only in training (moesys train --task); inference does not run task experts", ErrConfig, c.Tasks)
	}
	var err error
	mat := func(name string, rows, cols int) Mat {
		if err != nil {
			return Mat{}
		}
		var x Mat
		x, err = m.mat(name, rows, cols)
		return x
	}
	vec := func(name string, n int) []float32 {
		if err != nil {
			return nil
		}
		var x Mat
		x, err = m.mat(name, 1, n)
		if err != nil {
			return nil
		}
		return x.f32()
	}
	has := func(name string) bool { _, ok := m.set.Info(name); return ok }
	expert := func(gate, up, down string, F int) *Expert {
		return &Expert{Gate: mat(gate, F, c.D), Up: mat(up, F, c.D), Down: mat(down, c.D, F)}
	}

	m.Embed = mat(sp.Embed(), c.V, c.D)
	m.Norm = vec(sp.Norm(), c.D)
	if c.TieEmbeddings && !has(sp.Head()) {
		m.Head = m.Embed
	} else {
		m.Head = mat(sp.Head(), c.V, c.D)
	}
	qd, kd := c.H*c.Dh, c.G*c.Dh
	m.Layers = make([]Layer, c.L)
	for l := range m.Layers {
		ly := &m.Layers[l]
		ly.InNorm = vec(sp.InNorm(l), c.D)
		ly.PostNorm = vec(sp.PostNorm(l), c.D)
		ly.Q = mat(sp.Attn(l, "q", "weight"), qd, c.D)
		ly.K = mat(sp.Attn(l, "k", "weight"), kd, c.D)
		ly.V = mat(sp.Attn(l, "v", "weight"), kd, c.D)
		ly.O = mat(sp.Attn(l, "o", "weight"), c.D, qd)
		if c.QKVBias {
			ly.QB = vec(sp.Attn(l, "q", "bias"), qd)
			ly.KB = vec(sp.Attn(l, "k", "bias"), kd)
			ly.VB = vec(sp.Attn(l, "v", "bias"), kd)
		}
		switch c.QKNorm {
		case QKNormPerHead:
			ly.QNorm = vec(sp.QKNorm(l, "q"), c.Dh)
			ly.KNorm = vec(sp.QKNorm(l, "k"), c.Dh)
		case QKNormFull:
			ly.QNorm = vec(sp.QKNorm(l, "q"), qd)
			ly.KNorm = vec(sp.QKNorm(l, "k"), kd)
		}
		ly.MoE = c.MoE[l]
		ly.PregateTarget = c.PregateTarget(l)
		if !ly.MoE {
			g, u, d := sp.Dense(l)
			ly.Dense = expert(g, u, d, c.DenseFFN)
			continue
		}
		if c.RouteSource(l) < 0 {
			ly.Router = mat(sp.Router(l), c.E, c.D)
		}
		if ly.PregateTarget >= 0 {
			ly.Pregate = mat(sp.Pregate(l), c.E, c.D)
		}
		if !skipExperts {
			ly.Experts = make([]Expert, c.E)
		}
		for e := range ly.Experts {
			g, u, d := sp.Expert(l, e)
			if ex := expert(g, u, d, c.ExpertFFN); err == nil {
				ly.Experts[e] = *ex
			}
		}
		if c.SharedFFN > 0 {
			g, u, d, sg := sp.Shared(l)
			ly.Shared = expert(g, u, d, c.SharedFFN)
			ly.SharedGate = mat(sg, 1, c.D)
		}
	}
	return err
}

// mat returns tensor name as a rows x cols matrix (a vector when rows == 1,
// which also accepts a 1-D tensor).
func (m *Model) mat(name string, rows, cols int) (Mat, error) {
	info, ok := m.set.Info(name)
	if !ok {
		return Mat{}, fmt.Errorf("%w: missing tensor %s", ErrWeights, name)
	}
	want := tensor.Shape{rows, cols}
	if !info.Shape.Equal(want) && !(rows == 1 && info.Shape.Equal(tensor.Shape{cols})) {
		return Mat{}, fmt.Errorf("%w: tensor %s has shape %v, want %v", ErrWeights, name, info.Shape, want)
	}
	x := Mat{Rows: rows, Cols: cols}
	var err error
	switch info.DType {
	case tensor.F32:
		x.F32, err = m.set.F32(name)
	case tensor.BF16:
		x.BF16, err = m.set.U16(name)
	case tensor.F16:
		var h []uint16
		if h, err = m.set.U16(name); err == nil {
			x.F32 = make([]float32, len(h))
			tensor.F16SliceToF32(x.F32, h)
		}
	default:
		return Mat{}, fmt.Errorf("%w: tensor %s has dtype %v (want F32, BF16 or F16)", ErrWeights, name, info.DType)
	}
	if err != nil {
		return Mat{}, fmt.Errorf("model: read %s: %w", name, err)
	}
	return x, nil
}

// f32 returns the matrix as float32 values (widening a bf16 copy): for the
// small vectors (norms, biases) the kernels take as f32.
func (x Mat) f32() []float32 {
	if x.F32 != nil {
		return x.F32
	}
	f := make([]float32, len(x.BF16))
	tensor.BF16SliceToF32(f, x.BF16)
	return f
}

// Mats returns every weight matrix of the model (norm vectors excluded), for
// accounting and residency.
func (m *Model) Mats() []*Mat {
	ms := []*Mat{&m.Embed}
	if m.Head.F32 != nil || m.Head.BF16 != nil {
		ms = append(ms, &m.Head)
	}
	for i := range m.Layers {
		ly := &m.Layers[i]
		ms = append(ms, &ly.Q, &ly.K, &ly.V, &ly.O)
		if ly.Router.Rows > 0 {
			ms = append(ms, &ly.Router)
		}
		if ly.Pregate.Rows > 0 {
			ms = append(ms, &ly.Pregate)
		}
		if ly.SharedGate.Rows > 0 {
			ms = append(ms, &ly.SharedGate)
		}
		for _, e := range []*Expert{ly.Shared, ly.Dense} {
			if e != nil {
				ms = append(ms, &e.Gate, &e.Up, &e.Down)
			}
		}
		for j := range ly.Experts {
			e := &ly.Experts[j]
			ms = append(ms, &e.Gate, &e.Up, &e.Down)
		}
	}
	return ms
}

// residentCopy returns a heap copy of the mapped s and drops its pages;
// a backing array already copied (tied weights) returns that copy and
// fresh = false, so its bytes are counted once.
func residentCopy[T uint16 | float32](s []T, seen map[*T][]T) (c []T, fresh bool) {
	if c, ok := seen[&s[0]]; ok {
		return c, false
	}
	c = make([]T, len(s))
	copy(c, s)
	seen[&s[0]] = c
	dropPages(unsafe.Pointer(&s[0]), int(unsafe.Sizeof(s[0]))*len(s))
	return c, true
}

// MakeResident copies every weight out of the mapped files into process
// memory and releases the mapping, for a model meant to stay fully
// resident: the copies are read at full memory bandwidth (measured: a 196 MB
// bf16 GEMV from the file mapping 16.6 GB/s on one thread, from a heap copy
// 22.3), and no token pays a page fault. With pack (and Fast precision on a
// CPU with AVX512_BF16), bf16 weights are stored in the kernels' panel layout
// instead: prefill GEMMs skip packing and decode GEMVs read one contiguous
// stream per 32 outputs; multi-token products then always use bf16 dot
// products (Fast semantics), single tokens stay exact. The embedding table
// stays in rows (lookups). It returns the bytes now held.
func (m *Model) MakeResident(pack bool) (int64, error) {
	pack = pack && kernel.CurrentLevel() >= kernel.LevelAVX512BF16
	mats := m.Mats()
	// The head may alias the embedding (tied): copy each backing array once.
	seen := map[*uint16][]uint16{}
	seenF := map[*float32][]float32{}
	var total int64
	for _, x := range mats {
		switch {
		case len(x.BF16) > 0 && pack && x != &m.Embed && !(x == &m.Head && m.Cfg.TieEmbeddings):
			p := kernel.PackBF16(kernel.BF16Dot, true, x.Cols, x.Rows, x.BF16, x.Cols)
			dropPages(unsafe.Pointer(&x.BF16[0]), 2*len(x.BF16))
			x.Packed, x.BF16 = p, nil
		case len(x.BF16) > 0:
			var fresh bool
			if x.BF16, fresh = residentCopy(x.BF16, seen); !fresh {
				continue
			}
		case len(x.F32) > 0:
			var fresh bool
			if x.F32, fresh = residentCopy(x.F32, seenF); !fresh {
				continue
			}
		}
		total += int64(x.Bytes())
	}
	// Norm and bias vectors may be views too.
	cp := func(v []float32) []float32 { return append([]float32(nil), v...) }
	m.Norm = cp(m.Norm)
	for i := range m.Layers {
		ly := &m.Layers[i]
		ly.InNorm, ly.PostNorm = cp(ly.InNorm), cp(ly.PostNorm)
		if ly.QB != nil {
			ly.QB, ly.KB, ly.VB = cp(ly.QB), cp(ly.KB), cp(ly.VB)
		}
		if ly.QNorm != nil {
			ly.QNorm, ly.KNorm = cp(ly.QNorm), cp(ly.KNorm)
		}
	}
	err := m.set.Close()
	m.set = nil
	return total, err
}

// dropPages tells the kernel the whole pages inside [p, p+n) of the file
// mapping are no longer needed, so copying a model out of its mapping does
// not hold both copies in the process (they stay in the page cache,
// reclaimable). Pages shared with a neighbouring tensor are kept. Errors are
// ignored: it only lowers memory use.
func dropPages(p unsafe.Pointer, n int) {
	const page = 4096
	start := (uintptr(p) + page - 1) &^ (page - 1)
	end := (uintptr(p) + uintptr(n)) &^ (page - 1)
	if end <= start {
		return
	}
	b := unsafe.Slice((*byte)(unsafe.Add(p, start-uintptr(p))), int(end-start))
	_ = unix.Madvise(b, unix.MADV_DONTNEED)
}
