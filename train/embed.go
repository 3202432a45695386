package train

import (
	"context"
	"fmt"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/model"
)

// Embedding partition (Options.EmbedPartition): each rank's Net holds
// columns [r*D/W, (r+1)*D/W) of the embedding as a (V, D/W) Param, which
// the Trainer treats as an owned parameter (model.Net.ExpertParam reports
// it so): its gradient is this rank's columns of the global batch's, so it
// is not all-reduced; the gradient norm counts each rank's slice once; the
// rank's AdamW keeps the slice's moments. Checkpoints hold the whole table
// and its moments (embedWhole gathers them by columns), so a checkpoint
// resumes at any W, with or without the partition (embedColumns takes a
// rank's columns back).

// embedIndex returns the index in t.params of the partitioned embedding's
// slice, or -1 when the embedding is not partitioned.
func (t *Trainer) embedIndex() int {
	if on, _, _ := t.Net.EmbedPartitioned(); !on {
		return -1
	}
	name := model.SpecFor(t.Net.Cfg.Arch).Embed()
	for i, p := range t.params {
		if p.Name == name {
			return i
		}
	}
	return -1
}

// embedFull is the whole (V, D) embedding state gathered from every rank's
// columns: weights, AdamW moments and, in bf16 runs, the fp32 masters.
type embedFull struct {
	name            string
	shape           []int
	w, m, v, master []float32
}

// embedWhole gathers the partitioned embedding's whole state from every
// rank's columns: a collective over the run's ranks; every rank gets it.
func (t *Trainer) embedWhole(ctx context.Context) (*embedFull, error) {
	i := t.embedIndex()
	if i < 0 {
		return nil, fmt.Errorf("train: the embedding is not partitioned")
	}
	c, p := t.par.comm, t.params[i]
	V, D := t.Net.Cfg.V, t.Net.Cfg.D
	f := &embedFull{name: p.Name, shape: []int{V, D}}
	gather := func(part []float32) ([]float32, error) {
		W := c.Size()
		Dp := D / W
		all := make([]float32, W*V*Dp) // rank q's (V, Dp) slice at q*V*Dp
		if err := dist.AllGatherOf(ctx, c, part, all); err != nil {
			return nil, fmt.Errorf("train: gather the embedding's columns: %w", err)
		}
		whole := make([]float32, V*D)
		for q := range W {
			for v := range V {
				copy(whole[v*D+q*Dp:v*D+(q+1)*Dp], all[(q*V+v)*Dp:(q*V+v+1)*Dp])
			}
		}
		return whole, nil
	}
	var err error
	if f.w, err = gather(t.Net.Params[t.idx[i]].W); err != nil {
		return nil, err
	}
	if f.m, err = gather(p.M); err != nil {
		return nil, err
	}
	if f.v, err = gather(p.V); err != nil {
		return nil, err
	}
	if t.master != nil {
		if f.master, err = gather(t.master[i]); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// embedColumns copies this rank's columns of a whole (V, D) embedding
// tensor into dst (V, D/W).
func (t *Trainer) embedColumns(dst, whole []float32) {
	_, first, cols := t.Net.EmbedPartitioned()
	D := t.Net.Cfg.D
	for v := range t.Net.Cfg.V {
		copy(dst[v*cols:(v+1)*cols], whole[v*D+first:v*D+first+cols])
	}
}
