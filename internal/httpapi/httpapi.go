// Package httpapi serves Upkeep over HTTP: the device API (/device/v1), the public image
// repository (/repo/image) and the management API (/api/v1) that the operator CLI uses.
package httpapi

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/console"
	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/wire"
)

// Server holds what the handlers need.
type Server struct {
	Fleet    DeviceService
	Images   ImageRepository // the image repository: /repo/image, publish, offline-signed metadata
	Director Director        // per-device views, deployments, the director root
	// Deltas lists the delta targets (imagerepo.Service.Deltas), which devices fetch like
	// images but which have no release row; nil: none are served.
	Deltas func(ctx context.Context) ([]delta.Target, error)
	// DeltaJobs plans and lists the per-pair deltas generated on the server; nil: none are.
	DeltaJobs   DeltaJobs
	Devices     fleet.Store
	Releases    release.Store
	Products    ProductService
	Blobs       release.BlobStore
	Admin       auth.Store
	Logger      *slog.Logger
	MaxArtifact int64 // bytes; uploads past it get 413
	Metrics     *Metrics
	// MetricsToken, if set, is the bearer token GET /metrics requires (compared in constant
	// time); empty leaves /metrics open, for a server on a loopback address.
	MetricsToken string
	// Ready reports whether the server can serve (the database answers); for /readyz.
	Ready func(ctx context.Context) error
	// MaxCheckins bounds check-ins in flight; past it devices get 429 with Retry-After and
	// come back later, so that a fleet reconnecting after an outage does not stampede.
	MaxCheckins int
	// MaxStreams bounds the console's event streams open at once (campaign progress); past it a
	// page gets 503 and shows the progress without live updates. 0: DefaultMaxStreams.
	MaxStreams int
	// MaxTokenRequests bounds device token requests in flight in the same way (each checks a
	// signature and reads the store). Default 256.
	MaxTokenRequests int
	// BodyTimeout is how long a device request's body may take to arrive (enrol, token,
	// check-in, report); it is read in full before the request takes a place among the bounds
	// above. Default DefaultBodyTimeout (10 s).
	BodyTimeout time.Duration
	// MaxPerDevice bounds one device's check-ins and reports in flight, and MaxPerIP one source
	// address's (IPv6: its /64) token requests and enrolments, in front of the global bounds, so
	// that one client cannot take the others' share. Defaults DefaultMaxPerDevice (4) and
	// DefaultMaxPerIP (32).
	MaxPerDevice, MaxPerIP int
	// EnrollPerMinute is how many enrolments without an enrolment token (or with a refused one)
	// one source address may make per minute; ReportsPerMinute how many reports one device may
	// send per minute. Beyond either: 429 with the Retry-After when the allowance is back.
	// Defaults DefaultEnrollPerMinute (30) and DefaultReportsPerMinute (20).
	EnrollPerMinute, ReportsPerMinute int
	// InventoryPerMinute limits inventories per device (default DefaultInventoryPerMinute).
	InventoryPerMinute int
	// Transparency builds the public product pages under /p/ (public.go); nil serves none.
	Transparency Publisher
	// Rollouts runs campaigns and holds groups; nil disables their routes.
	Rollouts Campaigns
	// Exposure holds SBOMs, advisories and VEX (vuln.go); nil answers those routes with 503.
	Exposure Vulnerabilities
	// Routes are served as they are, with their own authentication (the hawkBit DDI API,
	// internal/ddi); AdminRoutes behind the operator token. Keys are ServeMux patterns.
	Routes      map[string]http.Handler
	AdminRoutes map[string]http.HandlerFunc
	// Generation returns the revocation generation this replica last read (auth.Store
	// RevocationGeneration, polled by the server). A cached operator token is trusted only while
	// the generation it was read at is current. Nil: cached tokens are re-read after
	// operatorCacheTTL.
	Generation func() int64
	// Now is the clock of operator token and session expiry; nil: time.Now.
	Now func() time.Time
	// SessionTTL is a login session's absolute lifetime (default DefaultSessionTTL), SessionIdle
	// how long it may go unused (default DefaultSessionIdle).
	SessionTTL, SessionIdle time.Duration
	// CookiePath is the session cookie's path: a tenant's stack sets its prefix (/t/acme/), so
	// that a browser sends each tenant only its own session. Empty: "/".
	CookiePath string
	// SecureCookies marks the session cookie Secure even on plain HTTP requests: a
	// TLS-terminating proxy is in front. Requests over TLS always get Secure cookies.
	SecureCookies bool
	// LoginsPerMinute bounds login attempts per user name (default DefaultLoginsPerMinute) and
	// LoginsPerMinuteIP per source address (default DefaultLoginsPerMinuteIP): 429 with
	// Retry-After past them.
	LoginsPerMinute, LoginsPerMinuteIP int
	// SSO logs operators in through an OpenID Connect provider (/api/v1/oidc/...); nil: those
	// routes answer 404.
	SSO SingleSignOn
	// CSAF serves the CSAF provider and OpenVEX documents publicly; nil: none.
	CSAF CSAF
	// Logs keeps devices' failure log bundles (devlogs.go); nil: uploads get 404.
	Logs FailureLogs
	// Push issues devices' broker credentials (devlogs.go); nil: 404, devices poll.
	Push PushCredentials
	// Audit keeps the audit trail: every state-changing /api/v1 call and every login is
	// recorded before it is answered (audit.go). Nil records nothing and answers the audit
	// routes with 503.
	Audit audit.Store
	// Tenants manages the tenants (tenant.go): the default stack's alone; nil serves no
	// tenants routes.
	Tenants Tenants
	// Webhooks manages webhooks (webhook.go); nil answers those routes with 503.
	Webhooks Webhooks

	inflight       atomic.Int64 // check-ins in flight
	tokensInflight atomic.Int64 // token requests in flight
	loginsInflight atomic.Int64 // password checks in flight
	poll, jitter   intHeader    // header values of the check-in answer
	checkins       checkinBodies
	perDevice      perKey // check-ins and reports in flight per device
	perIP          perKey // token requests and enrolments in flight per source address
	enrolRate      rate   // enrolments per source address
	reportRate     rate   // reports per device
	pushRate       rate   // push credential requests per device
	inventoryRate  rate   // inventories per device

	noAuth    bool     // serve /api/v1 without authentication: BenchmarkOperatorGet's baseline, set only by a test
	routes    []Route  // every registered route, with its permission (Handler fills it)
	sessions  sync.Map // session hash (string) -> *cachedSession
	loginUser rate     // login attempts per user name
	loginIP   rate     // login attempts per source address
	// auditRefusals: records of refused calls without a credential, per source address
	auditRefusals      rate
	admins             sync.Map // token hash (string) -> *cachedOperator, for tokens that verified
	usedMu             sync.Mutex
	used               map[string]time.Time // operator token id -> last use, not yet written
	artifacts          sync.Map             // target name -> SHA-256 of its bytes
	ui                 *console.Console     // the console's templates and static files
	consoleStreams     perKey               // console event streams open per session or token, and in all (allStreams)
	streamsOnce        sync.Once            // makes streamsEnd
	streamsClose       sync.Once            // closes streamsEnd
	streamsEnd         chan struct{}        // closed by EndStreams
	fleetCounts        fleetCountCache      // the overview's last count of the fleet
	exposures          exposureCache        // the console's last exposure reports
	streamSessionEvery atomic.Int64         // how often an event stream checks its credential (ns); 0: streamSessionEvery
	maxStreams         atomic.Int64         // set by tests while streams run: overrides MaxStreams
	nartifacts         atomic.Int64
}

