package train

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/offload"
)

// taskCorpora returns n small corpora of different text, one per task.
func taskCorpora(t *testing.T, n int) []*Corpus {
	t.Helper()
	var cs []*Corpus
	for k := range n {
		var sb strings.Builder
		for i := 0; sb.Len() < 20000; i++ {
			fmt.Fprintf(&sb, "task %d line %d: %s\n", k, i, strings.Repeat(string(rune('a'+k)), 1+(i*(k+1))%9))
		}
		path := filepath.Join(t.TempDir(), "task.txt")
		if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := LoadCorpus(context.Background(), DataSpec{Path: path, ValFraction: 0.1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	return cs
}

// multiTaskOptions is the paper's 512/256/128/128 example scaled to 4/2/1/1
// sequences, on the test model.
// multiTaskReference trains the 4-task, 6-step run of multiTaskOptions in
// one process: the reference the parallel runs are held to, with its
// per-step losses.
func multiTaskReference(t *testing.T) (Options, []*Corpus, *Trainer, []float64) {
	t.Helper()
	corpora := taskCorpora(t, 4)
	o := multiTaskOptions(6)
	ref, err := NewMultiTaskTrainer(o, corpora, nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []float64
	if err := trainSteps(ref, o.Steps, &want); err != nil {
		t.Fatal(err)
	}
	return o, corpora, ref, want
}

func multiTaskOptions(steps int) Options {
	o := testOptions(0, false)
	o.Steps, o.Warmup = steps, 2
	o.MultiTask([]TaskSpec{{Name: "a", Batch: 4}, {Name: "b", Batch: 2}, {Name: "c", Batch: 1}, {Name: "d", Batch: 1}}, 12)
	return o
}

// checkWeights compares every Param a rank trains with the reference
// trainer's, within 1e-5 relative to the tensor's scale.
func checkWeights(got, ref *Trainer) error {
	for _, p := range got.Net.Params {
		if expert, local := got.Net.ExpertParam(p); expert && !local {
			continue
		}
		q := ref.Net.Param(p.Name)
		want := q.W
		if on, first, cols := got.Net.EmbedPartitioned(); on && p.Name == q.Name && len(p.W) != len(q.W) {
			// This rank's columns of the embedding.
			D := ref.Net.Cfg.D
			want = make([]float32, 0, len(p.W))
			for v := range len(q.W) / D {
				want = append(want, q.W[v*D+first:v*D+first+cols]...)
			}
		}
		if len(want) != len(p.W) {
			return fmt.Errorf("%s: %d weights, want %d", p.Name, len(p.W), len(want))
		}
		var scale, worst float64
		for i := range p.W {
			scale = max(scale, math.Abs(float64(want[i])))
			worst = max(worst, math.Abs(float64(p.W[i]-want[i])))
		}
		if worst > 1e-5*scale+1e-7 {
			return fmt.Errorf("%s: differs by %g (scale %g)", p.Name, worst, scale)
		}
	}
	return nil
}

// Multi-task training on W ranks, under the elastic plan (W = 1, 2, 4) and
// one rank per task, gives the single process's losses and weights: the
// backbone's gradients summed over all ranks, each task expert's over its
// task's ranks are the single process's gradients.
func TestMultiTaskMatchesSingleProcess(t *testing.T) {
	o, corpora, ref, want := multiTaskReference(t)
	refVal, err := ref.Evaluate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		W         int
		placement string
		embed     bool // the embedding partitioned over the ranks
	}{{1, "elastic", false}, {2, "elastic", false}, {4, "elastic", false}, {4, "one-per-task", false}, {2, "elastic", true}, {4, "one-per-task", true}} {
		name := fmt.Sprintf("%s/W%d", tc.placement, tc.W)
		if tc.embed {
			name += "/embed-partition"
		}
		t.Run(name, func(t *testing.T) {
			o := o
			o.TaskPlacement, o.EmbedPartition = tc.placement, tc.embed
			onRanks(t, tc.W, func(r int, c dist.Comm) error {
				tr, err := NewMultiTaskTrainer(o, corpora, c)
				if err != nil {
					return err
				}
				var got []float64
				if err := trainSteps(tr, o.Steps, &got); err != nil {
					return err
				}
				for s := range got {
					if math.Abs(got[s]-want[s]) > 1e-5*math.Abs(want[s]) {
						return fmt.Errorf("step %d: loss %.9g, want %.9g", s+1, got[s], want[s])
					}
				}
				val, err := tr.Evaluate(context.Background())
				if err != nil {
					return err
				}
				if math.Abs(val-refVal) > 1e-5*refVal {
					return fmt.Errorf("validation loss %.9g, want %.9g", val, refVal)
				}
				return checkWeights(tr, ref)
			})
		})
	}
}

// A multi-task run stopped on 4 ranks (with the embedding partitioned
// and the routed experts on the storage tiers) continues on 2 (downscale)
// and then on 1 from their checkpoints, resharded, as the single process
// does.
func TestMultiTaskRestartOtherRanks(t *testing.T) {
	o, corpora, ref, want := multiTaskReference(t)
	dir := t.TempDir()
	var got []float64
	o4 := o
	FD := o.Model.ExpertFFN * o.Model.D
	o4.EmbedPartition = true
	o4.Storage = &StorageOptions{Dir: t.TempDir(), SparseMem: offload.StateSlotBytes(3*FD*12) + offload.StateSlotBytes(3*FD*4)}
	onRanks(t, 4, func(r int, c dist.Comm) error {
		tr, err := NewMultiTaskTrainer(o4, corpora, c)
		if err != nil {
			return err
		}
		defer tr.Close()
		var l []float64
		if err := trainSteps(tr, 2, &l); err != nil {
			return err
		}
		if r == 0 {
			got = append(got, l...)
		}
		_, err = tr.Save(dir, 0)
		return err
	})
	onRanks(t, 2, func(r int, c dist.Comm) error {
		tr, err := ResumeMultiTask(filepath.Join(dir, CheckpointName(2)), o, corpora, c)
		if err != nil {
			return err
		}
		var l []float64
		if err := trainSteps(tr, 2, &l); err != nil {
			return err
		}
		if r == 0 {
			got = append(got, l...)
		}
		_, err = tr.Save(dir, 0)
		return err
	})
	tr, err := ResumeMultiTask(filepath.Join(dir, CheckpointName(4)), o, corpora, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := trainSteps(tr, 2, &got); err != nil {
		t.Fatal(err)
	}
	for s := range want {
		if math.Abs(got[s]-want[s]) > 1e-5*math.Abs(want[s]) {
			t.Errorf("step %d: loss %.9g, want %.9g", s+1, got[s], want[s])
		}
	}
	if err := checkWeights(tr, ref); err != nil {
		t.Fatal(err)
	}
	// Other tasks than the checkpoint's are refused.
	o2 := o
	o2.MultiTask(append(o.Tasks[:3:3], TaskSpec{Name: "e", Batch: 1}), 12)
	if _, err := ResumeMultiTask(filepath.Join(dir, CheckpointName(4)), o2, corpora, nil); err == nil {
		t.Fatal("resumed with other tasks")
	}
}
