package httpapi

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/wire"
)

// Metrics are the server's Prometheus metrics. One value per server: tests run several servers
// in one process, so nothing is registered globally.
type Metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	checkins    prometheus.Counter
	shed        prometheus.Counter
	tokensShed  prometheus.Counter
	enrolShed   prometheus.Counter
	reportsShed prometheus.Counter
	failures    *prometheus.CounterVec
	dbLatency   *prometheus.HistogramVec
	rows        *prometheus.CounterVec
	// auditFailures counts calls whose audit record could not be stored (answered 500);
	// auditDropped refused calls without a credential not recorded past the per-address rate.
	auditFailures prometheus.Counter
	auditDropped  prometheus.Counter
	routes        sync.Map // route pattern -> *routeMetrics

	// Rollouts, if set, counts campaigns by state and the members of unfinished campaigns by
	// status; it is called at every scrape of /metrics (upkeep_rollout_campaigns,
	// upkeep_rollout_members). Set it before serving.
	Rollouts func(ctx context.Context) (campaigns, members map[string]int, err error)
}

// NewMetrics registers the metrics in a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "upkeep_http_requests_total", Help: "HTTP requests by route and status code."},
			[]string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "upkeep_http_request_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5}}, []string{"route"}),
		checkins:    prometheus.NewCounter(prometheus.CounterOpts{Name: "upkeep_checkins_total", Help: "Device check-ins answered."}),
		shed:        prometheus.NewCounter(prometheus.CounterOpts{Name: "upkeep_checkins_shed_total", Help: "Check-ins refused with 429 under overload."}),
		tokensShed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "upkeep_token_requests_shed_total", Help: "Device token requests refused with 429 under overload."}),
		enrolShed:   prometheus.NewCounter(prometheus.CounterOpts{Name: "upkeep_enrolments_limited_total", Help: "Enrolments refused with 429: the source address's EnrollPerMinute was used up."}),
		reportsShed: prometheus.NewCounter(prometheus.CounterOpts{Name: "upkeep_reports_limited_total", Help: "Device reports refused with 429: the device's ReportsPerMinute was used up."}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "upkeep_device_failures_total", Help: "Failed update steps reported by devices, by step and fatality."},
			[]string{"step", "fatal"}),
		dbLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "upkeep_db_seconds", Help: "Latency of database work by operation."},
			[]string{"op"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "upkeep_db_rows_written_total", Help: "Rows written by batched database work, by operation (last_seen: devices' last-seen times)."},
			[]string{"op"}),
		auditFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "upkeep_audit_failures_total", Help: "Management calls answered 500 because their audit record could not be stored."}),
		auditDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "upkeep_audit_dropped_total",
			Help: "Refused management calls without a valid credential not recorded: their source address passed its per-minute allowance of records."}),
	}
	m.reg.MustRegister(m.auditFailures, m.auditDropped, rolloutCollector{m}, m.requests, m.latency, m.checkins, m.shed, m.tokensShed, m.enrolShed, m.reportsShed, m.failures, m.dbLatency, m.rows,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

// ObserveDB records how long a database operation took.
func (m *Metrics) ObserveDB(op string, d time.Duration) {
	m.dbLatency.WithLabelValues(op).Observe(d.Seconds())
}

// RowsWritten counts n rows written by the batched database work op.
func (m *Metrics) RowsWritten(op string, n int) {
	if n > 0 {
		m.rows.WithLabelValues(op).Add(float64(n))
	}
}

// knownSteps are the update steps of the wire protocol: the only step labels of
// upkeep_device_failures_total. A device names its step itself, so any other value counts as
// "other" rather than creating a series per value.
var knownSteps = map[string]bool{
	wire.StepCheck: true, wire.StepVerify: true, wire.StepDownload: true, wire.StepInstall: true,
	wire.StepReboot: true, wire.StepHealth: true, wire.StepCommit: true, wire.StepRollback: true,
}

func (m *Metrics) reported(events []wire.Event) {
	for _, e := range events {
		if e.Status == wire.StatusFailed {
			step := e.Step
			if !knownSteps[step] {
				step = "other"
			}
			m.failures.WithLabelValues(step, strconv.FormatBool(e.Fatal)).Inc()
		}
	}
}

// Campaign states and member statuses reported even when none are counted, so that dashboards
// see zeros rather than missing series.
var (
	campaignStates = []string{rollout.StateCreated, rollout.StateScheduled, rollout.StateRunning, rollout.StatePaused, rollout.StateCompleted, rollout.StateCancelled}
	memberStatuses = []string{rollout.MemberPending, rollout.MemberAssigned, rollout.MemberWaiting, rollout.MemberCommitted, rollout.MemberHealthy, rollout.MemberFailed, rollout.MemberSuperseded, rollout.MemberCancelled}
)

var (
	campaignsDesc = prometheus.NewDesc("upkeep_rollout_campaigns", "Rollout campaigns by state.", []string{"state"}, nil)
	membersDesc   = prometheus.NewDesc("upkeep_rollout_members", "Devices in unfinished rollout campaigns (created, running, paused) by status.", []string{"status"}, nil)
)

// rolloutCollector reads the rollout gauges from the store at scrape time.
type rolloutCollector struct{ m *Metrics }

func (c rolloutCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- campaignsDesc
	ch <- membersDesc
}

func (c rolloutCollector) Collect(ch chan<- prometheus.Metric) {
	if c.m.Rollouts == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	campaigns, members, err := c.m.Rollouts(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(campaignsDesc, err)
		return
	}
	emit := func(desc *prometheus.Desc, known []string, counts map[string]int) {
		for _, k := range known {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(counts[k]), k)
		}
		for k, n := range counts {
			if !slices.Contains(known, k) {
				ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, float64(n), k)
			}
		}
	}
	emit(campaignsDesc, campaignStates, campaigns)
	emit(membersDesc, memberStatuses, members)
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
			// The cause names hosts and ports; the caller is not authenticated.
			s.logger().Warn("not ready", LogErr, err)
			http.Error(w, "not ready: database unavailable", http.StatusServiceUnavailable)
			return
		}
	}
	w.Write([]byte("ready\n"))
}
