package model

import (
	"context"
	"fmt"
	"time"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/kernel"
)

// Embedding partition (SE-MoE): the embedding table (V, D) split along the
// hidden dimension over the data-parallel ranks, rank r holding columns
// [r*D/W, (r+1)*D/W) as a (V, D/W) table. Forward: the ranks exchange their
// token ids (every rank gets every rank's), each looks up its columns for
// all of them and sends each rank its tokens' partial rows back; a rank
// lays the W partial rows side by side into its (N, D) input. Backward is
// one all-to-all: each rank sends column block q of its (N, D) input
// gradient to rank q, which accumulates every rank's tokens into its (V,
// D/W) gradient. That gradient is then whole (every token of the global
// batch), so it needs no data-parallel sum.

// embedPart is the state of a partitioned embedding.
type embedPart struct {
	comm     dist.Comm
	W, r, Dp int     // ranks, this rank, columns per rank (D/W)
	counts   []int32 // (W) tokens per rank, this pass
	cnt      []int   // (W) AllToAllV counts scratch
	cnt2     []int
	sendIDs  []int32   // (W*N) own ids, once per rank
	allIDs   []int32   // (sum N) every rank's ids, rank order
	part     []float32 // (sum N, Dp) this rank's columns of every token
	recv     []float32 // (W, N, Dp) partial rows received, by source rank
	busy     time.Duration
}

// SetEmbedPartition splits the embedding over c's ranks along the hidden
// dimension: this Net keeps columns [r*D/W, (r+1)*D/W) of the table (its
// embedding Param becomes that (V, D/W) slice, initialised or loaded
// weights kept) and Forward and Backward exchange ids, partial rows and
// gradients with c (a collective in every pass: all ranks run passes
// together). Call after Init or LoadWeights, before the first Forward.
// ExpertParam then reports the embedding as a local shard: its gradient
// is this rank's columns of the global batch's gradient. A model whose
// head is tied to the embedding (Cfg.TieEmbeddings) is refused: the head
// needs the whole table on every rank.
func (n *Net) SetEmbedPartition(c dist.Comm) error {
	cfg := n.Cfg
	W, r := c.Size(), c.Rank()
	switch {
	case n.embedPart != nil:
		return fmt.Errorf("model: the embedding is already partitioned")
	case cfg.TieEmbeddings:
		return fmt.Errorf("%w: the embedding is tied to the LM head (tie_word_embeddings), which needs the whole table on every rank; embedding partition needs an untied head", ErrConfig)
	case cfg.D%W != 0:
		return fmt.Errorf("%w: hidden size %d does not split over %d ranks", ErrConfig, cfg.D, W)
	case n.embed.B != nil:
		return fmt.Errorf("%w: embedding partition with bf16 products", ErrConfig)
	}
	V, D, Dp := cfg.V, cfg.D, cfg.D/W
	w := make([]float32, V*Dp)
	for v := range V {
		copy(w[v*Dp:(v+1)*Dp], n.embed.W[v*D+r*Dp:v*D+(r+1)*Dp])
	}
	n.embed.W, n.embed.G, n.embed.Shape = w, make([]float32, V*Dp), []int{V, Dp}
	n.embedPart = &embedPart{comm: c, W: W, r: r, Dp: Dp, counts: make([]int32, W), cnt: make([]int, W), cnt2: make([]int, W)}
	return nil
}

// EmbedPartitioned reports whether the embedding is partitioned, and the
// columns this rank holds.
func (n *Net) EmbedPartitioned() (on bool, first, cols int) {
	if p := n.embedPart; p != nil {
		return true, p.r * p.Dp, p.Dp
	}
	return false, 0, n.Cfg.D
}

// EmbedBytes returns the bytes this Net holds for the embedding: its
// weights and gradients, plus the partition's exchange buffers.
func (n *Net) EmbedBytes() int {
	b := 4 * (len(n.embed.W) + len(n.embed.G))
	if p := n.embedPart; p != nil {
		b += 4 * (cap(p.sendIDs) + cap(p.allIDs) + cap(p.part) + cap(p.recv))
	}
	return b
}

// embedForward fills x (N, D) with the embeddings of ids (N) from the
// partitioned table.
func (n *Net) embedForward(ctx context.Context, x []float32, ids []int32, N int) error {
	p, D := n.embedPart, n.Cfg.D
	defer func(t time.Time) { p.busy += time.Since(t) }(time.Now())
	W, Dp := p.W, p.Dp
	if err := dist.AllGatherOf(ctx, p.comm, []int32{int32(N)}, p.counts); err != nil {
		return fmt.Errorf("model: embedding token counts: %w", err)
	}
	total := 0
	for _, c := range p.counts {
		total += int(c)
	}
	// Ids: this rank's to every rank.
	p.sendIDs, p.allIDs = growI(p.sendIDs, W*N), growI(p.allIDs, total)
	for q := range W {
		copy(p.sendIDs[q*N:], ids[:N])
		p.cnt[q], p.cnt2[q] = N, int(p.counts[q])
	}
	if err := dist.AllToAllVOf(ctx, p.comm, p.sendIDs, p.cnt, p.allIDs, p.cnt2); err != nil {
		return fmt.Errorf("model: embedding ids: %w", err)
	}
	// This rank's columns of every token, then each rank its tokens'.
	p.part = growF(p.part, total*Dp)
	kernel.Embedding(p.part, n.embed.W, p.allIDs, total, Dp)
	p.recv = growF(p.recv, W*N*Dp)
	for q := range W {
		p.cnt[q], p.cnt2[q] = int(p.counts[q])*Dp, N*Dp
	}
	if err := dist.AllToAllVOf(ctx, p.comm, p.part, p.cnt, p.recv, p.cnt2); err != nil {
		return fmt.Errorf("model: embedding rows: %w", err)
	}
	for q := range W {
		src := p.recv[q*N*Dp:]
		for t := range N {
			copy(x[t*D+q*Dp:t*D+(q+1)*Dp], src[t*Dp:(t+1)*Dp])
		}
	}
	return nil
}

// embedBackward sends column block q of dx (N, D) to rank q and
// accumulates every rank's tokens' gradients into this rank's columns.
func (n *Net) embedBackward(ctx context.Context, dx []float32, N int) error {
	p, D := n.embedPart, n.Cfg.D
	defer func(t time.Time) { p.busy += time.Since(t) }(time.Now())
	W, Dp := p.W, p.Dp
	for q := range W {
		dst := p.recv[q*N*Dp:]
		for t := range N {
			copy(dst[t*Dp:(t+1)*Dp], dx[t*D+q*Dp:t*D+(q+1)*Dp])
		}
		p.cnt[q], p.cnt2[q] = N*Dp, int(p.counts[q])*Dp
	}
	total := len(p.allIDs)
	if err := dist.AllToAllVOf(ctx, p.comm, p.recv[:W*N*Dp], p.cnt, p.part[:total*Dp], p.cnt2); err != nil {
		return fmt.Errorf("model: embedding gradients: %w", err)
	}
	kernel.EmbeddingBackward(n.embed.G, p.part[:total*Dp], p.allIDs, total, Dp)
	return nil
}
