package train

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/safetensors"
)

// A run with the embedding partitioned writes an ordinary sharded
// checkpoint: the embedding and its moments and masters whole, in rank 0's
// shard. It resumes at any W with or without the partition, each rank
// taking its columns: partitioned W = 4 -> unpartitioned W = 2 ->
// partitioned W = 2 saves back the same bytes, and a partitioned run
// resumed from its own checkpoint, or from the round-tripped one,
// continues the straight run bit for bit.
func TestEmbedPartitionCheckpoint(t *testing.T) {
	corpus := testCorpus(t)
	o := parallelOptions(func(o *Options) {
		o.EmbedPartition, o.BF16, o.Model.PregateDist, o.Steps = true, true, 1, 8
	})
	base := t.TempDir()
	p4 := shardRun(t, o, corpus, 4, 3, "", filepath.Join(base, "p4"))

	// The embedding whole, once, in rank 0's shard.
	name := model.SpecFor(o.Model.Arch).Embed()
	raw, err := os.ReadFile(filepath.Join(p4.dir, safetensors.IndexFile))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(raw, &idx); err != nil {
		t.Fatal(err)
	}
	if got := idx.WeightMap[name]; got != safetensors.ShardName(0, 4) {
		t.Fatalf("%s is in %q, want rank 0's shard", name, got)
	}
	f, err := safetensors.Open(filepath.Join(p4.dir, safetensors.ShardName(0, 4)))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := f.Info(name)
	f.Close()
	if want := []int{o.Model.V, o.Model.D}; !slices.Equal([]int(info.Shape), want) {
		t.Fatalf("%s has shape %v, want %v", name, info.Shape, want)
	}
	if _, err := model.LoadNet(p4.dir, o.Seq); err != nil {
		t.Fatal(err) // inference loads it
	}

	want := checkpointTensors(t, p4.dir)
	same := func(dir string) {
		t.Helper()
		sameCheckpoint(t, dir, want, "after resharding")
	}
	plain := o
	plain.EmbedPartition = false
	u2 := shardRun(t, plain, corpus, 2, 0, p4.dir, filepath.Join(base, "u2"))
	same(u2.dir)
	p2 := shardRun(t, o, corpus, 2, 0, u2.dir, filepath.Join(base, "p2"))
	same(p2.dir)

	straight4 := shardRun(t, o, corpus, 4, 6, "", "")
	if got := shardRun(t, o, corpus, 4, 3, p2.dir, ""); !slices.Equal(got.losses, straight4.losses[3:]) {
		t.Fatalf("W=4 resumed from the round trip: losses %v, straight %v", got.losses, straight4.losses[3:])
	}
	straight2 := shardRun(t, o, corpus, 2, 6, "", "")
	s2 := shardRun(t, o, corpus, 2, 3, "", filepath.Join(base, "s2"))
	if got := shardRun(t, o, corpus, 2, 3, s2.dir, ""); !slices.Equal(got.losses, straight2.losses[3:]) {
		t.Fatalf("W=2 resumed: losses %v, straight %v", got.losses, straight2.losses[3:])
	}
}

// The embedding partition is refused where it cannot work, naming why.
func TestEmbedPartitionRefused(t *testing.T) {
	corpus := testCorpus(t)
	for _, tc := range []struct {
		name string
		W    int
		mod  func(o *Options)
		want string
	}{
		{"one process", 0, func(o *Options) {}, "no ranks to split over"},
		{"shard-dense", 2, func(o *Options) { o.ShardDense = true }, "shard_dense"},
		{"tied", 2, func(o *Options) { o.Model.TieEmbeddings = true }, "tied embeddings"},
		{"indivisible", 3, func(o *Options) { o.Batch, o.Model.E = 3, 3 }, "does not split over 3 ranks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := parallelOptions(func(o *Options) { o.EmbedPartition = true; tc.mod(o) })
			if o.Model.D%3 == 0 && tc.W == 3 {
				t.Fatalf("D = %d divides over 3 ranks: the case tests nothing", o.Model.D)
			}
			check := func(err error) error {
				if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), tc.want) {
					return errors.New("got " + errString(err) + ", want ErrOptions mentioning " + tc.want)
				}
				return nil
			}
			if tc.W == 0 {
				_, err := NewTrainer(o, corpus)
				if err := check(err); err != nil {
					t.Fatal(err)
				}
				return
			}
			onRanks(t, tc.W, func(r int, c dist.Comm) error {
				_, err := NewParallelTrainer(o, corpus, c)
				return check(err)
			})
		})
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}
