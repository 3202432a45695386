package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/moesys/moesys/dist"
	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/offload"
)

// storageCase is a tiny model for the hierarchical-storage tests.
type storageCase struct {
	name    string
	pregate int
	bf16    bool
	E, K    int // 0: testOptions' 4 experts top-2
	recomp  bool
	clip    float64 // 0: testOptions'
	moeL    int     // > 0: that many layers, all MoE (layers share compute-tier slots past 2)
}

var storageCases = []storageCase{
	{"f32", 0, false, 0, 0, false, 0, 0},
	{"pregate-bf16", 1, true, 0, 0, false, 0, 0},
	{"lagging-top1-of-8", 0, true, 8, 1, false, 0, 0},    // experts skip steps: zero-gradient replays
	{"recompute-clipped", 1, false, 0, 0, true, 0.05, 0}, // every step clipped
	{"five-moe-layers-bf16", 2, true, 0, 0, false, 0, 5}, // pre-gates two blocks ahead
}

func (c storageCase) options(dir string) Options {
	o := testOptions(c.pregate, c.bf16)
	o.Recompute = c.recomp
	if c.clip > 0 {
		o.Clip = c.clip
	}
	if c.E > 0 {
		m := byteModel(16, 3, 2, 1, c.E, c.K, 24)
		m.MoE, m.ZCoef, m.Jitter, m.PregateDist = []bool{true, false, true}, 1e-3, 0.05, c.pregate
		o.Model = m
		o.Batch, o.Accum = 1, 1
	}
	if c.moeL > 0 {
		m := byteModel(16, c.moeL, 2, 1, 4, 2, 24)
		m.ZCoef, m.Jitter, m.PregateDist = 1e-3, 0.05, c.pregate
		o.Model = m
	}
	if dir != "" {
		FD := o.Model.ExpertFFN * o.Model.D
		slot := offload.StateSlotBytes(3*FD*12) + offload.StateSlotBytes(3*FD*4)
		o.Storage = &StorageOptions{Dir: dir, SparseMem: int64(o.Model.E) * slot, Beta: 0.5, Every: 2} // one layer's experts: evictions every step
	}
	return o
}

// sameBits fails unless the two Nets' weights (and bf16 copies) are equal
// bit for bit; b's stored experts (a hierarchical-storage Trainer's, when
// st is set) are read from their records.
func sameBits(t *testing.T, what string, a, b *model.Net, st *Trainer) {
	t.Helper()
	for i, p := range a.Params {
		q := b.Params[i]
		w, bf := q.W, q.B
		if st != nil && st.sparse != nil {
			if _, stored := st.sparse.paramAt[q]; stored {
				var err error
				if w, bf, err = st.sparse.working(context.Background(), q); err != nil {
					t.Fatal(err)
				}
			}
		}
		for j := range p.W {
			if math.Float32bits(p.W[j]) != math.Float32bits(w[j]) {
				t.Fatalf("%s: %s[%d] = %v, want %v", what, p.Name, j, w[j], p.W[j])
			}
		}
		for j := range p.B {
			if p.B[j] != bf[j] {
				t.Fatalf("%s: %s bf16[%d] = %#x, want %#x", what, p.Name, j, bf[j], p.B[j])
			}
		}
	}
}

