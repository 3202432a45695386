package gpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/moesys/moesys/gpu/cuda"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/moe"
	"github.com/moesys/moesys/tensor"
)

// gemvRows is the most rows a product runs through the kernels' GEMV
// (kernels.ExpertsGemv); more go to cuBLAS.
const gemvRows = 16

// mat is a weight matrix on the device in the backend's weight type,
// row-major (Rows outputs x Cols inputs) like model.Mat; cell is a device
// word holding p, the one-entry pointer array of a single-matrix GEMV.
type mat struct {
	p, cell    cuda.DevPtr
	rows, cols int
}

func (m mat) ok() bool { return m.rows > 0 }

type expert struct{ gate, up, down mat }

type layer struct {
	inNorm, postNorm cuda.DevPtr
	q, k, v, o       mat
	qb, kb, vb       cuda.DevPtr // 0: none
	qnorm, knorm     cuda.DevPtr // 0: none
	moe              bool
	router, pregate  mat
	pregateTarget    int
	experts          []expert // nil when the model's experts come from a source
	shared           *expert
	sharedGate       mat
	dense            *expert
}

// Model is a model.Model's weights on the device. Its routed experts are
// resident (uploaded with the rest) or lent by an ExpertSource over
// DeviceSlots (SetExpertSource), as with model.Model on the CPU.
type Model struct {
	b      *Backend
	Cfg    *model.Config
	embed  mat
	norm   cuda.DevPtr
	head   mat
	layers []layer

	arena  cuda.DevPtr // every weight, vector and pointer cell
	bytes  int64       // weight bytes on the device
	rowOff cuda.DevPtr // int32 pairs {0, t} for t = 0..gemvRows

	src         moe.ExpertSource
	prefetch    moe.Prefetcher
	speculate   []int
	specTargets []int // model.Model.SpeculationTargets, kept from the upload
	expertName  [][][3]string
}

// arenaAlign is the alignment of each tensor in the weight arena (cuBLAS
// and vectorised kernel loads want 16 bytes; 256 matches cudaMalloc).
const arenaAlign = 256

// uploader lays tensors out in one device allocation: a planning pass
// sizes it, a second pass copies.
type uploader struct {
	b      *Backend
	act    cuda.DataType
	base   cuda.DevPtr
	off    int64
	plan   bool
	cells  []uint64 // host copy of the pointer cells, uploaded last
	cellAt int64    // arena offset of the cells
	err    error
}

func (u *uploader) take(n int64) cuda.DevPtr {
	at := u.off
	u.off += (n + arenaAlign - 1) / arenaAlign * arenaAlign
	if u.plan {
		return 0
	}
	return u.base.Add(at)
}

// mat places m converted to the compute type.
func (u *uploader) mat(m *model.Mat, name string) mat {
	if u.err != nil || m.Rows == 0 {
		return mat{}
	}
	if m.Packed != nil {
		u.err = fmt.Errorf("gpu: %s is packed for the CPU kernels; load the model without MakeResident(pack)", name)
		return mat{}
	}
	n := int64(m.Rows) * int64(m.Cols)
	p := u.take(n * int64(u.act.Size()))
	cell := len(u.cells)
	u.cells = append(u.cells, uint64(p))
	out := mat{p: p, rows: m.Rows, cols: m.Cols}
	if !u.plan {
		out.cell = u.base.Add(u.cellAt + int64(8*cell))
		u.err = u.copyMat(p, m, name)
	}
	return out
}

// vec places an f32 vector (norm weights, biases); nil gives 0.
func (u *uploader) vec(v []float32) cuda.DevPtr {
	if u.err != nil || v == nil {
		return 0
	}
	p := u.take(int64(4 * len(v)))
	if !u.plan {
		u.err = u.b.Compute.CopyHtoD(p, asBytes(v))
	}
	return p
}

