package serve

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/moesys/moesys/model"
	"github.com/moesys/moesys/moe"
	"github.com/moesys/moesys/offload"
	"github.com/moesys/moesys/tokenizer"
)

// acquireLog is the real scheduler as the model's ExpertSource, recording
// what each pass acquires per layer: a pass runs layers in increasing
// order, so a layer at or below the previous call's starts a new pass.
type acquireLog struct {
	sched *offload.Scheduler // not embedded: its AcquireThen would bypass the log
	mu    sync.Mutex
	last  int
	pass  map[int]map[int]bool // this pass: layer -> experts acquired
	dup   []string
	calls int
}

func (a *acquireLog) Acquire(ctx context.Context, layer int, experts []int, w []moe.ExpertWeights) (int, error) {
	n, err := a.sched.Acquire(ctx, layer, experts, w)
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		return n, err
	}
	if a.pass == nil || layer < a.last {
		a.pass = map[int]map[int]bool{}
	}
	a.last = layer
	if a.pass[layer] == nil {
		a.pass[layer] = map[int]bool{}
	}
	for _, e := range experts[:n] {
		if a.pass[layer][e] {
			a.dup = append(a.dup, fmt.Sprintf("layer %d expert %d", layer, e))
		}
		a.pass[layer][e] = true
	}
	a.calls++
	return n, nil
}

func (a *acquireLog) Release(w []moe.ExpertWeights) { a.sched.Release(w) }

// An offloaded model serves concurrent requests with the resident model's
// greedy text; each pass acquires every expert a layer's batch routes to
// once (the union over the batch's rows); /metrics reports the
// scheduler's counters.
func TestOffloadedServing(t *testing.T) {
	layout := filepath.Join(t.TempDir(), "offload")
	if err := model.ConvertToOffload(testModelDir, layout); err != nil {
		t.Fatal(err)
	}
	cfg := sharedModel(t).Cfg
	sched, err := offload.OpenScheduler(context.Background(), layout, offload.SchedulerConfig{Policy: offload.OnDemand, TopK: cfg.K, Batch: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer sched.Close()
	src := &acquireLog{sched: sched}
	m, err := model.LoadOffloaded(layout, src)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	_, hs := newTestServer(t, func(c *Config) {
		c.Model = m
		c.ExpertStats = func() offload.Counts { return sched.Stats().Snapshot() }
	})
	prompts := []string{"package main", "import \"fmt\"", "func f(x int) int {", "// Copyright"}
	var wg sync.WaitGroup
	for i, p := range prompts {
		want, _, _ := reference(t, (&tokenizer.Byte{}).EncodeSpecial(p), 8, 256)
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, body := post(t, hs, "/v1/completions", fmt.Sprintf(`{"model": %q, "prompt": %q, "max_tokens": 8, "temperature": 0}`, testModelName, p))
			var c Completion
			decodeJSON(t, body, &c)
			if code != http.StatusOK || c.Choices[0].Text != want {
				t.Errorf("request %d: status %d, %q; want %q", i, code, c.Choices[0].Text, want)
			}
		}()
	}
	wg.Wait()
	if src.calls == 0 || len(src.dup) > 0 {
		t.Errorf("%d acquisitions; experts acquired twice in one pass: %v", src.calls, src.dup)
	}
	resp, err := hs.Client().Get(hs.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	k := sched.Stats().Snapshot()
	for _, want := range []string{
		"moesys_expert_cache_misses_total " + promFloat(k.Misses),
		"moesys_expert_cache_hits_total " + promFloat(k.Hits),
		"moesys_slow_tier_read_bytes_total " + promFloat(k.BytesRead),
		"moesys_expert_cache_hit_ratio", "moesys_expert_stall_seconds_total", "moesys_slow_tier_reads_total",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if k.Misses == 0 || k.BytesRead == 0 {
		t.Errorf("counts %+v", k)
	}
}

// promFloat formats n as the Prometheus text format writes values.
func promFloat(n int64) string { return strconv.FormatFloat(float64(n), 'g', -1, 64) }