// TestStorageBitIdentical: training with the experts' state on the SSD tier
// (a cache of one layer's experts, so states are evicted and read back
// every step) gives the in-memory run's losses, gradient norms, weights and
// optimizer state bit for bit, across validation and a checkpoint.
func TestStorageBitIdentical(t *testing.T) {
	corpus := testCorpus(t)
	ctx := context.Background()
	for _, tc := range storageCases {
		t.Run(tc.name, func(t *testing.T) {
			ref, err := NewTrainer(tc.options(""), corpus)
			if err != nil {
				t.Fatal(err)
			}
			st, err := NewTrainer(tc.options(t.TempDir()), corpus)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			var misses int64
			clipped := 0
			for i := 0; i < 10; i++ {
				a, b := mustStep(t, ref), mustStep(t, st)
				if math.Float64bits(a.Loss) != math.Float64bits(b.Loss) || math.Float64bits(a.GradNorm) != math.Float64bits(b.GradNorm) {
					t.Fatalf("step %d: loss %v norm %v, want %v %v", i+1, b.Loss, b.GradNorm, a.Loss, a.GradNorm)
				}
				if a.GradNorm > st.Opts.Clip {
					clipped++
				}
				misses += b.Storage.Misses
				if i == 4 {
					va, _ := ref.Evaluate(ctx)
					vb, err := st.Evaluate(ctx)
					if err != nil || va != vb {
						t.Fatalf("validation %v (%v), want %v", vb, err, va)
					}
				}
				if i == 6 {
					if _, err := st.Save(t.TempDir(), 0); err != nil {
						t.Fatal(err)
					}
					sameBits(t, "after checkpoint", ref.Net, st.Net, st)
				}
			}
			if misses == 0 {
				t.Errorf("no state was read from the SSD tier: the test does not exercise it")
			}
			if tc.clip > 0 && clipped == 0 {
				t.Errorf("no step was clipped: the test does not exercise the deferred clipping")
			}
			if err := st.sparse.flush(ctx); err != nil {
				t.Fatal(err)
			}
			sameBits(t, "after 10 steps", ref.Net, st.Net, st)
			// The optimizer state equals the in-memory optimizer's.
			want := map[string][3][]float32{}
			for i, p := range ref.params {
				m := p.W // f32: the weights are the masters
				if ref.master != nil {
					m = ref.master[i]
				}
				want[p.Name] = [3][]float32{m, p.M, p.V}
			}
			err = st.sparse.each(ctx, false, func(p *model.Param, w, m, v []float32) error {
				for k, got := range [3][]float32{w, m, v} {
					for j := range got {
						if math.Float32bits(got[j]) != math.Float32bits(want[p.Name][k][j]) {
							return fmt.Errorf("%s state part %d [%d] = %v, want %v", p.Name, k, j, got[j], want[p.Name][k][j])
						}
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// faultIO tears the write numbered failAt (writes half of it, then fails)
// and, like a killed process, fails every read and write after it.
type faultIO struct {
	offload.RecordIO
	mu     sync.Mutex
	writes int
	failAt int
	dead   bool
}

var errInjected = errors.New("injected fault")

func (f *faultIO) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.dead {
		return 0, errInjected
	}
	if f.writes == f.failAt {
		f.dead = true
		n, _ := f.RecordIO.WriteAt(p[:len(p)/2], off)
		return n, errInjected
	}
	return f.RecordIO.WriteAt(p, off)
}

func (f *faultIO) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	dead := f.dead
	f.mu.Unlock()
	if dead {
		return 0, errInjected
	}
	return f.RecordIO.ReadAt(p, off)
}

// TestStorageCrashResume: a run whose SSD tier dies at a chosen write (a
// torn write, then nothing: a kill in the middle of a write-back, of the
// initial fill, of a checkpoint's flush) or that is simply abandoned after
// a step, resumed from its last checkpoint (with storage), ends bit-identical
// to an uninterrupted in-memory run.
func TestStorageCrashResume(t *testing.T) {
	corpus := testCorpus(t)
	tc := storageCases[1]
	const steps, saveAt = 8, 3
	ref, err := NewTrainer(tc.options(""), corpus)
	if err != nil {
		t.Fatal(err)
	}
	for range steps {
		mustStep(t, ref)
	}
	records := 2 * tc.options("").Model.E
	for _, failAt := range []int{0, records/2 + 1, records + 3, records + 20, records + 45, records + 70, 1 << 30} {
		for _, killAfter := range []int{saveAt + 1, steps - 1} {
			t.Run(fmt.Sprintf("write%d-kill%d", failAt, killAfter), func(t *testing.T) {
				o, out := tc.options(t.TempDir()), t.TempDir()
				o.Storage.Wrap = func(r offload.RecordIO) offload.RecordIO { return &faultIO{RecordIO: r, failAt: failAt} }
				ckpt := ""
				tr, err := NewTrainer(o, corpus)
				if err == nil {
					for i := 1; i <= killAfter; i++ {
						if _, err = tr.TrainStep(context.Background()); err != nil {
							break
						}
						if i == saveAt {
							if ckpt, err = tr.Save(out, 0); err != nil {
								break
							}
						}
					}
					tr.Close() // the kill: nothing more is written
				}
				if failAt > 0 && failAt < 1<<30 && err == nil && ckpt == "" {
					t.Fatalf("the fault at write %d surfaced nowhere", failAt)
				}
				var rt *Trainer
				o2 := tc.options(t.TempDir())
				if ckpt == "" { // died before the first checkpoint: start again
					rt, err = NewTrainer(o2, corpus)
				} else {
					rt, err = Resume(ckpt, o2, corpus)
				}
				if err != nil {
					t.Fatal(err)
				}
				defer rt.Close()
				for rt.Step < steps {
					mustStep(t, rt)
				}
				if err := rt.sparse.flush(context.Background()); err != nil {
					t.Fatal(err)
				}
				sameBits(t, "resumed", ref.Net, rt.Net, rt)
			})
		}
	}
}

// TestStorageResumesInMemoryCheckpoint: checkpoints are interchangeable
// between in-memory and hierarchical-storage runs.
func TestStorageResumesInMemoryCheckpoint(t *testing.T) {
	corpus := testCorpus(t)
	tc := storageCases[0]
	ref, err := NewTrainer(tc.options(""), corpus)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		mustStep(t, ref)
	}
	ckpt, err := ref.Save(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := Resume(ckpt, tc.options(t.TempDir()), corpus)
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	for range 3 {
		a, b := mustStep(t, ref), mustStep(t, rt)
		if a.Loss != b.Loss {
			t.Fatalf("loss %v, want %v", b.Loss, a.Loss)
		}
	}
	back, err := rt.Save(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := Resume(back, tc.options(""), corpus)
	if err != nil {
		t.Fatal(err)
	}
	a, b := mustStep(t, ref), mustStep(t, mem)
	if a.Loss != b.Loss {
		t.Fatalf("in-memory resume of a storage checkpoint: loss %v, want %v", b.Loss, a.Loss)
	}
	sameBits(t, "round trip", ref.Net, mem.Net, nil)
}

// TestPlanStorage: the planner's figures and its refusals.
func TestPlanStorage(t *testing.T) {
	o := testOptions(0, true)
	c := o.Model
	slot := offload.StateSlotBytes(3 * c.ExpertFFN * c.D * 12)
	grads := 4 * offload.StateSlotBytes(3*c.ExpertFFN*c.D*4) // one layer's deferred gradients
	for _, tc := range []struct {
		name string
		so   StorageOptions
		want string // error substring, "" for a plan
	}{
		{"fits", StorageOptions{Dir: t.TempDir(), SparseMem: 8*slot + grads}, ""},
		{"one layer", StorageOptions{Dir: t.TempDir(), SparseMem: 4*slot + grads}, ""},
		{"cache below one layer", StorageOptions{Dir: t.TempDir(), SparseMem: 4*slot + grads - 1}, "give --sparse-mem at least"},
		{"dense does not fit", StorageOptions{Dir: t.TempDir(), SparseMem: 8*slot + grads, DenseMem: 1000}, "do not fit"},
		{"no dir", StorageOptions{SparseMem: 8 * slot}, "no --storage directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := PlanStorage(c, true, tc.so)
			if tc.want != "" {
				if err == nil || !errors.Is(err, ErrStorage) || !contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.SparseParams != int64(2*4*3*c.ExpertFFN*c.D) || p.StateBytes != p.SparseParams*12 || p.CacheRecords != int(min((tc.so.SparseMem-grads)/slot, 8)) || p.GradCacheBytes != grads {
				t.Fatalf("plan %+v", p)
			}
			if p.DenseParams+p.SparseParams != int64(mustNet(t, c).NumParams()) {
				t.Fatalf("dense %d + sparse %d params, the Net has %d", p.DenseParams, p.SparseParams, mustNet(t, c).NumParams())
			}
			if s := p.String(); !contains(s, "RAM cache") || !contains(s, "path 1") {
				t.Fatalf("plan text:\n%s", s)
			}
		})
	}
	if _, err := PlanStorage(byteModel(16, 2, 2, 1, 0, 0, 24), false, StorageOptions{Dir: t.TempDir(), SparseMem: 1 << 20}); !errors.Is(err, ErrStorage) {
		t.Fatalf("a dense model: %v", err)
	}
}

func contains(s, sub string) bool {
	return len(sub) == 0 || len(s) >= len(sub) && (s[:len(sub)] == sub || contains(s[1:], sub))
}

func mustNet(t *testing.T, c *model.Config) *model.Net {
	n, err := model.NewNet(c, 16)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestStorageFailedPassThenStep: a pass that fails while catching experts
// up (a cancelled context, a failed SSD read) leaves no expert marked used
// this step unless it was caught up, so the steps after it neither panic
// nor diverge from the in-memory run.
func TestStorageFailedPassThenStep(t *testing.T) {
	corpus := testCorpus(t)
	tc := storageCases[2]
	ref, err := NewTrainer(tc.options(""), corpus)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := NewTrainer(tc.options(t.TempDir()), corpus)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for range 3 {
		mustStep(t, ref)
		mustStep(t, tr)
	}
	s := tr.sparse
	all := make([]int32, s.E)
	for e := range all {
		all[e] = int32(e)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Need(ctx, tr.Net.Cfg.MoELayers()[0], all); err == nil {
		t.Fatal("Need with a cancelled context succeeded")
	}
	for mi := range s.used {
		for e, u := range s.used[mi] {
			if u && s.upTo[mi][e] != s.steps() {
				t.Fatalf("layer %d expert %d marked used at step %d of %d", mi, e, s.upTo[mi][e], s.steps())
			}
		}
	}
	for range 3 {
		mustStep(t, ref)
		mustStep(t, tr)
	}
	if err := s.flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	sameBits(t, "after a failed pass", ref.Net, tr.Net, tr)
}

// TestStorageComputeTier: the compute tier is two slots of one MoE
// layer's expert buffers, the plan's bound: every MoE layer computes in
// slot i%2 (the Net's buffers alias it), and the resident bytes the steps
// report are within it and non-zero.
func TestStorageComputeTier(t *testing.T) {
	corpus := testCorpus(t)
	levels := []kernel.Level{kernel.CurrentLevel()}
	if kernel.CurrentLevel() > kernel.LevelAVX2 { // also where no bf16 products keep bf16 copies
		levels = append(levels, kernel.LevelAVX2)
	}
	for _, lvl := range levels {
		for _, tc := range storageCases {
			t.Run(fmt.Sprintf("%s/level%d", tc.name, lvl), func(t *testing.T) {
				defer kernel.SetLevel(kernel.SetLevel(lvl))
				testComputeTier(t, corpus, tc)
			})
		}
	}
}

func testComputeTier(t *testing.T, corpus *Corpus, tc storageCase) {
	tr, err := NewTrainer(tc.options(t.TempDir()), corpus)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	s := tr.sparse
	var mapped, pages int64
	page := int64(os.Getpagesize())
	for _, lt := range s.tiers {
		for _, b := range lt.maps {
			mapped += int64(len(b))
			pages += (int64(len(b)) + page - 1) / page * page
		}
	}
	if len(s.tiers) != min(len(s.layers), 2) || mapped != s.plan.ComputeBytes {
		t.Fatalf("%d slots of %d bytes in all, plan %d", len(s.tiers), mapped, s.plan.ComputeBytes)
	}
	for mi, l := range s.layers {
		if b := tr.Net.ExpertBuffersOf(l); &b.W13[0] != &s.tiers[mi%2].bufs.W13[0] || &b.G2[0] != &s.tiers[mi%2].bufs.G2[0] {
			t.Fatalf("MoE layer %d does not compute in slot %d", mi, mi%2)
		}
	}
	// The Net never held the experts: its expert tensors are
	// views of the slots, and it counts every parameter.
	within := func(p *float32, buf []float32) bool {
		a, lo := uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&buf[0]))
		return a >= lo && a < lo+4*uintptr(len(buf))
	}
	for q, at := range s.paramAt {
		b := s.tiers[at[0]%2].bufs
		if !within(&q.W[0], b.W13) && !within(&q.W[0], b.W2) || !within(&q.G[0], b.G13) && !within(&q.G[0], b.G2) {
			t.Fatalf("%s is not in its slot", q.Name)
		}
	}
	if n := mustNet(t, tr.Net.Cfg).NumParams(); tr.Net.NumParams() != n {
		t.Fatalf("%d parameters, a whole Net has %d", tr.Net.NumParams(), n)
	}
	for range 3 {
		r := mustStep(t, tr)
		if r.Storage.ComputeTierBytes <= 0 || r.Storage.ComputeTierBytes > pages {
			t.Fatalf("step figure: %d compute-tier bytes resident, %d mapped", r.Storage.ComputeTierBytes, pages)
		}
	}
}

// TestStorageParallel: hierarchical storage under expert parallelism, each
// rank keeping its own experts' state on the SSD tier (with the dense
// parameters sharded ZeRO-3 style too: both paths of 2D prefetch), gives
// the in-memory parallel run's losses, gradient norms and checkpoint bit
// for bit.
func TestStorageParallel(t *testing.T) {
	corpus := testCorpus(t)
	const W, steps = 2, 5
	for _, tc := range []struct {
		name string
		mod  func(o *Options)
	}{
		{"experts", func(o *Options) {}},
		{"shard-dense", func(o *Options) { o.ShardDense = true }},
		{"shard-dense-bf16-pregate-clipped", func(o *Options) {
			o.ShardDense, o.BF16, o.Model.PregateDist, o.Clip = true, true, 1, 0.05
		}},
		{"embed-partition", func(o *Options) { o.EmbedPartition = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := parallelOptions(tc.mod)
			ref := shardRun(t, o, corpus, W, steps, "", t.TempDir())
			FD := o.Model.ExpertFFN * o.Model.D
			slot := offload.StateSlotBytes(3*FD*12) + offload.StateSlotBytes(3*FD*4)
			o.Storage = &StorageOptions{Dir: t.TempDir(), SparseMem: int64(o.Model.E/W) * slot, Beta: 0.5, Every: 2}
			got := shardRun(t, o, corpus, W, steps, "", t.TempDir())
			for i := range ref.losses {
				if math.Float64bits(ref.losses[i]) != math.Float64bits(got.losses[i]) || math.Float64bits(ref.norms[i]) != math.Float64bits(got.norms[i]) {
					t.Fatalf("step %d: loss %v norm %v, want %v %v", i+1, got.losses[i], got.norms[i], ref.losses[i], ref.norms[i])
				}
			}
			sameCheckpoint(t, got.dir, checkpointTensors(t, ref.dir), "from the in-memory run's")
			for r := range W {
				if _, err := os.Stat(filepath.Join(o.Storage.Dir, storageFileName(StateFileName, r, W))); err != nil {
					t.Fatalf("rank %d's state file: %v", r, err)
				}
			}
		})
	}
}

// TestStorageMultiTask: a multi-task run (shared and task experts, the
// elastic plan) with the routed experts on the storage tiers gives the
// in-memory run's losses bit for bit, in one process and on 2 ranks; the
// task experts stay with the dense parameters (and are trained).
func TestStorageMultiTask(t *testing.T) {
	corpora := taskCorpora(t, 4)
	o := multiTaskOptions(4)
	FD := o.Model.ExpertFFN * o.Model.D
	slot := offload.StateSlotBytes(3*FD*12) + offload.StateSlotBytes(3*FD*4)
	for _, W := range []int{1, 2} {
		t.Run(fmt.Sprintf("W%d", W), func(t *testing.T) {
			losses := func(o Options) [][]float64 {
				got := make([][]float64, W)
				run := func(r int, c dist.Comm) error {
					tr, err := NewMultiTaskTrainer(o, corpora, c)
					if err != nil {
						return err
					}
					defer tr.Close()
					if err := trainSteps(tr, o.Steps, &got[r]); err != nil {
						return err
					}
					for _, p := range tr.Net.Params {
						if k := tr.Net.TaskParam(p); k >= 0 && tr.Net.Param(p.Name) != nil {
							if _, routed := tr.Net.RoutedExpert(p); routed {
								return fmt.Errorf("task expert %s counted as routed", p.Name)
							}
						}
					}
					return nil
				}
				if W == 1 {
					if err := run(0, nil); err != nil {
						t.Fatal(err)
					}
				} else {
					onRanks(t, W, run)
				}
				return got
			}
			want := losses(o)
			so := o
			so.Storage = &StorageOptions{Dir: t.TempDir(), SparseMem: int64(o.Model.E/W) * slot}
			got := losses(so)
			for r := range got {
				for s := range got[r] {
					if math.Float64bits(got[r][s]) != math.Float64bits(want[r][s]) {
						t.Fatalf("rank %d step %d: loss %v, want %v", r, s+1, got[r][s], want[r][s])
					}
				}
			}
		})
	}
}

// TestStorageResumeFailureReleases: a resume with storage that fails after
// the tiers opened (the checkpoint's optimizer state is missing) stops
// their goroutines and closes their files.
func TestStorageResumeFailureReleases(t *testing.T) {
	corpus := testCorpus(t)
	tc := storageCases[0]
	tr, err := NewTrainer(tc.options(t.TempDir()), corpus)
	if err != nil {
		t.Fatal(err)
	}
	mustStep(t, tr)
	ckpt, err := tr.Save(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if err := os.Remove(filepath.Join(ckpt, OptimizerFile)); err != nil {
		t.Fatal(err)
	}
	before := cacheGoroutines()
	if _, err := Resume(ckpt, tc.options(t.TempDir()), corpus); err == nil {
		t.Fatal("resumed without the optimizer state")
	}
	if after := cacheGoroutines(); after != before {
		t.Fatalf("%d state-cache goroutines after the failed resume, %d before", after, before)
	}
}

// cacheGoroutines counts the goroutines running a state cache's readers
// and writers (other tests' may be among them: compare before and after).
func cacheGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return strings.Count(string(buf), "offload.(*StateCache).reader(") + strings.Count(string(buf), "offload.(*StateCache).writer(")
}