// copyMat converts m to the compute type (in chunks of rows) and copies it.
func (u *uploader) copyMat(p cuda.DevPtr, m *model.Mat, name string) error {
	switch {
	case u.act == cuda.BF16 && m.BF16 != nil:
		return u.b.Compute.CopyHtoD(p, asBytes(m.BF16))
	case u.act == cuda.F32 && m.F32 != nil:
		return u.b.Compute.CopyHtoD(p, asBytes(m.F32))
	}
	const chunk = 1 << 22 // elements converted at a time
	total := m.Rows * m.Cols
	for at := 0; at < total; at += chunk {
		n := min(chunk, total-at)
		var b []byte
		if u.act == cuda.BF16 {
			dst := make([]uint16, n)
			tensor.F32SliceToBF16(dst, m.F32[at:at+n])
			b = asBytes(dst)
		} else {
			dst := make([]float32, n)
			tensor.BF16SliceToF32(dst, m.BF16[at:at+n])
			b = asBytes(dst)
		}
		// A pageable source: the copy has left b when CopyHtoD returns.
		if err := u.b.Compute.CopyHtoD(p.Add(int64(at*u.act.Size())), b); err != nil {
			return fmt.Errorf("gpu: upload %s: %w", name, err)
		}
	}
	return nil
}

// Upload copies m's weights to the device in the backend's compute type:
// every weight of a model from model.Load, or all but the routed experts
// of one from model.LoadOffloaded (then SetExpertSource before Forward).
func Upload(b *Backend, m *model.Model) (*Model, error) {
	c := m.Cfg
	g := &Model{b: b, Cfg: c, specTargets: m.SpeculationTargets()}
	u := &uploader{b: b, act: b.wt, plan: true}
	g.place(u, m)
	if u.err != nil {
		return nil, u.err
	}
	// The pointer cells and the GEMV row offsets follow the tensors.
	cells := len(u.cells)
	total := u.off + int64(8*cells) + int64(8*(gemvRows+1))
	arena, err := b.Malloc(total)
	if err != nil {
		return nil, fmt.Errorf("gpu: upload %s of weights: %w", fmtBytes(total), err)
	}
	g.arena, g.bytes = arena, u.off
	cellAt := u.off
	u2 := &uploader{b: b, act: b.wt, base: arena, cellAt: cellAt}
	g.place(u2, m)
	if u2.err == nil {
		u2.err = b.Compute.CopyHtoD(arena.Add(cellAt), asBytes(u2.cells))
	}
	g.rowOff = arena.Add(cellAt + int64(8*cells))
	if u2.err == nil {
		pairs := make([]int32, 2*(gemvRows+1))
		for t := range gemvRows + 1 {
			pairs[2*t+1] = int32(t)
		}
		u2.err = b.Compute.CopyHtoD(g.rowOff, asBytes(pairs))
	}
	if u2.err == nil {
		u2.err = b.Compute.Sync()
	}
	if u2.err != nil {
		b.Free(arena)
		return nil, u2.err
	}
	if src := m.ExpertSource(); src != nil {
		g.SetExpertSource(src)
	}
	return g, nil
}

// place walks m's tensors in a fixed order through u.
func (g *Model) place(u *uploader, m *model.Model) {
	c := m.Cfg
	g.embed = u.mat(&m.Embed, "embedding")
	g.norm = u.vec(m.Norm)
	if sameMat(&m.Head, &m.Embed) {
		g.head = g.embed
	} else {
		g.head = u.mat(&m.Head, "lm_head")
	}
	ex := func(e *model.Expert, name string) *expert {
		if e == nil || e.Gate.Rows == 0 {
			return nil
		}
		return &expert{u.mat(&e.Gate, name+".gate"), u.mat(&e.Up, name+".up"), u.mat(&e.Down, name+".down")}
	}
	g.layers = make([]layer, c.L)
	for l := range m.Layers {
		ly, gl := &m.Layers[l], &g.layers[l]
		name := fmt.Sprintf("layer %d", l)
		gl.inNorm, gl.postNorm = u.vec(ly.InNorm), u.vec(ly.PostNorm)
		gl.q, gl.k, gl.v, gl.o = u.mat(&ly.Q, name+" q"), u.mat(&ly.K, name+" k"), u.mat(&ly.V, name+" v"), u.mat(&ly.O, name+" o")
		gl.qb, gl.kb, gl.vb = u.vec(ly.QB), u.vec(ly.KB), u.vec(ly.VB)
		gl.qnorm, gl.knorm = u.vec(ly.QNorm), u.vec(ly.KNorm)
		gl.moe, gl.pregateTarget = ly.MoE, ly.PregateTarget
		gl.dense = ex(ly.Dense, name+" mlp")
		if !ly.MoE {
			continue
		}
		gl.router, gl.pregate = u.mat(&ly.Router, name+" router"), u.mat(&ly.Pregate, name+" pregate")
		if len(ly.Experts) > 0 && ly.Experts[0].Gate.Rows > 0 {
			gl.experts = make([]expert, len(ly.Experts))
			for e := range ly.Experts {
				gl.experts[e] = *ex(&ly.Experts[e], fmt.Sprintf("%s expert %d", name, e))
			}
		}
		gl.shared = ex(ly.Shared, name+" shared expert")
		gl.sharedGate = u.mat(&ly.SharedGate, name+" shared gate")
	}
}