type ctxKey int

const (
	keyActor ctxKey = iota
	keyPrincipal
)

// Logging attribute keys.
const (
	LogDevice = "device"
	LogPath   = "path"
	LogStatus = "status"
	LogErr    = "err"
)

// Handler returns the routed handler.
func (s *Server) Handler() http.Handler {
	mux := &router{mux: http.NewServeMux(), s: s}
	if s.Metrics == nil {
		s.Metrics = NewMetrics()
	}
	if s.MaxCheckins <= 0 {
		s.MaxCheckins = 4096
	}
	if s.MaxTokenRequests <= 0 {
		s.MaxTokenRequests = 256
	}
	s.BodyTimeout = cmp.Or(s.BodyTimeout, DefaultBodyTimeout)
	s.MaxPerDevice = cmp.Or(s.MaxPerDevice, DefaultMaxPerDevice)
	s.MaxPerIP = cmp.Or(s.MaxPerIP, DefaultMaxPerIP)
	s.EnrollPerMinute = cmp.Or(s.EnrollPerMinute, DefaultEnrollPerMinute)
	s.ReportsPerMinute = cmp.Or(s.ReportsPerMinute, DefaultReportsPerMinute)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.metricsAuth(s.Metrics.Handler()))

	mux.HandleFunc("POST /device/v1/enroll", s.enroll)
	mux.HandleFunc("POST /device/v1/token", s.token)
	mux.Handle("POST /device/v1/checkin", s.device(s.checkin))
	mux.Handle("POST /device/v1/report", s.device(s.known(s.report)))
	mux.Handle("POST /device/v1/logs", s.device(s.known(s.uploadLog)))
	mux.Handle("POST /device/v1/push", s.device(s.known(s.pushCredentials)))
	mux.Handle("POST "+wire.PathInventory, s.device(s.known(s.inventory)))
	mux.Handle("GET /device/v1/director/{file}", s.device(s.known(s.directorMeta)))
	mux.Handle("GET /device/v1/targets/{name...}", s.device(s.known(s.artifact)))
	mux.HandleFunc("GET /repo/image/{file}", s.imageMeta)
	s.publicRoutes(mux)
	s.consoleRoutes(mux)

	mux.api("GET /api/v1/openapi.json", auth.PermNone, s.openAPI)
	mux.api("GET /api/v1/devices", auth.PermDevicesRead, s.listDevices)
	mux.api("DELETE /api/v1/devices", auth.PermDevicesRemove, s.removeDevices)
	mux.api("GET /api/v1/devices/{id}", auth.PermDevicesRead, s.getDevice)
	mux.api("POST /api/v1/devices/{id}/accept", auth.PermDevicesAdmit, s.acceptDevice)
	mux.api("POST /api/v1/devices/{id}/reject", auth.PermDevicesAdmit, s.rejectDevice)
	mux.api("POST /api/v1/devices/{id}/decommission", auth.PermDevicesAdmit, s.decommissionDevice)
	mux.api("GET /api/v1/devices/{id}/events", auth.PermDevicesRead, s.deviceEvents)
	mux.api("GET /api/v1/devices/{id}/logs", auth.PermDevicesRead, s.deviceLogs)
	mux.api("PUT /api/v1/blobs/{sha256}", auth.PermPublish, s.putBlob)
	mux.api("GET /api/v1/image/targets", auth.PermReleasesRead, s.currentTargets)
	mux.api("PUT /api/v1/image/root", auth.PermRotate, s.putMeta(s.Images.RotateRoot))
	mux.api("POST /api/v1/releases", auth.PermPublish, s.publish)
	mux.api("GET /api/v1/releases", auth.PermReleasesRead, s.listReleases)
	mux.api("POST /api/v1/deployments", auth.PermDeploy, s.deploy)
	mux.api("POST /api/v1/enroll-tokens", auth.PermEnrollWrite, s.createEnrollToken)
	mux.api("GET /api/v1/enroll-tokens", auth.PermEnrollRead, s.listEnrollTokens)
	mux.api("POST /api/v1/enroll-tokens/{id}/revoke", auth.PermEnrollWrite, s.revokeEnrollToken)
	s.tokenRoutes(mux)
	s.userRoutes(mux)
	s.auditRoutes(mux)
	s.tenantRoutes(mux)
	s.trustRoutes(mux)
	s.rolloutRoutes(mux)
	s.vulnRoutes(mux)
	s.webhookRoutes(mux)
	mux.api("GET /api/v1/products", auth.PermProductsRead, s.listProducts)
	mux.api("PUT /api/v1/products/{name}/policy", auth.PermProductsWrite, s.setPolicy)
	mux.api("GET /api/v1/products/{name}/history", auth.PermProductsRead, s.policyHistory)
	for p, h := range s.Routes {
		mux.Handle(p, h)
	}
	for p, h := range s.AdminRoutes {
		perm, ok := adminRoutePermissions[p]
		if !ok {
			panic(fmt.Sprintf("httpapi: admin route %q declares no permission: add it to adminRoutePermissions", p))
		}
		mux.api(p, perm, h)
	}
	s.routes = mux.routes
	return s.recoverer(s.Metrics.instrument(mux.mux))
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) recoverer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.logger().Error("panic in handler", LogPath, r.URL.Path, LogErr, fmt.Sprint(v))
				s.fail(w, r, apperr.E(apperr.Internal, "internal error"))
			}
		}()
		h.ServeHTTP(w, r)
	})
}

