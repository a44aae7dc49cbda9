package httpapi

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"upkeep.dev/upkeep/wire"
)

// Metrics are the server's Prometheus metrics. One value per server: tests run several servers
// in one process, so nothing is registered globally.
type Metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	checkins   prometheus.Counter
	shed       prometheus.Counter
	tokensShed prometheus.Counter
	failures   *prometheus.CounterVec
	dbLatency  *prometheus.HistogramVec
	routes     sync.Map // route pattern -> *routeMetrics
}

// NewMetrics registers the metrics in a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "upkeep_http_requests_total", Help: "HTTP requests by route and status code."},
			[]string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "upkeep_http_request_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5}}, []string{"route"}),
		checkins:   prometheus.NewCounter(prometheus.CounterOpts{Name: "upkeep_checkins_total", Help: "Device check-ins answered."}),
		shed:       prometheus.NewCounter(prometheus.CounterOpts{Name: "upkeep_checkins_shed_total", Help: "Check-ins refused with 429 under overload."}),
		tokensShed: prometheus.NewCounter(prometheus.CounterOpts{Name: "upkeep_token_requests_shed_total", Help: "Device token requests refused with 429 under overload."}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "upkeep_device_failures_total", Help: "Failed update steps reported by devices, by step and fatality."},
			[]string{"step", "fatal"}),
		dbLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "upkeep_db_seconds", Help: "Latency of database work by operation."},
			[]string{"op"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.checkins, m.shed, m.tokensShed, m.failures, m.dbLatency,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

// ObserveDB records how long a database operation took.
func (m *Metrics) ObserveDB(op string, d time.Duration) {
	m.dbLatency.WithLabelValues(op).Observe(d.Seconds())
}

func (m *Metrics) reported(events []wire.Event) {
	for _, e := range events {
		if e.Status == wire.StatusFailed {
			m.failures.WithLabelValues(e.Step, strconv.FormatBool(e.Fatal)).Inc()
		}
	}
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }

// ReadFrom keeps the server's sendfile path for files copied into the answer (artifacts).
func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
}

// Unwrap gives http.ResponseController the server's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush lets streamed answers through.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// instrument counts and times requests by route pattern.
func (m *Metrics) instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(sw, r)
		rm := m.route(r.Pattern)
		rm.latency.Observe(time.Since(start).Seconds())
		rm.count(m, sw.code)
	})
}

// routeMetrics are one route's series, looked up once rather than by label values on every
// request (hashing the labels cost more than counting).
type routeMetrics struct {
	name    string
	latency prometheus.Observer
	codes   sync.Map // status code (int) -> prometheus.Counter
}

func (m *Metrics) route(pattern string) *routeMetrics {
	if pattern == "" {
		pattern = "unmatched"
	}
	if rm, ok := m.routes.Load(pattern); ok {
		return rm.(*routeMetrics)
	}
	rm, _ := m.routes.LoadOrStore(pattern, &routeMetrics{name: pattern, latency: m.latency.WithLabelValues(pattern)})
	return rm.(*routeMetrics)
}

func (rm *routeMetrics) count(m *Metrics, code int) {
	c, ok := rm.codes.Load(code)
	if !ok {
		c, _ = rm.codes.LoadOrStore(code, m.requests.WithLabelValues(rm.name, strconv.Itoa(code)))
	}
	c.(prometheus.Counter).Inc()
}

// readyz answers 200 when the database answers within a second.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), time.Second)
	defer cancel()
	if s.Ready != nil {
		if err := s.Ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	w.Write([]byte("ready\n"))
}