// sameMat reports whether a and b view the same weights (tied embeddings).
func sameMat(a, b *model.Mat) bool {
	switch {
	case len(a.BF16) > 0 && len(b.BF16) > 0:
		return &a.BF16[0] == &b.BF16[0]
	case len(a.F32) > 0 && len(b.F32) > 0:
		return &a.F32[0] == &b.F32[0]
	}
	return false
}

// WeightBytes is the device memory the uploaded weights take.
func (g *Model) WeightBytes() int64 { return g.bytes }

// Close frees the weights.
func (g *Model) Close() error { return g.b.Free(g.arena) }

// SetExpertSource makes the MoE layers take their routed experts from src,
// a scheduler over DeviceSlots (the lent weights' Addr is used); nil goes
// back to the uploaded experts. Not safe while a pass runs.
func (g *Model) SetExpertSource(src moe.ExpertSource) {
	g.src, g.prefetch, g.speculate = src, nil, nil
	if src == nil {
		return
	}
	g.prefetch, _ = src.(moe.Prefetcher)
	if sp, ok := src.(moe.Speculator); ok && sp.WantsPrediction() {
		g.speculate = g.specTargets
	}
	c, sp := g.Cfg, model.SpecFor(g.Cfg.Arch)
	g.expertName = make([][][3]string, c.L)
	for l := range c.L {
		if !c.MoE[l] {
			continue
		}
		g.expertName[l] = make([][3]string, c.E)
		for e := range c.E {
			a, b, d := sp.Expert(l, e)
			g.expertName[l][e] = [3]string{a, b, d}
		}
	}
}

// sourcedMats finds the gate, up and down tensors of layer l's expert e in
// w (lent in device memory), checking names, dtypes and shapes: the slots
// hold the experts file's bytes as stored, so they must already be in the
// compute type.
func (g *Model) sourcedMats(l, e int, w *moe.ExpertWeights) (expert, error) {
	if w.Addr == 0 {
		return expert{}, fmt.Errorf("gpu: layer %d expert %d: the source lends host memory; give its scheduler gpu.DeviceSlots as Memory", l, e)
	}
	ts, err := model.ExpertTensors(w, l, e, g.expertName[l][e], g.Cfg.ExpertFFN, g.Cfg.D)
	if err != nil {
		return expert{}, err
	}
	want := tensor.BF16
	if g.b.wt == cuda.F32 {
		want = tensor.F32
	}
	var out [3]mat
	for j, t := range ts {
		if t.DType != want || t.Offset%16 != 0 {
			return expert{}, fmt.Errorf("%w: offloaded tensor %s: %v at offset %d, want %v (the device's weights are %v; convert the checkpoint) at a 16-byte offset",
				model.ErrWeights, t.Name, t.DType, t.Offset, want, g.b.wt)
		}
		out[j] = mat{p: cuda.DevPtr(w.Addr).Add(t.Offset), rows: t.Shape[0], cols: t.Shape[1]}
	}
	return expert{out[0], out[1], out[2]}, nil
}

// asBytes views v's memory as bytes (for copies to and from the device).
func asBytes[T any](v []T) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v)*int(unsafe.Sizeof(v[0])))
}

// float32s reads little-endian float32s from b into dst.
func float32s(dst []float32, b []byte) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}
