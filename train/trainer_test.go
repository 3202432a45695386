package train

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/moesys/moesys/kernel"
	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/tensor"
)

// testCorpus is a small deterministic text corpus.
func testCorpus(t *testing.T) *Corpus {
	t.Helper()
	var sb strings.Builder
	for i := 0; sb.Len() < 40000; i++ {
		sb.WriteString("func f")
		sb.WriteString(strings.Repeat("x", i%7))
		sb.WriteString("() { return a + b }\n")
	}
	path := filepath.Join(t.TempDir(), "text.txt")
	if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadCorpus(context.Background(), DataSpec{Path: path, ValFraction: 0.1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testOptions is a tiny model: 2 layers (one dense), 4 experts top-2.
func testOptions(pregate int, bf16 bool) Options {
	c := byteModel(16, 3, 2, 1, 4, 2, 24)
	c.MoE = []bool{true, false, true}
	c.ZCoef, c.Jitter, c.PregateDist = 1e-3, 0.05, pregate
	o := defaults(c, 16, 2, 8, 1e-2)
	o.Accum, o.EvalEvery, o.EvalBatches, o.BF16 = 2, 3, 2, bf16
	return o
}

// TestResumeBitIdentical: N steps, checkpoint, N more steps equals 2N steps
// straight: losses, weights and optimizer state, bit for bit.
func TestResumeBitIdentical(t *testing.T) {
	corpus := testCorpus(t)
	for _, tc := range []struct {
		name    string
		pregate int
		bf16    bool
	}{{"f32", 0, false}, {"pregate-bf16", 1, true}} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(tc.pregate, tc.bf16)
			straight, err := NewTrainer(o, corpus)
			if err != nil {
				t.Fatal(err)
			}
			var want []float64
			for i := 0; i < 8; i++ {
				want = append(want, mustStep(t, straight).Loss)
			}
			first, err := NewTrainer(o, corpus)
			if err != nil {
				t.Fatal(err)
			}
			var got []float64
			for i := 0; i < 4; i++ {
				got = append(got, mustStep(t, first).Loss)
			}
			out := t.TempDir()
			dir, err := first.Save(out, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{out, filepath.Join(out, LatestFile), dir} {
				if r, err := ResolveCheckpoint(p); err != nil || r != dir {
					t.Fatalf("ResolveCheckpoint(%s) = %s, %v; want %s", p, r, err, dir)
				}
			}
			saved, step, err := ReadCheckpointOptions(dir)
			if err != nil || step != 4 {
				t.Fatalf("ReadCheckpointOptions: step %d, %v", step, err)
			}
			resumed, err := Resume(dir, saved, corpus)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 4; i++ {
				got = append(got, mustStep(t, resumed).Loss)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("losses\n got %v\nwant %v", got, want)
			}
			for i, p := range straight.params {
				q := resumed.params[i]
				if !reflect.DeepEqual(p.W, q.W) || !reflect.DeepEqual(p.M, q.M) || !reflect.DeepEqual(p.V, q.V) {
					t.Fatalf("%s: weights or moments differ after resuming", p.Name)
				}
				if !reflect.DeepEqual(straight.Net.Params[i].W, resumed.Net.Params[i].W) {
					t.Fatalf("%s: model weights differ after resuming", p.Name)
				}
			}
			if straight.adam.Steps() != resumed.adam.Steps() {
				t.Fatalf("adam steps %d vs %d", resumed.adam.Steps(), straight.adam.Steps())
			}
			if want[len(want)-1] >= want[0] {
				t.Fatalf("loss did not fall: %v", want)
			}
		})
	}
}

// TestRunInterruptSaves: a cancelled run finishes its step, saves a
// checkpoint and reports Interrupted; the checkpoint loads for inference.
func TestRunInterruptSaves(t *testing.T) {
	corpus := testCorpus(t)
	o := testOptions(0, false)
	o.Steps = 1000
	tr, err := NewTrainer(o, corpus)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var log strings.Builder
	stopAfter := 3
	rc := RunConfig{Out: t.TempDir(), Log: &cancelAfter{&log, cancel, stopAfter}}
	s, err := tr.Run(ctx, rc)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Interrupted || s.Steps != stopAfter || s.Checkpoint == "" {
		t.Fatalf("summary %+v, want interrupted after %d steps with a checkpoint", s, stopAfter)
	}
	if _, err := os.Stat(filepath.Join(s.Checkpoint, model.WeightsFile)); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(s.Checkpoint)
	if err != nil {
		t.Fatalf("inference load of a training checkpoint: %v", err)
	}
	m.Close()
	if !strings.Contains(log.String(), `"kind":"step"`) {
		t.Fatalf("log has no step lines: %q", log.String())
	}
}

// cancelAfter cancels after n step log lines.
type cancelAfter struct {
	w      *strings.Builder
	cancel context.CancelFunc
	n      int
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), `"kind":"step"`) {
		c.n--
		if c.n == 0 {
			c.cancel()
		}
	}
	return c.w.Write(p)
}