// fail writes err as a JSON error body; internal details are logged, never sent.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := apperr.CodeOf(err)
	status := apperr.HTTPStatus(code)
	if code == apperr.Busy && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", strconv.Itoa(retryMinSeconds+rand.IntN(retrySpreadSeconds)))
	}
	if code == apperr.Internal {
		s.logger().Error("request failed", LogPath, r.URL.Path, LogErr, err)
	}
	writeJSON(w, status, wire.Error{Code: string(code), Message: apperr.Message(err)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body of at most limit bytes, refusing unknown fields and trailing data.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	return decodeFrom(http.MaxBytesReader(w, r.Body, limit), limit, v)
}

// decodeFrom decodes one JSON value from rd (which fails with *http.MaxBytesError past limit).
func decodeFrom(rd io.Reader, limit int64, v any) error {
	dec := json.NewDecoder(rd)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return apperr.E(apperr.TooLarge, "request body is larger than %d bytes", limit)
		}
		return apperr.Wrap(apperr.Invalid, err, "malformed JSON body: "+err.Error())
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return apperr.E(apperr.Invalid, "malformed JSON body: trailing data after the JSON value")
	}
	return nil
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") { // the scheme is case-insensitive (RFC 9110 11.1)
		return ""
	}
	return strings.TrimSpace(h[7:])
}

