//go:build mpi

package train

import (
	"context"
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/offload"
)

// The correctness gate on the MPI backend: run by make test-mpi as the
// ranks of an mpirun job (each process one rank). Each rank also trains
// the single-process reference itself (the model is tiny), and the losses
// of 20 steps, the routing's effect on them, and the final weights must
// agree within 1e-5 relative, as in TestParallelMatchesSingleProcess.
func TestParallelMPI(t *testing.T) {
	if !dist.UnderMPI() {
		t.Skip("not under mpirun (make test-mpi runs it)")
	}
	c, err := dist.InitMPI()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	corpus := testCorpus(t)
	for _, tc := range []struct {
		name string
		mod  func(o *Options)
	}{
		{"plain", func(o *Options) {}},
		{"pregate-capacity-hierarchical", func(o *Options) {
			o.Model.PregateDist, o.Model.Capacity, o.AllToAll = 1, 0.75, "hierarchical"
			o.RanksPerNode = 1 // 2 ranks: 2 nodes of 1; 4 ranks: 2 nodes of 2 (below)
		}},
		// The dense parameters sharded (zero.go): gathers and
		// reduce-scatters on MPI's split communicator beside the exchanges.
		{"shard-dense-pregate", func(o *Options) { o.ShardDense, o.Model.PregateDist = true, 1 }},
		// The embedding split by columns (embed.go): its all-to-alls on
		// MPI, its slices gathered for the check.
		{"embed-partition-clip", func(o *Options) { o.EmbedPartition, o.Clip = true, 0.05 }},
		// Both paths of 2D prefetch: the dense parameters sharded and each
		// rank's experts on the storage tiers (a cache of one layer's).
		{"storage-shard-dense", func(o *Options) {
			o.ShardDense = true
			FD := o.Model.ExpertFFN * o.Model.D
			slot := offload.StateSlotBytes(3*FD*12) + offload.StateSlotBytes(3*FD*4)
			o.Storage = &StorageOptions{Dir: t.TempDir(), SparseMem: int64(o.Model.E/c.Size()) * slot}
		}},
	} {
		o := parallelOptions(tc.mod)
		if o.RanksPerNode > 0 && c.Size() >= 4 {
			o.RanksPerNode = 2
		}
		one := o
		one.ShardDense, one.EmbedPartition, one.Storage = false, false, nil
		ref, err := NewTrainer(one, corpus)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := NewParallelTrainer(o, corpus, c)
		if err != nil {
			t.Fatal(err)
		}
		for s := range o.Steps {
			want := mustStep(t, ref)
			got, err := tr.TrainStep(context.Background())
			if err != nil {
				t.Fatalf("%s rank %d: %v", tc.name, c.Rank(), err)
			}
			if math.Abs(got.Loss-want.Loss) > 1e-5*math.Abs(want.Loss) || got.Tokens != want.Tokens {
				t.Fatalf("%s rank %d step %d: loss %.9g (%d tokens), want %.9g (%d)", tc.name, c.Rank(), s+1, got.Loss, got.Tokens, want.Loss, want.Tokens)
			}
		}
		whole := map[string][]float32{} // the sharded dense tensors, gathered
		if o.ShardDense {
			full, err := tr.par.zero.gatherAll(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range full {
				whole[f.p.Name] = f.w
			}
		}
		if o.EmbedPartition {
			f, err := tr.embedWhole(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			whole[f.name] = f.w
		}
		worst, what := 0.0, ""
		for _, rp := range ref.Net.Params {
			p := tr.Net.Param(rp.Name)
			expert, _ := ref.Net.ExpertParam(rp)
			if p == nil && expert {
				continue // another rank's expert: this rank does not hold it
			}
			if p == nil {
				t.Fatalf("%s rank %d: no dense tensor %s", tc.name, c.Rank(), rp.Name)
			}
			w, gathered := whole[p.Name]
			if !gathered {
				w = p.W
			}
			if _, stored := tr.sparse.paramAtOK(p); stored { // from its record
				if w, _, err = tr.sparse.working(context.Background(), p); err != nil {
					t.Fatal(err)
				}
			}
			if len(w) != len(rp.W) {
				t.Fatalf("%s rank %d: %s has %d weights, want %d", tc.name, c.Rank(), p.Name, len(w), len(rp.W))
			}
			var d2, w2 float64
			for j, v := range w {
				d := float64(v) - float64(rp.W[j])
				d2, w2 = d2+d*d, w2+float64(rp.W[j])*float64(rp.W[j])
			}
			if rel := math.Sqrt(d2 / w2); rel > worst {
				worst, what = rel, p.Name
			}
		}
		if worst > 1e-5 {
			t.Fatalf("%s rank %d: %s differs by %.3g relative, want <= 1e-5", tc.name, c.Rank(), what, worst)
		}
		fmt.Fprintf(os.Stderr, "%s: rank %d of %d: 20 steps equal to one process (largest weight difference %.3g)\n", tc.name, c.Rank(), c.Size(), worst)
	}
}
