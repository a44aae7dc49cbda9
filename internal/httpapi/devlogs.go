package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"net/http"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/faillog"
	"upkeep.dev/upkeep/wire"
)

// FailureLogs stores and serves the failure log bundles devices upload; *faillog.Service
// implements it.
type FailureLogs interface {
	// Allow takes one upload of the device's allowance; false and the wait when none is left.
	Allow(device string) (bool, time.Duration)
	// Upload parses and stores a bundle (apperr.Invalid, apperr.TooLarge).
	Upload(ctx context.Context, device string, body []byte) (*faillog.Log, error)
	// Logs returns a device's bundles, newest first: the latest only unless all.
	Logs(ctx context.Context, device string, all bool) ([]wire.DeviceLog, error)
}

// PushCredentials issues a device's broker credentials; *push.Service implements it. It returns
// apperr.NotFound when no broker is configured, so the device keeps to polling.
type PushCredentials interface {
	Credentials(ctx context.Context, device string) (*wire.PushCredentials, error)
}

var _ FailureLogs = (*faillog.Service)(nil)

// DefaultPushPerMinute bounds how often one device may ask for broker credentials (each asks
// the broker to set a password).
const DefaultPushPerMinute = 2

// uploadLog stores a device's failure log bundle. The body (at most wire.MaxLogBundle, 413 past
// it) is read within BodyTimeout first; then the upload takes a place among its device's
// requests in flight and one of its hourly allowance (429 with Retry-After past it).
func (s *Server) uploadLog(w http.ResponseWriter, r *http.Request, id string) {
	if s.Logs == nil {
		s.fail(w, r, apperr.E(apperr.NotFound, "this server keeps no failure logs"))
		return
	}
	var body bytes.Buffer
	if err := s.readDeviceBody(w, r, wire.MaxLogBundle, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	if !s.perDevice.acquire(id, cmp.Or(s.MaxPerDevice, DefaultMaxPerDevice)) {
		s.busy(w, r, "too many requests of this device in flight: upload again later")
		return
	}
	defer s.perDevice.release(id)
	if ok, wait := s.Logs.Allow(id); !ok {
		s.busyFor(w, r, wait, "too many failure logs from this device: upload again later")
		return
	}
	if _, err := s.Logs.Upload(r.Context(), id, body.Bytes()); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deviceLogs answers GET /api/v1/devices/{id}/logs[?all=true]: the latest bundle, or all kept.
func (s *Server) deviceLogs(w http.ResponseWriter, r *http.Request) {
	id, ok := s.knownDevice(w, r)
	if !ok {
		return
	}
	if s.Logs == nil {
		writeJSON(w, http.StatusOK, []wire.DeviceLog{})
		return
	}
	ls, err := s.Logs.Logs(r.Context(), id, r.URL.Query().Get("all") == "true")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ls)
}

// pushCredentials answers POST /device/v1/push: the device's broker URL, credentials and topic
// (404 when no broker is configured). At most DefaultPushPerMinute per device.
func (s *Server) pushCredentials(w http.ResponseWriter, r *http.Request, id string) {
	if s.Push == nil {
		s.fail(w, r, apperr.E(apperr.NotFound, "no push broker configured: poll"))
		return
	}
	if ok, wait := s.pushRate.allow(id, DefaultPushPerMinute, time.Now()); !ok {
		s.busyFor(w, r, wait, "too many push credential requests from this device: ask again later")
		return
	}
	c, err := s.Push.Credentials(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, c)
}
