package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/wire"
)

// enroll admits a device. Its body is read (within BodyTimeout) before anything else; then an
// enrolment without an enrolment token, which creates a pending entry for an operator, is
// limited per source address (EnrollPerMinute), and so is the next one after a refused token.
func (s *Server) enroll(w http.ResponseWriter, r *http.Request) {
	var body bytes.Buffer
	if err := s.readDeviceBody(w, r, wire.MaxEnrollBody, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	client, token := clientKey(r), r.Header.Get(wire.HeaderEnrollToken)
	perMinute := cmp.Or(s.EnrollPerMinute, DefaultEnrollPerMinute)
	if token == "" {
		if ok, wait := s.enrolRate.allow(client, perMinute, time.Now()); !ok {
			s.Metrics.enrolShed.Inc()
			s.busyFor(w, r, wait, "too many enrolments from this address: try again later")
			return
		}
	}
	if !s.perIP.acquire(client, cmp.Or(s.MaxPerIP, DefaultMaxPerIP)) {
		s.busy(w, r, "too many requests in flight from this address: try again later")
		return
	}
	defer s.perIP.release(client)
	s.signed(w, r, &body, func(req wire.SignedRequest) (*wire.EnrollResponse, error) {
		resp, err := s.Fleet.Enroll(r.Context(), req, token)
		if token != "" && (apperr.Is(err, apperr.Unauthorized) || apperr.Is(err, apperr.Forbidden)) {
			s.enrolRate.charge(client, perMinute, time.Now()) // guessing tokens costs the guesser
		}
		return resp, err
	})
}

// token issues a fresh device token. It costs a signature check and a store read, and after an
// outage longer than the token lifetime every device asks at once, so token requests in flight
// are bounded like check-ins (MaxTokenRequests, and MaxPerIP per source address) and the excess
// told to come back later. The body is read first: a slow sender holds no place.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	var body bytes.Buffer
	if err := s.readDeviceBody(w, r, wire.MaxEnrollBody, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	client := clientKey(r)
	if !s.perIP.acquire(client, cmp.Or(s.MaxPerIP, DefaultMaxPerIP)) {
		s.Metrics.tokensShed.Inc()
		s.busy(w, r, "too many token requests in flight from this address: ask again later")
		return
	}
	defer s.perIP.release(client)
	if !admit(&s.tokensInflight, s.MaxTokenRequests) {
		s.Metrics.tokensShed.Inc()
		s.busy(w, r, "server busy: ask for a token again later")
		return
	}
	defer s.tokensInflight.Add(-1)
	s.signed(w, r, &body, func(req wire.SignedRequest) (*wire.EnrollResponse, error) { return s.Fleet.Token(r.Context(), req) })
}

// admit counts a request in flight on n unless max are already; the caller that is admitted
// subtracts it again when done.
func admit(n *atomic.Int64, max int) bool {
	if n.Add(1) > int64(max) {
		n.Add(-1)
		return false
	}
	return true
}

// Retry-After window of a refused request: shed devices come back spread over
// [retryMinSeconds, retryMinSeconds+retrySpreadSeconds), not together.
const (
	retryMinSeconds    = 30
	retrySpreadSeconds = 60
)

// busy refuses an overloaded request: 429 with a randomised Retry-After.
func (s *Server) busy(w http.ResponseWriter, r *http.Request, msg string) {
	w.Header().Set("Retry-After", strconv.Itoa(retryMinSeconds+rand.IntN(retrySpreadSeconds)))
	s.fail(w, r, apperr.E(apperr.Busy, "%s", msg))
}

// signed serves a device-signed request: 200 with a token when the device is accepted, 202
// while it waits for an operator.
func (s *Server) signed(w http.ResponseWriter, r *http.Request, body *bytes.Buffer, f func(wire.SignedRequest) (*wire.EnrollResponse, error)) {
	var req wire.SignedRequest
	if err := decodeFrom(body, wire.MaxEnrollBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	resp, err := f(req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if resp.Status != "accepted" {
		status = http.StatusAccepted
	}
	writeJSON(w, status, resp)
}

// checkin is the hot path: answered from memory, no signing, no per-request write. An agent that
// sends If-None-Match with the director version it holds gets 304 when nothing changed. The body
// is read (within BodyTimeout) before the check-in takes a place among its device's
// (MaxPerDevice) and everyone's (MaxCheckins).
func (s *Server) checkin(w http.ResponseWriter, r *http.Request, id string) {
	br := bodyReaders.Get().(*bytes.Buffer)
	defer bodyReaders.Put(br)
	br.Reset()
	if err := s.readDeviceBody(w, r, wire.MaxCheckinBody, br); err != nil {
		s.fail(w, r, err)
		return
	}
	if !s.perDevice.acquire(id, cmp.Or(s.MaxPerDevice, DefaultMaxPerDevice)) {
		s.Metrics.shed.Inc()
		s.busy(w, r, "too many check-ins of this device in flight: check in again later")
		return
	}
	defer s.perDevice.release(id)
	if !admit(&s.inflight, s.MaxCheckins) {
		s.Metrics.shed.Inc()
		s.busy(w, r, "server busy: check in again later")
		return
	}
	defer s.inflight.Add(-1)
	s.Metrics.checkins.Inc()
	var c wire.Checkin
	if err := s.decodeCheckin(br.Bytes(), id, &c); err != nil {
		s.fail(w, r, err)
		return
	}
	resp, err := s.Fleet.Checkin(r.Context(), id, c)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	etag := `"` + strconv.FormatInt(resp.DirectorVersion, 10) + `"`
	w.Header()["Etag"] = []string{etag} // canonical already: Set would spell it again per request
	w.Header()[wire.HeaderPollInterval] = s.poll.get(resp.PollSeconds)
	resp.PollJitterSeconds = s.pollJitter(resp.PollSeconds)
	w.Header()[wire.HeaderPollJitter] = s.jitter.get(resp.PollJitterSeconds)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// pollJitter is the spread, either way, suggested around a poll interval of seconds: a fifth
// of it (as the agent spreads its polls anyway), half of it while more than half of
// MaxCheckins are in flight, so that a fleet polling together drifts apart.
func (s *Server) pollJitter(seconds int) int {
	if s.inflight.Load() > int64(s.MaxCheckins)/2 {
		return seconds / 2
	}
	return seconds / 5
}

// intHeader holds a header value built once for the integer it was last asked for: the poll
// interval and its jitter are the same in almost every answer.
type intHeader struct{ last atomic.Pointer[intValue] }

type intValue struct {
	n     int
	value []string
}

func (h *intHeader) get(n int) []string {
	if v := h.last.Load(); v != nil && v.n == n {
		return v.value
	}
	v := &intValue{n: n, value: []string{strconv.Itoa(n)}}
	h.last.Store(v)
	return v.value
}

// report stores a device's events. The body is read (within BodyTimeout) first; then the
// report takes a place among its device's requests in flight (MaxPerDevice) and one of its
// allowance of ReportsPerMinute, so that one device cannot write without bound. A refused
// report is 429 with the Retry-After when the allowance is back; the agent keeps its events
// and sends them then.
func (s *Server) report(w http.ResponseWriter, r *http.Request, id string) {
	var body bytes.Buffer
	if err := s.readDeviceBody(w, r, wire.MaxReportBody, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	if !s.perDevice.acquire(id, cmp.Or(s.MaxPerDevice, DefaultMaxPerDevice)) {
		s.busy(w, r, "too many requests of this device in flight: report again later")
		return
	}
	defer s.perDevice.release(id)
	if ok, wait := s.reportRate.allow(id, cmp.Or(s.ReportsPerMinute, DefaultReportsPerMinute), time.Now()); !ok {
		s.Metrics.reportsShed.Inc()
		s.busyFor(w, r, wait, "too many reports from this device: report again later")
		return
	}
	var rep wire.Report
	if err := decodeFrom(&body, wire.MaxReportBody, &rep); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.Fleet.Report(r.Context(), id, rep); err != nil {
		s.fail(w, r, err)
		return
	}
	s.Metrics.reported(rep.Events)
	w.WriteHeader(http.StatusNoContent)
}

// DefaultInventoryPerMinute is how many inventories one device may send per minute (a burst of
// as many) unless Server.InventoryPerMinute says otherwise; beyond, 429 with Retry-After. The
// agent sends one only when its attributes changed.
const DefaultInventoryPerMinute = 2

// inventory replaces the device's attributes with the set it sends (fleet.Service.SetInventory).
// A body over wire.MaxInventoryBody is 413; an inventory over a limit of internal/inventory is
// 413 too, a bad key or value 400, each with a message naming it.
func (s *Server) inventory(w http.ResponseWriter, r *http.Request, id string) {
	var body bytes.Buffer
	if err := s.readDeviceBody(w, r, wire.MaxInventoryBody, &body); err != nil {
		s.fail(w, r, err)
		return
	}
	if !s.perDevice.acquire(id, cmp.Or(s.MaxPerDevice, DefaultMaxPerDevice)) {
		s.busy(w, r, "too many requests of this device in flight: send the inventory again later")
		return
	}
	defer s.perDevice.release(id)
	if ok, wait := s.inventoryRate.allow(id, cmp.Or(s.InventoryPerMinute, DefaultInventoryPerMinute), time.Now()); !ok {
		s.busyFor(w, r, wait, "too many inventories from this device: send it again later")
		return
	}
	var inv wire.Inventory
	if err := decodeFrom(&body, wire.MaxInventoryBody, &inv); err != nil {
		s.fail(w, r, err)
		return
	}
	resp, err := s.Fleet.SetInventory(r.Context(), id, inv)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) directorMeta(w http.ResponseWriter, r *http.Request, id string) {
	b, err := s.Director.Metadata(r.Context(), id, r.PathValue("file"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (s *Server) imageMeta(w http.ResponseWriter, r *http.Request) {
	b, err := s.Images.Metadata(r.Context(), r.PathValue("file"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if r.PathValue("file") == "timestamp.json" {
		w.Header().Set("Cache-Control", "no-cache")
	} else {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	}
	w.Write(b)
}

// artifact streams a target's bytes, with Range support so that interrupted downloads resume.
// A device gets only a target its own director view names (repo.Service.MayFetch: 403
// otherwise), checked before the bytes are served or the pre-signed URL is made.
func (s *Server) artifact(w http.ResponseWriter, r *http.Request, id string) {
	name := r.PathValue("name")
	if err := tuf.ValidTargetName(name); err != nil {
		s.fail(w, r, apperr.E(apperr.Invalid, "%v", err))
		return
	}
	if err := s.Director.MayFetch(r.Context(), id, name); err != nil {
		s.fail(w, r, err)
		return
	}
	sha, err := s.artifactDigest(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if ps, ok := s.Blobs.(release.Presigner); ok {
		// The device fetches from object storage directly; TUF hashes still guard the bytes.
		u, err := ps.PresignGet(r.Context(), sha, 15*time.Minute)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		http.Redirect(w, r, u, http.StatusTemporaryRedirect)
		return
	}
	f, _, err := s.Blobs.Open(r.Context(), sha)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+sha+`"`)
	if tooManyRanges(r.Header.Get("Range")) {
		r.Header.Del("Range") // the whole file instead (RFC 9110 14.2)
	}
	http.ServeContent(w, r, "", time.Time{}, f)
}

// maxCachedArtifacts bounds the target names whose digest a replica remembers.
const maxCachedArtifacts = 1024

// artifactDigest returns the SHA-256 of a published target. A target name never changes its
// bytes once published (publishing refuses that), so each replica remembers the answer.
func (s *Server) artifactDigest(ctx context.Context, name string) (string, error) {
	if sha, ok := s.artifacts.Load(name); ok {
		return sha.(string), nil
	}
	rels, err := s.Releases.FindReleases(ctx, release.Filter{Target: name})
	if err != nil {
		return "", err
	}
	sha := ""
	if len(rels) > 0 {
		sha = rels[0].SHA256
	} else if s.Deltas != nil { // a delta target: no release row, its digest is signed
		ds, err := s.Deltas(ctx)
		if err != nil {
			return "", err
		}
		for _, d := range ds {
			if d.Name == name {
				sha = d.SHA256
			}
		}
	}
	if sha == "" {
		return "", apperr.E(apperr.NotFound, "no target %s", name)
	}
	if s.nartifacts.Add(1) <= maxCachedArtifacts {
		s.artifacts.Store(name, sha)
	}
	return sha, nil
}
