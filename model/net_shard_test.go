package model

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/moesys/moesys/dist"
)

// NewNetShard holds the dense tensors and its rank's experts only, with
// NewNet's values after the same Init; the fused expert buffers are 1/W
// of the whole; LoadNetShard reads the same tensors from a checkpoint.
func TestNetShard(t *testing.T) {
	c := tinyConfig()
	full, err := NewNet(c, 8)
	if err != nil {
		t.Fatal(err)
	}
	full.Init(3, 0.1)
	dir := t.TempDir()
	if err := full.SaveWeights(dir, false, nil); err != nil {
		t.Fatal(err)
	}
	const W = 2
	El := c.E / W
	for r := range W {
		sh, err := NewNetShard(c, 8, r, W)
		if err != nil {
			t.Fatal(err)
		}
		sh.Init(3, 0.1)
		loaded, err := LoadNetShard(dir, 8, r, W)
		if err != nil {
			t.Fatal(err)
		}
		if !sh.Sharded() || full.Sharded() {
			t.Fatal("Sharded() is wrong")
		}
		held := 0
		for _, p := range full.Params {
			q, l := sh.Param(p.Name), loaded.Param(p.Name)
			expert, _ := full.ExpertParam(p)
			mine := !expert || full.expertOf[p]/El == r
			if (q != nil) != mine || (l != nil) != mine {
				t.Fatalf("rank %d: %s held %v (loaded %v), want %v", r, p.Name, q != nil, l != nil, mine)
			}
			if !mine {
				continue
			}
			held++
			if !slices.Equal(q.W, p.W) || !slices.Equal(l.W, p.W) {
				t.Fatalf("rank %d: %s differs from NewNet's after the same Init (or from the checkpoint)", r, p.Name)
			}
		}
		if held != len(sh.Params) {
			t.Fatalf("rank %d: %d params, want %d", r, len(sh.Params), held)
		}
		for _, l := range c.MoELayers() {
			if got, want := len(sh.layers[l].w13.W), len(full.layers[l].w13.W)/W; got != want {
				t.Fatalf("layer %d: w13 holds %d values, want %d", l, got, want)
			}
		}
	}
}

func TestNetShardErrors(t *testing.T) {
	c := tinyConfig()
	if _, err := NewNetShard(c, 8, 0, 3); !errors.Is(err, ErrConfig) {
		t.Fatalf("%d experts over 3 ranks: %v", c.E, err)
	}
	sh, err := NewNetShard(c, 8, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int32, 8)
	if _, err := sh.Forward(context.Background(), ids, ids, 1, 8, 0); !errors.Is(err, ErrConfig) {
		t.Fatalf("Forward without expert parallelism: %v", err)
	}
	if err := sh.SaveWeights(t.TempDir(), false, nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("SaveWeights of a shard: %v", err)
	}
	comms, err := dist.NewLocal(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := sh.SetExpertParallel(comms[0]); !errors.Is(err, ErrConfig) { // rank 0 owns other experts
		t.Fatalf("SetExpertParallel with another rank's communicator: %v", err)
	}
	if err := sh.SetExpertParallel(comms[1]); err != nil {
		t.Fatal(err)
	}
}
