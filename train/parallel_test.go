package train

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/safetensors"
)

// onRanks runs f on W in-process ranks at once and fails the test on any
// rank's error.
func onRanks(t *testing.T, W int, f func(r int, c dist.Comm) error) {
	t.Helper()
	comms, err := dist.NewLocal(W)
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, W)
	var wg sync.WaitGroup
	for r := range W {
		wg.Go(func() { errs[r] = f(r, comms[r]) })
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
}

// trainSteps runs n steps of tr, appending their losses.
func trainSteps(tr *Trainer, n int, losses *[]float64) error {
	for range n {
		s, err := tr.TrainStep(context.Background())
		if err != nil {
			return err
		}
		*losses = append(*losses, s.Loss)
	}
	return nil
}

// parallelOptions is testOptions with a global batch every W divides.
func parallelOptions(mod func(o *Options)) Options {
	o := testOptions(0, false)
	o.Batch, o.Steps, o.Warmup = 4, 20, 2
	mod(&o)
	return o
}

// The correctness gate of distributed training: W = 1, 2, 4 in-process
// ranks give, over 20 steps, the single process's losses and routing, and
// its final weights, within 1e-5 relative (the cross-rank sums of the dense
// gradients and losses are float32, added in another order than one
// process's).
func TestParallelMatchesSingleProcess(t *testing.T) {
	corpus := testCorpus(t)
	for _, tc := range []struct {
		name string
		mod  func(o *Options)
	}{
		{"plain", func(o *Options) {}},
		// Two-level exchange (nodes of 2 ranks), small fused buckets.
		{"hierarchical", func(o *Options) { o.AllToAll, o.RanksPerNode, o.BucketBytes = "hierarchical", 2, 4096 }},
		{"pregate-capacity", func(o *Options) { o.Model.PregateDist = 1; o.Model.Capacity = 0.75 }},
		{"shared-recompute-top1", func(o *Options) {
			o.Model.SharedFFN, o.Model.K, o.Recompute, o.Clip = 8, 1, true, 0.05
		}},
		// ZeRO-3 sharding of the dense parameters (zero.go): two
		// micro-batches (a reduce-scatter each), then pre-gates, a shared
		// expert, recomputation and clipping. (bf16 is held to the
		// unsharded parallel run instead, bit for bit: TestShardDense;
		// against one process its roundings amplify the cross-rank sums'
		// order beyond 1e-5, sharded or not.)
		{"shard-dense", func(o *Options) { o.ShardDense = true }},
		{"shard-dense-pregate-shared-recompute", func(o *Options) {
			o.ShardDense, o.Model.PregateDist, o.Model.SharedFFN, o.Recompute, o.Clip = true, 1, 8, true, 0.05
		}},
		// The embedding split by columns over the ranks (embed.go): two
		// micro-batches (its gradient accumulates without an all-reduce),
		// then clipping (its slices counted once in the norm).
		{"embed-partition", func(o *Options) { o.EmbedPartition, o.Accum = true, 2 }},
		{"embed-partition-clip-pregate", func(o *Options) { o.EmbedPartition, o.Clip, o.Model.PregateDist = true, 0.05, 1 }},
	} {
		o := parallelOptions(tc.mod)
		one := o
		one.ShardDense, one.EmbedPartition = false, false // one process has nothing to split over
		ref, err := NewTrainer(one, corpus)
		if err != nil {
			t.Fatal(err)
		}
		moeLayers := o.Model.MoELayers()
		var want []StepResult
		var wantIDs [][][]int32 // per step, per MoE layer: the last micro-batch's routing
		for range o.Steps {
			want = append(want, mustStep(t, ref))
			var ids [][]int32
			for _, l := range moeLayers {
				ids = append(ids, slices.Clone(ref.Net.RoutingIDs(l)))
			}
			wantIDs = append(wantIDs, ids)
		}
		refVal, err := ref.Evaluate(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, W := range []int{1, 2, 4} {
			t.Run(fmt.Sprintf("%s/W%d", tc.name, W), func(t *testing.T) {
				near := func(what string, got, want float64) error {
					if math.Abs(got-want) > 1e-5*math.Abs(want)+1e-7 {
						return fmt.Errorf("%s = %.9g, want %.9g", what, got, want)
					}
					return nil
				}
				trainers := make([]*Trainer, W)
				whole := make([]map[string][]float32, W) // sharded dense tensors or the partitioned embedding gathered, per rank
				onRanks(t, W, func(r int, c dist.Comm) error {
					tr, err := NewParallelTrainer(o, corpus, c)
					if err != nil {
						return err
					}
					trainers[r] = tr
					if on, _, cols := tr.Net.EmbedPartitioned(); o.EmbedPartition && (!on || cols != o.Model.D/W) {
						return fmt.Errorf("embedding partitioned %v, %d columns, want %d", on, cols, o.Model.D/W)
					}
					for s := range o.Steps {
						got, err := tr.TrainStep(context.Background())
						if err != nil {
							return err
						}
						w := want[s]
						for _, x := range []struct {
							what      string
							got, want float64
						}{{"loss", got.Loss, w.Loss}, {"aux", got.Aux, w.Aux}, {"grad norm", got.GradNorm, w.GradNorm}} {
							if err := near(fmt.Sprintf("step %d %s", s+1, x.what), x.got, x.want); err != nil {
								return err
							}
						}
						if got.Tokens != w.Tokens {
							return fmt.Errorf("step %d: %d tokens, want %d", s+1, got.Tokens, w.Tokens)
						}
						// The communication figures: something was exchanged
						// and reduced, within the step's time.
						if got.CommSeconds <= 0 || got.CommSeconds > got.Seconds || got.ReduceSeconds <= 0 {
							return fmt.Errorf("step %d: communication %.3gs, all-reduce %.3gs of a %.3gs step", s+1, got.CommSeconds, got.ReduceSeconds, got.Seconds)
						}
						if d := got.Dense; o.ShardDense && (d == nil || d.ExposedSeconds <= 0 || d.ExposedSeconds > got.CommSeconds || d.BusySeconds <= 0 || (W > 1) != (d.Bytes > 0)) {
							return fmt.Errorf("step %d: sharded dense figures %+v of a %.3gs step", s+1, d, got.Seconds)
						}
						rows := o.Batch / W * o.Seq * o.Model.K
						for i, l := range moeLayers {
							all := wantIDs[s][i]
							if all == nil {
								continue // recomputation keeps no routing
							}
							if mine := tr.Net.RoutingIDs(l); !slices.Equal(mine, all[r*rows:(r+1)*rows]) {
								return fmt.Errorf("step %d layer %d: routing differs from the single process's", s+1, l)
							}
						}
					}
					v, err := tr.Evaluate(context.Background())
					if err != nil {
						return err
					}
					if o.ShardDense {
						full, err := tr.par.zero.gatherAll(context.Background())
						if err != nil {
							return err
						}
						whole[r] = map[string][]float32{}
						for _, f := range full {
							whole[r][f.p.Name] = f.w
						}
					}
					if o.EmbedPartition {
						f, err := tr.embedWhole(context.Background())
						if err != nil {
							return err
						}
						whole[r] = map[string][]float32{f.name: f.w}
					}
					return near("validation loss", v, refVal)
				})
				// Final weights: dense ones on every rank, each expert on its
				// owner, each tensor within 1e-5 of the single process's in
				// relative L2 norm. (Elementwise, a weight whose gradient
				// nearly cancels can differ more: AdamW's update divides the
				// gradient by its own running magnitude, so the rounding of a
				// sum that cancels moves it by up to the learning rate.)
				worst, worstName := 0.0, ""
				// Each rank holds the dense tensors and its own experts only
				// (every expert on exactly one rank).
				for _, rp := range ref.Net.Params {
					holders := 0
					for r, tr := range trainers {
						p := tr.Net.Param(rp.Name)
						if p == nil {
							continue
						}
						holders++
						w, gathered := whole[r][p.Name]
						if !gathered {
							w = p.W
						}
						if expert, _ := tr.Net.ExpertParam(p); expert && !gathered && holders > 1 {
							t.Fatalf("expert tensor %s is on several ranks", rp.Name)
						}
						if len(w) != len(rp.W) {
							t.Fatalf("rank %d %s: %d weights, want %d", r, p.Name, len(w), len(rp.W))
						}
						var d2, w2 float64
						for j, v := range w {
							d := float64(v) - float64(rp.W[j])
							d2 += d * d
							w2 += float64(rp.W[j]) * float64(rp.W[j])
						}
						rel := math.Sqrt(d2 / w2)
						if rel > worst {
							worst, worstName = rel, fmt.Sprintf("rank %d %s", r, p.Name)
						}
					}
					if expert, _ := ref.Net.ExpertParam(rp); (expert && holders != 1) || (!expert && holders != W) {
						t.Fatalf("%s is on %d of %d ranks", rp.Name, holders, W)
					}
				}
				t.Logf("largest relative weight difference %.3g (%s)", worst, worstName)
				if worst > 1e-5 {
					t.Fatalf("%s differs from the single process's by %.3g relative (L2), want <= 1e-5", worstName, worst)
				}
			})
		}
	}
}

// checkpointTensors reads every tensor of a checkpoint, weights and
// optimizer state, sharded or not, as raw bytes by name.
func checkpointTensors(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	got := map[string][]byte{}
	ws, err := safetensors.OpenModel(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, n := range ws.Names() {
		b, err := ws.Bytes(n)
		if err != nil {
			t.Fatal(err)
		}
		got["w:"+n] = slices.Clone(b)
	}
	os, err := openOptimizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Close()
	var names []string
	switch s := os.(type) {
	case *safetensors.Set:
		names = s.Names()
	case *safetensors.File:
		names = s.Names()
	}
	for _, n := range names {
		b, err := os.Bytes(n)
		if err != nil {
			t.Fatal(err)
		}
		got["o:"+n] = slices.Clone(b)
	}
	got["adam_steps"] = []byte(os.Metadata()["adam_steps"])
	return got
}

// sameCheckpoint fails the test unless dir holds exactly the tensors of
// want (checkpointTensors of another checkpoint), byte for byte; what
// names the comparison in the message.
func sameCheckpoint(t *testing.T, dir string, want map[string][]byte, what string) {
	t.Helper()
	got := checkpointTensors(t, dir)
	if len(got) != len(want) {
		t.Fatalf("%s: %d tensors, want %d", dir, len(got), len(want))
	}
	for n, b := range want {
		if !bytes.Equal(got[n], b) {
			t.Fatalf("%s: %s differs %s", dir, n, what)
		}
	}
}

// Checkpoints reshard: a run at W = 4 saves (each rank its experts, rank 0
// the dense parameters, the manifest last); resuming it at W = 2, then 1,
// then 4 and saving each time gives back, bit for bit, the same weights
// and optimizer state (bf16 weights with fp32 masters, pre-gates).
func TestShardedCheckpointReshards(t *testing.T) {
	corpus := testCorpus(t)
	o := parallelOptions(func(o *Options) { o.Model.PregateDist = 1; o.BF16 = true })
	base := t.TempDir()
	var dirs []string
	saveAt := func(W int, from string) {
		out := filepath.Join(base, fmt.Sprintf("%d-W%d", len(dirs), W))
		paths := make([]string, W)
		onRanks(t, W, func(r int, c dist.Comm) error {
			var tr *Trainer
			var err error
			if from == "" {
				if tr, err = NewParallelTrainer(o, corpus, c); err != nil {
					return err
				}
				if err := trainSteps(tr, 3, new([]float64)); err != nil {
					return err
				}
			} else if tr, err = ResumeParallel(from, o, corpus, c); err != nil {
				return err
			}
			paths[r], err = tr.Save(out, 0)
			return err
		})
		for r, p := range paths {
			if p != paths[0] {
				t.Fatalf("rank %d saved to %s, rank 0 to %s", r, p, paths[0])
			}
		}
		dirs = append(dirs, paths[0])
	}
	saveAt(4, "")
	if _, err := os.Stat(filepath.Join(dirs[0], safetensors.ShardName(3, 4))); err != nil {
		t.Fatalf("W=4 checkpoint is not sharded by rank: %v", err)
	}
	saveAt(2, dirs[0])
	saveAt(1, dirs[1])
	saveAt(4, dirs[2])
	want := checkpointTensors(t, dirs[0])
	for _, d := range dirs[1:] {
		sameCheckpoint(t, d, want, "after resharding")
	}
	// A sharded checkpoint is a Hugging Face sharded checkpoint: inference
	// loads it.
	if _, err := model.LoadNet(dirs[0], o.Seq); err != nil {
		t.Fatal(err)
	}
}

// A parallel run resumed from its own checkpoint continues bit-identically
// (W = 2: 3 steps, save, 3 more equals 6 straight), and a checkpoint
// directory without its manifest is not taken for one.
func TestParallelResumeBitIdentical(t *testing.T) {
	corpus := testCorpus(t)
	o := parallelOptions(func(o *Options) { o.Model.Capacity = 1 })
	const W = 2
	straight := make([][]float64, W)
	onRanks(t, W, func(r int, c dist.Comm) error {
		tr, err := NewParallelTrainer(o, corpus, c)
		if err != nil {
			return err
		}
		return trainSteps(tr, 6, &straight[r])
	})
	out := t.TempDir()
	resumed := make([][]float64, W)
	onRanks(t, W, func(r int, c dist.Comm) error {
		tr, err := NewParallelTrainer(o, corpus, c)
		if err != nil {
			return err
		}
		if err := trainSteps(tr, 3, &resumed[r]); err != nil {
			return err
		}
		if _, err := tr.Save(out, 0); err != nil {
			return err
		}
		dir, err := ResolveCheckpoint(out)
		if err != nil {
			return err
		}
		if tr, err = ResumeParallel(dir, o, corpus, c); err != nil {
			return err
		}
		return trainSteps(tr, 3, &resumed[r])
	})
	for r := range W {
		if !slices.Equal(resumed[r], straight[r]) {
			t.Fatalf("rank %d: resumed losses %v, straight %v", r, resumed[r], straight[r])
		}
	}
	// A half-written checkpoint (no trainer.json) is not a checkpoint.
	half := filepath.Join(out, CheckpointName(99))
	if err := os.MkdirAll(half, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := ResolveCheckpoint(half); err == nil {
		t.Fatal("a checkpoint directory without its manifest resolved")
	}
	if dir, err := ResolveCheckpoint(out); err != nil || filepath.Base(dir) != CheckpointName(3) {
		t.Fatalf("ResolveCheckpoint(%s) = %s, %v; want the complete step 3", out, dir, err)
	}
}

// A rank that dies mid-run makes the others stop with an error, promptly,
// instead of waiting for it in a collective.
func TestParallelRankFailure(t *testing.T) {
	corpus := testCorpus(t)
	o := parallelOptions(func(o *Options) { o.Steps = 50 })
	const W = 2
	comms, err := dist.NewLocal(W)
	if err != nil {
		t.Fatal(err)
	}
	abort, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make([]error, W)
	var wg sync.WaitGroup
	start := time.Now()
	for r := range W {
		wg.Go(func() {
			tr, err := NewParallelTrainer(o, corpus, comms[r])
			if err != nil {
				errs[r] = err
				cancel()
				return
			}
			if r == 1 {
				ctx := context.Background()
				for range 2 { // as Run does
					if _, errs[r] = tr.stopRequested(ctx, ctx); errs[r] != nil {
						return
					}
					if _, errs[r] = tr.TrainStep(ctx); errs[r] != nil {
						return
					}
				}
				errs[r] = errors.New("rank 1 died")
				cancel()
				return
			}
			_, errs[r] = tr.Run(context.Background(), RunConfig{Abort: abort})
		})
	}
	wg.Wait()
	if errs[1] == nil || errs[1].Error() != "rank 1 died" {
		t.Fatalf("rank 1: %v", errs[1])
	}
	if errs[0] == nil {
		t.Fatal("rank 0 finished a run its peer died in")
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("rank 0 took %v to stop", d)
	}
	t.Logf("rank 0: %v", errs[0])
}

// A validation batch with fewer rows than ranks: the ranks left without a
// row take part with an ignored padding row, and the loss is one
// process's.
func TestParallelEvaluateFewRows(t *testing.T) {
	corpus := testCorpus(t)
	o := parallelOptions(func(o *Options) {})
	short := func(tr *Trainer) {
		vb := tr.val[0]
		tr.val = []ValBatch{{Inputs: vb.Inputs[:o.Seq], Targets: vb.Targets[:o.Seq], Rows: 1}}
	}
	ref, err := NewTrainer(o, corpus)
	if err != nil {
		t.Fatal(err)
	}
	short(ref)
	want, err := ref.Evaluate(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	onRanks(t, 4, func(r int, c dist.Comm) error {
		tr, err := NewParallelTrainer(o, corpus, c)
		if err != nil {
			return err
		}
		short(tr)
		got, err := tr.Evaluate(context.Background())
		if err != nil {
			return err
		}
		if math.Abs(got-want) > 1e-6*want {
			return fmt.Errorf("validation loss %.9g, want %.9g", got, want)
		}
		return nil
	})
}
