package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestBenchTrainRanksFlags(t *testing.T) {
	for _, c := range []struct{ args, want string }{
		{"train --ranks 0", "--ranks"},
		{"train --ranks x", "--ranks"},
		{"train --ranks 3", "divide"},
		{"kernels --ranks 2", "only the train suite"},
	} {
		var out, errw bytes.Buffer
		err := runBench(strings.Fields(c.args), &out, &errw)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("bench %s: error %v, want one about %q", c.args, err, c.want)
		}
	}
}

// bench train --ranks 1,2 measures one process and two in-process ranks
// (this test binary has no MPI backend) and reports tokens/s and the
// communication share of each.
func TestBenchTrainRanks(t *testing.T) {
	if testing.Short() {
		t.Skip("trains the small preset for a few steps")
	}
	var out, errw bytes.Buffer
	if err := runBench([]string{"train", "--ranks", "1,2", "--quick", "--steps", "1", "--json"}, &out, &errw); err != nil {
		t.Fatalf("%v\n%s", err, errw.String())
	}
	var rep struct {
		Results []benchResult `json:"results"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	got := map[string]benchResult{}
	for _, r := range rep.Results {
		got[r.Name] = r
	}
	for _, name := range []string{"train_ranks_small_w1", "train_ranks_small_w2_local", "train_ranks_small_w2_local_comm_fraction"} {
		if _, ok := got[name]; !ok {
			t.Fatalf("no result %s in %v", name, rep.Results)
		}
	}
	if r := got["train_ranks_small_w2_local"]; r.Value <= 0 || r.Bound != got["train_ranks_small_w1"].Value || r.Ratio <= 0 {
		t.Errorf("W=2: %+v", r)
	}
	if f := got["train_ranks_small_w2_local_comm_fraction"].Value; f <= 0 || f >= 1 {
		t.Errorf("communication share %v, want within (0, 1)", f)
	}
}