// TestOptionsErrors: bad options are rejected before any work, with errors
// naming the problem.
func TestOptionsErrors(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		mod        func(o *Options)
	}{
		{"k>e", "top-k 5", func(o *Options) { o.Model.K = 5 }},
		{"seq", "seq 0", func(o *Options) { o.Seq = 0 }},
		{"lr", "lr -1", func(o *Options) { o.LR = -1 }},
		{"betas", "betas", func(o *Options) { o.Beta2 = 1 }},
		{"steps", "steps 0", func(o *Options) { o.Steps = 0 }},
		{"pregate", "pregate_distance", func(o *Options) { o.Model.PregateDist = 4 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(0, false)
			tc.mod(&o)
			err := o.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	// A mismatched checkpoint is refused.
	corpus := testCorpus(t)
	tr, err := NewTrainer(testOptions(0, false), corpus)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := tr.Save(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	o := testOptions(0, false)
	o.Batch = 3
	if _, err := Resume(dir, o, corpus); !errors.Is(err, ErrCheckpoint) {
		t.Fatalf("resume with another batch shape: %v", err)
	}
	// A corrupt optimizer file is refused.
	if err := os.WriteFile(filepath.Join(dir, OptimizerFile), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Resume(dir, testOptions(0, false), corpus); !errors.Is(err, ErrCheckpoint) {
		t.Fatalf("resume with a corrupt optimizer file: %v", err)
	}
}

// TestPresetsValid: every preset validates and its model builds.
func TestPresetsValid(t *testing.T) {
	for _, name := range PresetNames() {
		o, err := PresetOptions(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := o.Validate(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name != "tiny" && name != "small" {
			continue // the others allocate gigabytes
		}
		if _, err := model.NewNet(o.Model, o.Seq); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := PresetOptions("nope"); !errors.Is(err, ErrOptions) {
		t.Fatalf("unknown preset: %v", err)
	}
}

// TestConvertPregate: the converted model's pre-gates start as the next
// gates; fine-tuning runs; the agreement report is filled in and stays
// within [0, 1].
func TestConvertPregate(t *testing.T) {
	corpus := testCorpus(t)
	o := testOptions(0, false)
	o.Model.MoE = []bool{true, true, true}
	o.Model.Jitter = 0
	tr, err := NewTrainer(o, corpus)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		mustStep(t, tr)
	}
	conv, err := ConvertPregate(tr.Net, 1, o.Seq)
	if err != nil {
		t.Fatal(err)
	}
	sp := model.SpecFor("moesys")
	if !reflect.DeepEqual(conv.Param(sp.Pregate(0)).W, tr.Net.Param(sp.Router(1)).W) {
		t.Fatal("pre-gate 0 is not gate 1")
	}
	if conv.Param(sp.Router(1)) != nil || conv.Param(sp.Router(0)) == nil {
		t.Fatal("gate 1 kept or gate 0 dropped")
	}
	val, err := ValBatches(corpus.Val, o.Batch, o.Seq, 2)
	if err != nil {
		t.Fatal(err)
	}
	before := mustAgree(t, tr.Net, conv, val, o.Seq)
	if before.Layers != 2 || before.Tokens != 2*2*o.Batch*o.Seq || before.ExactSet < 0 || before.ExactSet > before.Overlap || before.Overlap > 1 {
		t.Fatalf("agreement %+v", before)
	}
	// Identity check: a model compared with itself agrees fully.
	self, err := ConvertPregate(tr.Net, 1, o.Seq)
	if err != nil {
		t.Fatal(err)
	}
	if a := mustAgree(t, conv, self, val, o.Seq); a.ExactSet != 1 || a.ValOrig != a.ValConv {
		t.Fatalf("a model against its own copy: %+v", a)
	}
	ft, err := NewTrainerFrom(o, corpus, conv)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		mustStep(t, ft)
	}
	after := mustAgree(t, tr.Net, ft.Net, val, o.Seq)
	if after.Tokens != before.Tokens || after.ValConv == before.ValConv {
		t.Fatalf("after fine-tuning %+v, before %+v", after, before)
	}
}

// TestBF16CopiesFollowMasters: after bf16 steps every weight is the bf16
// rounding of its fp32 master and every bf16 product copy equals it.
func TestBF16CopiesFollowMasters(t *testing.T) {
	tr, err := NewTrainer(testOptions(1, true), testCorpus(t))
	if err != nil {
		t.Fatal(err)
	}
	mustStep(t, tr)
	mustStep(t, tr)
	copies := 0
	for i, p := range tr.Net.Params {
		for j, w := range p.W {
			h := tensor.F32ToBF16(tr.master[i][j])
			if w != tensor.BF16ToF32(h) || (p.B != nil && p.B[j] != h) {
				t.Fatalf("%s[%d]: weight %g, bf16 copy %v, master %g", p.Name, j, w, p.B != nil, tr.master[i][j])
			}
		}
		if p.B != nil {
			copies++
		}
	}
	if kernel.CurrentLevel() >= kernel.LevelAVX512BF16 && copies == 0 {
		t.Fatal("no bf16 product copies on a bf16 CPU")
	}
}

// TestRunSavesEveryAndKeepsLast: checkpoints every SaveEvery steps and at
// the end, the newest KeepLast kept, latest naming the last.
func TestRunSavesEveryAndKeepsLast(t *testing.T) {
	o := testOptions(0, false)
	o.Steps, o.SaveEvery, o.KeepLast, o.EvalEvery = 7, 2, 2, 0
	tr, err := NewTrainer(o, testCorpus(t))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var progress strings.Builder
	s, err := tr.Run(context.Background(), RunConfig{Out: out, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{"latest", CheckpointName(6), CheckpointName(7)}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("output directory holds %v, want %v", names, want)
	}
	if latest, _ := ResolveCheckpoint(out); latest != s.Checkpoint || filepath.Base(latest) != CheckpointName(7) {
		t.Fatalf("latest %s, summary %s", latest, s.Checkpoint)
	}
	if !strings.Contains(progress.String(), "step 7/7") {
		t.Fatalf("progress %q", progress.String())
	}
}
