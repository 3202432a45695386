package train

import (
	"bytes"
	"context"
	"errors"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/moesys/moesys/dist"
)

// zeroRun is what shardRun returns of a run at W ranks.
type zeroRun struct {
	losses []float64 // rank 0's
	norms  []float64
	dir    string  // its checkpoint after the steps, when saved
	state  []int64 // per rank: bytes of dense state (shards or whole)
	ring   []int64 // per rank: the gathered-group buffers
}

// shardRun trains o for steps on W in-process ranks, from the checkpoint
// from when set, and saves into out when set.
func shardRun(t *testing.T, o Options, corpus *Corpus, W, steps int, from, out string) zeroRun {
	t.Helper()
	run := zeroRun{state: make([]int64, W), ring: make([]int64, W)}
	dirs := make([]string, W)
	onRanks(t, W, func(r int, c dist.Comm) error {
		var tr *Trainer
		var err error
		if from == "" {
			tr, err = NewParallelTrainer(o, corpus, c)
		} else {
			tr, err = ResumeParallel(from, o, corpus, c)
		}
		if err != nil {
			return err
		}
		run.state[r], run.ring[r] = tr.denseBytes()
		for range steps {
			s, err := tr.TrainStep(context.Background())
			if err != nil {
				return err
			}
			if r == 0 {
				run.losses, run.norms = append(run.losses, s.Loss), append(run.norms, s.GradNorm)
			}
		}
		if out != "" {
			dirs[r], err = tr.Save(out, 0)
		}
		return errors.Join(err, tr.Close())
	})
	run.dir = dirs[0]
	return run
}

// denseBytes is a test's view of this rank's dense state: the shards and
// ring when sharded, else the replicated parameters' weights, gradients,
// moments and masters.
func (t *Trainer) denseBytes() (state, ring int64) {
	if t.par.zero != nil {
		return t.ShardedDenseBytes()
	}
	for i, q := range t.params {
		if np := t.Net.Params[t.idx[i]]; slices.Contains(t.par.dense, q) {
			state += 4 * int64(len(q.W)+len(q.G)+len(q.M)+len(q.V))
			if t.master != nil {
				state += 4 * int64(len(np.W))
			}
		}
	}
	return state, 0
}

