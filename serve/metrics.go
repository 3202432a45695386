package serve

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/moesys/moesys/offload"
)

// metrics are the server's Prometheus collectors, in a registry of its
// own (so several servers in one process, as in tests, do not collide).
// The engine's and the offload scheduler's figures are read when scraped.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec   // endpoint, code
	latency  *prometheus.HistogramVec // endpoint
	ttft     *prometheus.HistogramVec // endpoint
}

// latencyBuckets (seconds) span a short greedy reply on a tiny model to a
// long generation on a model streaming experts from disk.
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300}

func newMetrics(e *Engine, expertStats func() offload.Counts) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "moesys_requests_total",
		Help: "HTTP requests answered, by endpoint and status code."}, []string{"endpoint", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "moesys_request_duration_seconds",
		Help: "Time from a generation request's arrival to its last byte, by endpoint.", Buckets: latencyBuckets}, []string{"endpoint"})
	m.ttft = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "moesys_time_to_first_token_seconds",
		Help: "Time from a generation request's arrival to its first sampled token, by endpoint.", Buckets: latencyBuckets}, []string{"endpoint"})
	m.reg.MustRegister(m.requests, m.latency, m.ttft, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	stat := func(f func(EngineStats) float64) func() float64 { return func() float64 { return f(e.Stats()) } }
	gauge := func(name, help string, f func(EngineStats) float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, stat(f)))
	}
	counter := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge("moesys_queue_depth", "Requests waiting for a sequence slot.", func(s EngineStats) float64 { return float64(s.Queued) })
	gauge("moesys_running_sequences", "Sequences in the running batch.", func(s EngineStats) float64 { return float64(s.Running) })
	gauge("moesys_sequence_slots", "Sequence slots (KV caches) in the pool (--max-seqs).", func(s EngineStats) float64 { return float64(s.Slots) })
	gauge("moesys_kv_pool_positions_used", "KV cache positions held by running sequences.", func(s EngineStats) float64 { return float64(s.KVPositions) })
	gauge("moesys_kv_pool_positions", "KV cache positions in the pool (slots x context).", func(s EngineStats) float64 { return float64(s.KVCapacity) })
	gauge("moesys_kv_pool_usage_ratio", "Share of the KV pool's positions in use.", func(s EngineStats) float64 {
		return float64(s.KVPositions) / float64(max(s.KVCapacity, 1))
	})
	gauge("moesys_generation_tokens_per_second", "Tokens generated per second over the last 10 s.", func(s EngineStats) float64 { return s.TokensPerSecond })
	counter("moesys_prompt_tokens_total", "Prompt tokens prefilled.", stat(func(s EngineStats) float64 { return float64(s.PromptTokens) }))
	counter("moesys_generated_tokens_total", "Tokens generated (sampled).", stat(func(s EngineStats) float64 { return float64(s.GeneratedTokens) }))
	counter("moesys_engine_passes_total", "Forward passes of the running batch.", stat(func(s EngineStats) float64 { return float64(s.Passes) }))
	counter("moesys_engine_pass_failures_total", "Forward passes that failed (their sequences end with an error).", stat(func(s EngineStats) float64 { return float64(s.PassFailures) }))

	if expertStats != nil {
		c := func(f func(offload.Counts) float64) func() float64 { return func() float64 { return f(expertStats()) } }
		counter("moesys_expert_cache_hits_total", "Experts acquired that were already in memory (or fetched ahead).", c(func(k offload.Counts) float64 { return float64(k.Hits) }))
		counter("moesys_expert_cache_misses_total", "Experts acquired that had to be read from the slow tier.", c(func(k offload.Counts) float64 { return float64(k.Misses) }))
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "moesys_expert_cache_hit_ratio",
			Help: "Expert slot hit rate since start: hits / (hits + misses)."}, c(func(k offload.Counts) float64 { return k.HitRate() })))
		counter("moesys_slow_tier_read_bytes_total", "Bytes of experts read from the slow tier (disk).", c(func(k offload.Counts) float64 { return float64(k.BytesRead) }))
		counter("moesys_slow_tier_reads_total", "Expert reads from the slow tier (on demand and ahead).", c(func(k offload.Counts) float64 { return float64(k.Reads) }))
		counter("moesys_expert_stall_seconds_total", "Time passes waited for experts to arrive.", c(func(k offload.Counts) float64 { return k.Stall.Seconds() }))
	}
	return m
}

// observe records one answered request.
func (m *metrics) observe(endpoint string, code int, arrived, firstToken time.Time) {
	m.requests.WithLabelValues(endpoint, strconv.Itoa(code)).Inc()
	if arrived.IsZero() {
		return
	}
	m.latency.WithLabelValues(endpoint).Observe(time.Since(arrived).Seconds())
	if !firstToken.IsZero() {
		m.ttft.WithLabelValues(endpoint).Observe(firstToken.Sub(arrived).Seconds())
	}
}
