package openai

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mamba2web/mamba2/model"
)

// metrics are the Handler's Prometheus series, in a registry of its own
// (not the global one), so several Handlers (tests, two models) never
// collide. docs/server.md lists them.
type metrics struct {
	reg              *prometheus.Registry
	requests         *prometheus.CounterVec   // endpoint, status
	promptTokens     prometheus.Counter       // prompt tokens of finished requests, cached ones included
	cachedTokens     prometheus.Counter       // of those, restored from the prefix cache
	completionTokens prometheus.Counter       // tokens generated
	inFlight         prometheus.Gauge         // requests being answered
	firstToken       *prometheus.HistogramVec // endpoint
	duration         *prometheus.HistogramVec // endpoint
}

// Buckets in seconds: time to first token spans a short prompt on a GPU
// (milliseconds) to a long one queued behind others on a CPU (a minute);
// a whole request, up to the default timeout.
var (
	firstTokenBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	durationBuckets   = []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
)

func newMetrics(engine Engine, prefixes *model.PrefixCache) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mamba2_http_requests_total",
			Help: "HTTP requests answered, by endpoint and status code (499: the client went away first).",
		}, []string{"endpoint", "status"}),
		promptTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mamba2_prompt_tokens_total",
			Help: "Prompt tokens of completed generations, cached ones included.",
		}),
		cachedTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mamba2_prompt_tokens_cached_total",
			Help: "Prompt tokens restored from the prefix cache instead of prefilled.",
		}),
		completionTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mamba2_completion_tokens_total",
			Help: "Tokens generated.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mamba2_requests_in_flight",
			Help: "Generation requests being answered (queued or running).",
		}),
		firstToken: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mamba2_time_to_first_token_seconds",
			Help:    "From a request's arrival to its first generated token (queueing, tokenizing, prefill, one step).",
			Buckets: firstTokenBuckets,
		}, []string{"endpoint"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mamba2_request_duration_seconds",
			Help:    "From a generation request's arrival to the end of its response.",
			Buckets: durationBuckets,
		}, []string{"endpoint"}),
	}
	m.reg.MustRegister(m.requests, m.promptTokens, m.cachedTokens, m.completionTokens, m.inFlight, m.firstToken, m.duration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if q, ok := engine.(QueueDepther); ok {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mamba2_queue_depth",
			Help: "Generations waiting for the engine (not counting those running).",
		}, func() float64 { return float64(q.QueueDepth()) }))
	}
	if prefixes != nil {
		stat := func(f func(model.PrefixStats) float64) func() float64 {
			return func() float64 { return f(prefixes.Stats()) }
		}
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mamba2_prefix_cache_entries", Help: "Saved prefix states held."},
				stat(func(s model.PrefixStats) float64 { return float64(s.Entries) })),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mamba2_prefix_cache_bytes", Help: "Bytes of saved prefix states and their keys."},
				stat(func(s model.PrefixStats) float64 { return float64(s.Bytes) })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mamba2_prefix_cache_hits_total", Help: "Lookups that found a cached prefix."},
				stat(func(s model.PrefixStats) float64 { return float64(s.Hits) })),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mamba2_prefix_cache_misses_total", Help: "Lookups that found none."},
				stat(func(s model.PrefixStats) float64 { return float64(s.Misses) })),
		)
	}
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}
