package httpapi

import (
	"cmp"
	"context"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/delta"
	"upkeep.dev/upkeep/internal/deltagen"
	"upkeep.dev/upkeep/internal/director"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/wire"
)

// DeviceToWire converts a device for the API.
func DeviceToWire(d *fleet.Device) wire.Device {
	return wire.Device{
		ID: d.ID, Kind: cmpOr(d.Kind, fleet.KindAgent), Status: d.Status, Serial: d.Serial, Product: d.Product, HardwareID: d.HardwareID, Attributes: d.Attributes,
		Installed: wire.Installed{Target: d.InstalledTarget, Version: d.InstalledVer, SecurityVersion: d.SecurityVersion, SHA256: d.InstalledSHA256},
		State:     d.State, LastError: d.LastError, Assigned: d.Assigned, DirectorVersion: d.DirectorVersion, LastSeen: d.LastSeen, EnrolledAt: d.EnrolledAt,
		Simulated: d.Simulated,
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func releaseToWire(r *release.Release) wire.Release {
	return wire.Release{Product: r.Product, Version: r.Version, HardwareIDs: r.HardwareIDs, SecurityVersion: r.SecurityVersion,
		Class: r.Class, Target: r.Target, Length: r.Length, SHA256: r.SHA256, PublishedAt: r.PublishedAt}
}

func (s *Server) listDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := fleet.DeviceFilter{Product: q.Get("product"), HardwareID: q.Get("hardware_id"), Status: q.Get("status"), Kind: q.Get("kind")}
	f.Limit, _ = strconv.Atoi(q.Get("limit"))
	f.Offset, _ = strconv.Atoi(q.Get("offset"))
	ds, err := s.Devices.FindDevices(r.Context(), f)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]wire.Device, len(ds))
	for i, d := range ds {
		out[i] = DeviceToWire(d)
	}
	writeJSON(w, http.StatusOK, out)
}

// removeDevices removes the simulated devices; only those: ?simulated=true is required, so
// that no request removes real devices by accident.
func (s *Server) removeDevices(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("simulated") != "true" {
		s.fail(w, r, apperr.E(apperr.Invalid, "only simulated devices can be removed: give simulated=true"))
		return
	}
	n, err := s.Fleet.RemoveSimulated(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("simulated devices removed", "devices", n, "actor", r.Context().Value(keyActor))
	writeJSON(w, http.StatusOK, wire.RemoveDevicesResponse{Removed: n})
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := s.Devices.FindDevice(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, DeviceToWire(d))
}

// acceptDevice admits a pending or rejected device; ?readmit=true also a decommissioned one.
func (s *Server) acceptDevice(w http.ResponseWriter, r *http.Request) {
	readmit, _ := strconv.ParseBool(r.URL.Query().Get("readmit"))
	s.deviceAction(w, r, "accepted", func(ctx context.Context, id string) error { return s.Fleet.Accept(ctx, id, readmit) })
}

// knownDevice is the {id} of a device route if such a device exists; otherwise it answers 404,
// so that a mistyped id is not taken for a device with nothing to show.
func (s *Server) knownDevice(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if _, err := s.Devices.FindDevice(r.Context(), id); err != nil {
		s.fail(w, r, err)
		return "", false
	}
	return id, true
}

func (s *Server) deviceEvents(w http.ResponseWriter, r *http.Request) {
	id, ok := s.knownDevice(w, r)
	if !ok {
		return
	}
	ev, err := s.Devices.FindEvents(r.Context(), id, 200)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]wire.Event, len(ev))
	for i, e := range ev {
		out[i] = wire.Event{Time: e.Time, Target: e.Target, Step: e.Step, Status: e.Status, Fatal: e.Fatal, Message: e.Message}
	}
	writeJSON(w, http.StatusOK, out)
}