// Sharding the dense parameters changes where their state lives, not what
// is computed: with one micro-batch (the reduce-scatter then sums what the
// all-reduce sums, in the same rank order) and no clipping (the norm is
// summed in another order), a sharded run equals the replicated parallel
// run bit for bit: losses, and its checkpoint (weights, moments, masters)
// byte for byte. W = 3 pads the groups (their sizes are multiples of D =
// 16). The sharded checkpoint then resumes at other rank counts with and
// without sharding and saves back the same bytes, and a resumed sharded
// run continues the straight one bit for bit.
func TestShardDense(t *testing.T) {
	corpus := testCorpus(t)
	for _, tc := range []struct {
		name string
		W    int
		mod  func(o *Options)
	}{
		{"f32/W2", 2, func(o *Options) {}},
		{"bf16-pregate-shared-recompute/W4", 4, func(o *Options) {
			o.BF16, o.Model.PregateDist, o.Model.SharedFFN, o.Recompute = true, 1, 8, true
		}},
		{"padded/W3", 3, func(o *Options) { o.Model.E, o.Batch = 6, 6 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := parallelOptions(func(o *Options) { o.Accum, o.Clip, o.Steps = 1, 0, 8; tc.mod(o) })
			base := t.TempDir()
			rep := shardRun(t, o, corpus, tc.W, 3, "", filepath.Join(base, "replicated"))
			o.ShardDense = true
			sh := shardRun(t, o, corpus, tc.W, 3, "", filepath.Join(base, "sharded"))
			if !slices.Equal(sh.losses, rep.losses) {
				t.Fatalf("sharded losses %v, replicated %v", sh.losses, rep.losses)
			}
			for i := range sh.norms {
				if math.Abs(sh.norms[i]-rep.norms[i]) > 1e-12*rep.norms[i] {
					t.Fatalf("step %d: gradient norm %.17g, replicated %.17g", i+1, sh.norms[i], rep.norms[i])
				}
			}
			want := checkpointTensors(t, rep.dir)
			same := func(dir string) {
				t.Helper()
				sameCheckpoint(t, dir, want, "from the replicated run's")
			}
			same(sh.dir)

			// Per rank, the sharded state is 1/W of the replicated one
			// (plus padding; in bf16 0.9/W: the weights that are the
			// masters' roundings take 2 bytes, not 4); the ring holds two
			// groups.
			share := 1 / float64(tc.W)
			if o.BF16 {
				share *= 18.0 / 20
			}
			for r := range tc.W {
				ratio := float64(sh.state[r]) / float64(rep.state[r])
				t.Logf("rank %d: dense state %d of %d bytes (%.3f), ring %d", r, sh.state[r], rep.state[r], ratio, sh.ring[r])
				if math.Abs(ratio-share) > 0.01 {
					t.Fatalf("rank %d: sharded dense state is %.3f of the replicated, want %.3f", r, ratio, share)
				}
			}

			// Resharding: sharded -> W 1 sharded, -> W 4 replicated, each saved
			// back unchanged.
			o1 := o
			s1 := shardRun(t, o1, corpus, 1, 0, sh.dir, filepath.Join(base, "W1"))
			same(s1.dir)
			o4 := o
			o4.ShardDense = false
			if o4.Batch%4 == 0 && o4.Model.E%4 == 0 {
				same(shardRun(t, o4, corpus, 4, 0, s1.dir, filepath.Join(base, "W4")).dir)
			}

			// Resumed from either checkpoint, a sharded run continues the
			// straight one bit for bit, as a replicated one does.
			straight := shardRun(t, o, corpus, tc.W, 6, "", "")
			resumed := shardRun(t, o, corpus, tc.W, 3, sh.dir, "")
			fromRep := shardRun(t, o, corpus, tc.W, 3, rep.dir, "")
			o.ShardDense = false
			repResumed := shardRun(t, o, corpus, tc.W, 3, sh.dir, "")
			for _, l := range [][]float64{resumed.losses, fromRep.losses, repResumed.losses} {
				if !slices.Equal(l, straight.losses[3:]) {
					t.Fatalf("resumed losses %v, straight %v (sharded from sharded, sharded from replicated, replicated from sharded: %v %v %v)",
						l, straight.losses[3:], resumed.losses, fromRep.losses, repResumed.losses)
				}
			}
		})
	}
}

// Combinations that cannot shard fail at once, saying why.
func TestShardDenseRefused(t *testing.T) {
	corpus := testCorpus(t)
	for _, tc := range []struct {
		name string
		mod  func(o *Options)
		want string
	}{
		{"one process", func(o *Options) {}, "no ranks to shard over"},
		{"tied", func(o *Options) { o.Model.TieEmbeddings = true }, "tied embeddings"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := parallelOptions(func(o *Options) { o.ShardDense = true; tc.mod(o) })
			_, err := NewTrainer(o, corpus)
			if !errors.Is(err, ErrOptions) || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
				t.Fatalf("got %v, want %v mentioning %q", err, ErrOptions, tc.want)
			}
		})
	}
}

// A failed job poisons the chain (later jobs fail with its error) until
// the next step settles it: a step after a failed one can succeed.
func TestZeroSettleAfterFailure(t *testing.T) {
	z := &zero{}
	boom := errors.New("boom")
	z.queue(func() error { return boom })
	if err := z.queue(func() error { return nil }).wait(); !errors.Is(err, boom) {
		t.Fatalf("a job after a failed one: %v, want the failure", err)
	}
	z.slots[0].group, z.cur = 3, 0
	z.settle()
	if err := z.queue(func() error { return nil }).wait(); err != nil {
		t.Fatalf("after settle: %v", err)
	}
	if z.cur != -1 || z.ahead != nil || z.slots[0].group != -1 {
		t.Fatalf("settle kept state: cur %d, ahead %v, slot 0 group %d", z.cur, z.ahead, z.slots[0].group)
	}
}