// deviceHandler serves a request of the authenticated device id.
type deviceHandler func(w http.ResponseWriter, r *http.Request, id string)

// device authenticates a device token and hands the handler the device's id (as an argument:
// a request copied with a new context cost more than the rest of a check-in's routing). The
// token of a decommissioned device is refused.
func (s *Server) device(h deviceHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := s.Fleet.Authenticate(bearer(r))
		if err != nil {
			msg := "invalid or expired device token: request a new one"
			if errors.Is(err, fleet.ErrDecommissioned) {
				msg = "device token revoked: the device is decommissioned"
			}
			s.fail(w, r, apperr.Wrap(apperr.Unauthorized, err, msg))
			return
		}
		h(w, r, id)
	})
}

// known additionally requires the token's device to exist and be accepted. The check-in hot path
// skips it: fleet.Service.Checkin answers unknown devices from the store.
func (s *Server) known(h deviceHandler) deviceHandler {
	return func(w http.ResponseWriter, r *http.Request, id string) {
		if err := s.Fleet.RequireAccepted(r.Context(), id); err != nil {
			s.fail(w, r, err)
			return
		}
		h(w, r, id)
	}
}

// metricsAuth requires MetricsToken, when one is set, before h.
func (s *Server) metricsAuth(h http.Handler) http.Handler {
	if s.MetricsToken == "" {
		return h
	}
	want := sha256.Sum256([]byte(s.MetricsToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := sha256.Sum256([]byte(bearer(r)))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			s.fail(w, r, apperr.E(apperr.Unauthorized, "metrics token required (Authorization: Bearer ...)"))
			return
		}
		h.ServeHTTP(w, r)
	})
}