// blobName is the {sha256} of a blob route, lower-cased: 64 hex digits, or apperr.Invalid.
func blobName(r *http.Request) (string, error) {
	sum := strings.ToLower(r.PathValue("sha256"))
	if _, err := hex.DecodeString(sum); err != nil || len(sum) != 64 {
		return "", apperr.E(apperr.Invalid, "blob name must be the 64-hex-character sha256 of the artifact")
	}
	return sum, nil
}

// putBlob streams an artifact into the blob store; the path names its SHA-256, which is checked.
func (s *Server) putBlob(w http.ResponseWriter, r *http.Request) {
	want, err := blobName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if r.ContentLength > s.MaxArtifact {
		s.fail(w, r, apperr.E(apperr.TooLarge, "artifact is larger than the %d byte limit", s.MaxArtifact))
		return
	}
	b, err := s.Blobs.Put(r.Context(), r.Body, s.MaxArtifact, want)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, wire.BlobInfo{SHA256: b.SHA256, SHA512: b.SHA512, Length: b.Length})
}

// currentTargets serves the latest top-level image targets, or with ?role= a delegated role's.
func (s *Server) currentTargets(w http.ResponseWriter, r *http.Request) {
	var b []byte
	var err error
	if role := r.URL.Query().Get("role"); role != "" {
		b, err = s.Images.CurrentRole(r.Context(), role)
	} else {
		b, err = s.Images.CurrentTargets(r.Context())
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// putMeta serves an upload of offline-signed metadata (a root, re-signed targets) that accept
// verifies and stores: 204 when accepted.
func (s *Server) putMeta(accept func(ctx context.Context, data []byte) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		b, err := readBody(w, r, wire.MaxMetaBody)
		if err == nil {
			err = accept(r.Context(), b)
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

// trustRoutes serves the offline-signed metadata that is renewed without a release: the
// director root and re-signed image targets, and when each expires.
func (s *Server) trustRoutes(mux *router) {
	mux.api("PUT /api/v1/image/targets", auth.PermResign, s.putMeta(s.Images.ResignTargets))
	mux.api("PUT /api/v1/image/delegations", auth.PermRotate, s.putDelegations)
	mux.api("POST /api/v1/deltas", auth.PermPublish, s.addDeltas)
	mux.api("GET /api/v1/deltas", auth.PermReleasesRead, s.listDeltaJobs)
	mux.api("POST /api/v1/deltas/generate", auth.PermPublish, s.planDeltas)
	mux.api("GET /api/v1/blobs/{sha256}", auth.PermPublish, s.getBlob)
	mux.api("GET /api/v1/director/{file}", auth.PermTrustRead, s.directorRootFile)
	mux.api("PUT /api/v1/director/root", auth.PermRotate, s.putMeta(s.Director.RotateRoot))
	mux.api("GET /api/v1/trust/expiry", auth.PermTrustRead, s.trustExpiry)
}

// putDelegations accepts a delegation ceremony's roles (imagerepo.Service.Delegate).
func (s *Server) putDelegations(w http.ResponseWriter, r *http.Request) {
	var req wire.DelegationRequest
	if err := decode(w, r, wire.MaxMetaBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	roles := make(map[string][]byte, len(req.Roles))
	for role, b := range req.Roles {
		roles[role] = b
	}
	stored, err := s.Images.Delegate(r.Context(), roles)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	audit.SetTarget(r.Context(), strings.Join(stored, ","))
	s.logger().Info("image delegations changed", "roles", stored, "actor", r.Context().Value(keyActor))
	writeJSON(w, http.StatusOK, wire.DelegationResponse{Stored: stored})
}

// directorRootFile serves "N.root.json" of the director, for the CLI that re-signs it (devices
// read the same files under /device/v1/director/).
func (s *Server) directorRootFile(w http.ResponseWriter, r *http.Request) {
	b, err := s.Director.Root(r.Context(), r.PathValue("file"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (s *Server) trustExpiry(w http.ResponseWriter, r *http.Request) {
	es, err := s.Images.OfflineExpiries(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]wire.MetadataExpiry, len(es))
	for i, e := range es {
		out[i] = wire.MetadataExpiry{Repo: e.Repo, Role: e.Role, Version: e.Version, Expires: e.Expires, Renew: imagerepo.RenewCommand(e)}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	var req wire.PublishRequest
	if err := decode(w, r, wire.MaxMetaBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	// The product's release gate (docs/VULNERABILITIES.md) refuses before anything is stored.
	if s.Exposure != nil {
		if err := s.Exposure.GatePublish(r.Context(), req.Target, req.Targets); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	rel, err := s.Images.Publish(r.Context(), req.Target, req.Targets)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	audit.SetTarget(r.Context(), rel.Ref())
	s.logger().Info("release published", "release", rel.Ref(), "actor", r.Context().Value(keyActor))
	writeJSON(w, http.StatusCreated, releaseToWire(rel))
}

func (s *Server) listReleases(w http.ResponseWriter, r *http.Request) {
	rels, err := s.Releases.FindReleases(r.Context(), release.Filter{Product: r.URL.Query().Get("product")})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var running map[string]int
	if p := r.URL.Query().Get("product"); p != "" {
		if running, err = s.Releases.CountRunning(r.Context(), p); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	out := make([]wire.Release, len(rels))
	for i, rel := range rels {
		out[i] = releaseToWire(rel)
		out[i].Running = running[rel.Target]
	}
	writeJSON(w, http.StatusOK, out)
}

// addDeltas publishes delta targets for releases already published (`upkeep release deltas`).
func (s *Server) addDeltas(w http.ResponseWriter, r *http.Request) {
	var req wire.DeltasRequest
	if err := decode(w, r, wire.MaxAPIBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	added, err := s.Images.AddDeltas(r.Context(), req.Targets)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("delta targets published", "targets", added, "actor", r.Context().Value(keyActor))
	writeJSON(w, http.StatusOK, wire.DeltasResponse{Added: added})
}

// listDeltaJobs lists a release's per-pair deltas generated (or being generated) on the server,
// each marked signed once a delta target of that name is published.
func (s *Server) listDeltaJobs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	product, version := q.Get("product"), q.Get("version")
	if product == "" || version == "" {
		s.fail(w, r, apperr.E(apperr.Invalid, "give the release: ?product=P&version=V"))
		return
	}
	if _, err := s.Releases.FindRelease(r.Context(), product, version); err != nil {
		s.fail(w, r, err)
		return
	}
	var jobs []*deltagen.Job
	var err error
	if s.DeltaJobs != nil {
		jobs, err = s.DeltaJobs.Jobs(r.Context(), product, version)
	}
	s.answerDeltaJobs(w, r, jobs, err)
}

// planDeltas plans per-pair deltas to a release now; the generation runs in the background.
func (s *Server) planDeltas(w http.ResponseWriter, r *http.Request) {
	var req wire.DeltaPlanRequest
	if err := decode(w, r, wire.MaxAPIBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	audit.SetTarget(r.Context(), req.Product+"@"+req.Version)
	if s.DeltaJobs == nil {
		s.fail(w, r, apperr.E(apperr.Unavailable, "this server does not generate deltas (serve --delta-jobs=false)"))
		return
	}
	if req.Top < 0 || req.Top > 20 || req.MinDevices < 0 {
		s.fail(w, r, apperr.E(apperr.Invalid, "top must be 0 to 20 and min_devices at least 0"))
		return
	}
	jobs, err := s.DeltaJobs.Plan(r.Context(), req.Product, req.Version, req.Top, req.MinDevices)
	s.answerDeltaJobs(w, r, jobs, err)
}

func (s *Server) answerDeltaJobs(w http.ResponseWriter, r *http.Request, jobs []*deltagen.Job, err error) {
	signed := map[string]bool{}
	if err == nil && s.Deltas != nil {
		var ds []delta.Target
		if ds, err = s.Deltas(r.Context()); err == nil {
			for _, d := range ds {
				signed[d.Name] = true
			}
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := wire.DeltaJobs{Jobs: make([]wire.DeltaJob, len(jobs))}
	for i, j := range jobs {
		out.Jobs[i] = wire.DeltaJob{Product: j.Product, Version: j.Version, From: j.From, Target: j.Target(), Image: j.Image, Source: j.Source,
			Devices: j.Devices, State: j.State, Done: j.Done, ImageLength: j.ImageLength, PatchLength: j.PatchLength,
			PatchSHA256: j.PatchSHA256, PatchSHA512: j.PatchSHA512, Error: j.Error, Signed: signed[j.Target()], UpdatedAt: j.UpdatedAt}
	}
	writeJSON(w, http.StatusOK, out)
}

// getBlob serves an uploaded artifact to a release engineer (`upkeep release deltas` reads the
// images it makes patches between), with range requests.
func (s *Server) getBlob(w http.ResponseWriter, r *http.Request) {
	sum, err := blobName(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, _, err := s.Blobs.Open(r.Context(), sum)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer b.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, b)
}

func (s *Server) deploy(w http.ResponseWriter, r *http.Request) {
	var req wire.DeployRequest
	if err := decode(w, r, wire.MaxAPIBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	audit.SetTarget(r.Context(), req.Release)
	audit.AddDetail(r.Context(), "devices", deployedDevices(req))
	if err := s.checkDeployScope(r, req); err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.Director.Deploy(r.Context(), director.Deployment{Release: req.Release, DeviceIDs: req.DeviceIDs, All: req.All, HardwareID: req.HardwareID})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("release deployed", "release", res.Release.Ref(), "devices", res.Assigned, "actor", r.Context().Value(keyActor))
	audit.AddDetail(r.Context(), "assigned", strconv.Itoa(res.Assigned))
	writeJSON(w, http.StatusOK, wire.DeployResponse{Assigned: res.Assigned, Skipped: res.Skipped})
}

// deployedDevices says which devices a deployment asked for, for its audit record: "all", or
// the ids (the first 20 and how many more).
func deployedDevices(req wire.DeployRequest) string {
	if req.All {
		return "all"
	}
	ids := req.DeviceIDs
	more := ""
	if len(ids) > 20 {
		ids, more = ids[:20], fmt.Sprintf(",+%d", len(ids)-20)
	}
	return strings.Join(ids, ",") + more
}

func (s *Server) createEnrollToken(w http.ResponseWriter, r *http.Request) {
	var req wire.EnrollTokenRequest
	if err := decode(w, r, wire.MaxAPIBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if req.Name == "" {
		req.Name = "enrol"
	}
	switch {
	case req.Uses < 0 || req.Uses > fleet.MaxEnrollUses:
		s.fail(w, r, apperr.E(apperr.Invalid, "uses must be between 0 (the default, %d) and %d", fleet.DefaultEnrollUses, fleet.MaxEnrollUses))
		return
	case req.TTL < 0 || req.TTL > fleet.MaxEnrollTTL:
		s.fail(w, r, apperr.E(apperr.Invalid, "ttl must be between 0 (the default, %s) and %s", fleet.DefaultEnrollTTL, fleet.MaxEnrollTTL))
		return
	}
	// Every token expires and admits a bounded number of devices.
	req.Uses, req.TTL = cmp.Or(req.Uses, fleet.DefaultEnrollUses), cmp.Or(req.TTL, fleet.DefaultEnrollTTL)
	secret, hash := auth.NewSecret(auth.EnrollPrefix)
	now := s.now()
	t := &fleet.EnrollToken{ID: hex.EncodeToString(hash[:8]), Name: req.Name, Hash: hash, UsesLeft: req.Uses, Product: req.Product, Simulation: req.Simulation, CreatedAt: now, ExpiresAt: now.Add(req.TTL)}
	if err := s.Devices.CreateEnrollToken(r.Context(), t); err != nil {
		s.fail(w, r, err)
		return
	}
	audit.SetTarget(r.Context(), t.ID)
	audit.AddDetail(r.Context(), "product", t.Product)
	writeJSON(w, http.StatusCreated, wire.EnrollTokenResponse{ID: t.ID, Token: secret})
}
