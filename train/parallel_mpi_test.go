//go:build mpi

package train

import (
	"context"
	"fmt"
	"math"
	"os"
	"sync"
	"testing"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/offload"
)

// world is the MPI job's communicator, started once per process (InitMPI
// allows no second start) and closed by TestMain.
var world struct {
	once sync.Once
	c    dist.Comm
	err  error
}

func mpiWorld(t *testing.T) dist.Comm {
	world.once.Do(func() { world.c, world.err = dist.InitMPI() })
	if world.err != nil {
		t.Fatal(world.err)
	}
	return world.c
}

func TestMain(m *testing.M) {
	code := m.Run()
	if world.c != nil {
		world.c.Close()
	}
	os.Exit(code)
}

// The correctness gate on the MPI backend: run by make test-mpi as the
// ranks of an mpirun job (each process one rank). Each rank also trains
// the single-process reference itself (the model is tiny), and the losses
// of 20 steps, the routing's effect on them, and the final weights must
// agree within 1e-5 relative, as in TestParallelMatchesSingleProcess.
func TestParallelMPI(t *testing.T) {
	if !dist.UnderMPI() {
		t.Skip("not under mpirun (make test-mpi runs it)")
	}
	c := mpiWorld(t)
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

// Multi-task training on the MPI backend (make test-mpi, 2 and 4 ranks):
// the elastic plan's task groups on MPI's split communicators, with the
// embedding partitioned and the routed experts on the storage tiers, gives
// the single process's losses and weights within 1e-5.
func TestMultiTaskMPI(t *testing.T) {
	if !dist.UnderMPI() {
		t.Skip("not under mpirun (make test-mpi runs it)")
	}
	c := mpiWorld(t)
	o, corpora, ref, want := multiTaskReference(t)
	for _, tc := range []struct {
		name string
		mod  func(o *Options)
	}{
		{"elastic", func(o *Options) {}},
		{"elastic-embed-partition-storage", func(o *Options) {
			FD := o.Model.ExpertFFN * o.Model.D
			o.EmbedPartition = true
			o.Storage = &StorageOptions{Dir: t.TempDir(), SparseMem: int64(o.Model.E/c.Size()) * (offload.StateSlotBytes(3*FD*12) + offload.StateSlotBytes(3*FD*4))}
		}},
	} {
		o := o
		tc.mod(&o)
		tr, err := NewMultiTaskTrainer(o, corpora, c)
		if err != nil {
			t.Fatal(err)
		}
		var got []float64
		if err := trainSteps(tr, o.Steps, &got); err != nil {
			t.Fatalf("%s rank %d: %v", tc.name, c.Rank(), err)
		}
		for s := range got {
			if math.Abs(got[s]-want[s]) > 1e-5*math.Abs(want[s]) {
				t.Fatalf("%s rank %d step %d: loss %.9g, want %.9g", tc.name, c.Rank(), s+1, got[s], want[s])
			}
		}
		if tr.sparse == nil { // stored experts' weights are in their records: the losses cover them
			if err := checkWeights(tr, ref); err != nil {
				t.Fatalf("%s rank %d: %v", tc.name, c.Rank(), err)
			}
		}
		tr.Close()
		fmt.Fprintf(os.Stderr, "multi-task %s: rank %d of %d: %d steps equal to one process\n", tc.name, c.Rank(), c.Size(), o.Steps)
	}
}

// paramAtOK reports whether p is a stored expert tensor (false on a nil
// store: no storage).
func (s *sparseStore) paramAtOK(p *model.Param) ([3]int, bool) {
	if s == nil {
		return [3]int{}, false
	}
	at, ok := s.paramAt[p]
	return at, ok
}
