package model

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/moesys/moesys/dist"
)

// The partitioned embedding over W = 2, 4 ranks (with expert parallelism,
// each rank its rows of the batch) gives the whole table's losses and
// logits, each rank's columns of its gradient, and after three SGD steps
// (dense gradients summed over the ranks, the embedding's columns updated
// by their owner) its columns of the trained table.
func TestNetEmbedPartition(t *testing.T) {
	const T, perRank, seed, steps, lr = 5, 2, 11, 3, 0.1
	for _, W := range []int{2, 4} {
		t.Run(fmt.Sprintf("W%d", W), func(t *testing.T) {
			c := tinyConfig()
			B := W * perRank
			ids, tgt := taskBatch(c, B, T, seed)
			ref, err := NewNet(c, T)
			if err != nil {
				t.Fatal(err)
			}
			ref.Init(seed, 0.5)
			var wantLoss []float64
			var wantLogits, wantG [][]float32
			for range steps {
				wantLoss = append(wantLoss, fwd(t, ref, ids, tgt, B, T, 0).Total)
				wantLogits = append(wantLogits, append([]float32(nil), ref.Logits()...))
				ref.ZeroGrad()
				bwd(t, ref, 1)
				wantG = append(wantG, append([]float32(nil), ref.embed.G...))
				for _, p := range ref.Params {
					for i := range p.W {
						p.W[i] -= lr * p.G[i]
					}
				}
			}
			comms, err := dist.NewLocal(W)
			if err != nil {
				t.Fatal(err)
			}
			errs := make([]error, W)
			var wg sync.WaitGroup
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for r := range W {
				wg.Go(func() {
					errs[r] = embedRank(ctx, c, comms[r], ids, tgt, T, perRank, wantLoss, wantLogits, wantG, ref.embed.W)
					if errs[r] != nil {
						cancel() // the other ranks' collectives fail too
					}
				})
			}
			wg.Wait()
			for r, err := range errs {
				if err != nil {
					t.Errorf("rank %d: %v", r, err)
				}
			}
		})
	}
	c := tinyConfig()
	c.TieEmbeddings = true
	n, err := NewNet(c, 4)
	if err != nil {
		t.Fatal(err)
	}
	comms, _ := dist.NewLocal(1)
	if err := n.SetEmbedPartition(comms[0]); err == nil {
		t.Fatal("tied embeddings partitioned")
	}
}

// embedRank is one rank of TestNetEmbedPartition.
func embedRank(ctx context.Context, c *Config, comm dist.Comm, ids, tgt []int32, T, rows int, wantLoss []float64, wantLogits, wantG [][]float32, wantW []float32) error {
	const seed, lr = 11, 0.1
	r := comm.Rank()
	n, err := NewNet(c, T)
	if err != nil {
		return err
	}
	n.Init(seed, 0.5)
	if err := n.SetExpertParallel(comm); err != nil {
		return err
	}
	if err := n.SetEmbedPartition(comm); err != nil {
		return err
	}
	on, first, Dp := n.EmbedPartitioned()
	D, V := c.D, c.V
	if !on || len(n.embed.W) != V*D/comm.Size() || n.embed.Shape[1] != Dp {
		return fmt.Errorf("the embedding holds %d values (%v), want (%d, %d)", len(n.embed.W), n.embed.Shape, V, D/comm.Size())
	}
	lo, hi := r*rows*T, (r+1)*rows*T
	// Row blocking and float32 cross-rank sums differ from one process's.
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-4*math.Abs(b)+1e-5 }
	for s := range wantLoss {
		loss, err := n.Forward(ctx, ids[lo:hi], tgt[lo:hi], rows, T, 0)
		if err != nil {
			return err
		}
		if !near(loss.Total, wantLoss[s]) {
			return fmt.Errorf("step %d: loss %g, want %g", s, loss.Total, wantLoss[s])
		}
		for i, v := range n.Logits() {
			if w := wantLogits[s][lo*V+i]; !near(float64(v), float64(w)) {
				return fmt.Errorf("step %d: logit %d = %g, want %g", s, i, v, w)
			}
		}
		n.ZeroGrad()
		if err := n.Backward(ctx, 1); err != nil {
			return err
		}
		for v := range V {
			for j := range Dp {
				if got, want := n.embed.G[v*Dp+j], wantG[s][v*D+first+j]; !near(float64(got), float64(want)) {
					return fmt.Errorf("step %d: embedding gradient [%d, %d] = %g, want %g", s, v, first+j, got, want)
				}
			}
		}
		for _, p := range n.Params {
			expert, local := n.ExpertParam(p)
			if !expert {
				if err := comm.AllReduce(ctx, p.G); err != nil {
					return err
				}
			} else if !local {
				continue
			}
			for i := range p.W {
				p.W[i] -= lr * p.G[i]
			}
		}
	}
	for v := range V {
		for j := range Dp {
			if got, want := n.embed.W[v*Dp+j], wantW[v*D+first+j]; !near(float64(got), float64(want)) {
				return fmt.Errorf("trained embedding [%d, %d] = %g, want %g", v, first+j, got, want)
			}
		}
	}
	return nil
}
