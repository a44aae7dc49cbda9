package httpapi

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/exposure"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/vuln"
	"upkeep.dev/upkeep/wire"
)

// vulnRoutes serves SBOMs, advisory imports, exposure and time-to-patch (internal/patch).
func (s *Server) vulnRoutes(mux *router) {
	mux.api("PUT /api/v1/releases/{product}/{version}/sbom", auth.PermPublish, s.putSBOM)
	mux.api("GET /api/v1/releases/{product}/{version}/sbom", auth.PermReleasesRead, s.getSBOM)
	mux.api("POST /api/v1/advisories", auth.PermVulnWrite, s.importAdvisories)
	mux.api("GET /api/v1/exposure", auth.PermVulnRead, s.exposure)
	mux.api("GET /api/v1/products/{name}/time-to-patch", auth.PermVulnRead, s.timeToPatch)
	mux.api("POST /api/v1/releases/check", auth.PermReleasesRead, s.checkRelease)
	mux.api("PUT /api/v1/products/{name}/vex", auth.PermVulnWrite, s.putTriage)
	mux.api("GET /api/v1/products/{name}/vex", auth.PermVulnRead, s.listTriage)
	mux.api("POST /api/v1/waivers", auth.PermVulnWrite, s.createWaiver)
	mux.api("GET /api/v1/waivers", auth.PermVulnRead, s.listWaivers)
	mux.api("POST /api/v1/waivers/{id}/revoke", auth.PermVulnWrite, s.revokeWaiver)
}

func (s *Server) patchService(w http.ResponseWriter, r *http.Request) Vulnerabilities {
	if s.Exposure == nil {
		s.fail(w, r, apperr.E(apperr.Unavailable, "this server holds no vulnerability data"))
	}
	return s.Exposure
}

func releasePath(r *http.Request) (product, version string, err error) {
	product, version = r.PathValue("product"), r.PathValue("version")
	if err := tuf.ValidIdent("product", product); err != nil {
		return "", "", apperr.E(apperr.Invalid, "%v", err)
	}
	if err := tuf.ValidIdent("version", version); err != nil {
		return "", "", apperr.E(apperr.Invalid, "%v", err)
	}
	return product, version, nil
}

// readBody reads a raw body of at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if tooBig(err) {
		return nil, apperr.E(apperr.TooLarge, "request body is larger than %d bytes", limit)
	}
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	return b, nil
}

func tooBig(err error) bool {
	var e *http.MaxBytesError
	return errors.As(err, &e)
}

// putSBOM stores a release's SBOM (CycloneDX or SPDX JSON), refusing one whose digest differs
// from the sbom_sha256 signed into the release's target.
func (s *Server) putSBOM(w http.ResponseWriter, r *http.Request) {
	ps := s.patchService(w, r)
	if ps == nil {
		return
	}
	product, version, err := releasePath(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	raw, err := readBody(w, r, vuln.MaxSBOMBytes)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sb, err := ps.PutSBOM(r.Context(), product, version, raw)
	s.exposuresChanged()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("SBOM stored", "release", product+"@"+version, "format", sb.Format, "sha256", sb.Digest, "signed", sb.Signed, "actor", actorOf(r))
	writeJSON(w, http.StatusOK, sb.Summary())
}

func (s *Server) getSBOM(w http.ResponseWriter, r *http.Request) {
	ps := s.patchService(w, r)
	if ps == nil {
		return
	}
	product, version, err := releasePath(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sb, err := ps.SBOM(r.Context(), product, version)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, sb.Summary())
}

// importAdvisories reads one uploaded file (?name= names it in errors): an OSV zip, a CSAF
// document or an OSV record.
func (s *Server) importAdvisories(w http.ResponseWriter, r *http.Request) {
	ps := s.patchService(w, r)
	if ps == nil {
		return
	}
	name := r.URL.Query().Get("name")
	if name == "" {
		name = "upload"
	}
	audit.AddDetail(r.Context(), "file", name)
	res, err := ps.Import(r.Context(), name, http.MaxBytesReader(w, r.Body, exposure.MaxImportBytes))
	s.exposuresChanged()
	if tooBig(err) {
		err = apperr.E(apperr.TooLarge, "%s is larger than %d bytes", name, exposure.MaxImportBytes)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("advisories imported", "file", name, "imported", res.Imported, "updated", res.Updated, "unchanged", res.Unchanged,
		"skipped", res.Skipped, "vex", res.VEXImported+res.VEXUpdated, "actor", actorOf(r))
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) exposure(w http.ResponseWriter, r *http.Request) {
	ps := s.patchService(w, r)
	if ps == nil {
		return
	}
	q := r.URL.Query()
	all, _ := strconv.ParseBool(q.Get("all"))
	kev, _ := strconv.ParseBool(q.Get("kev"))
	var minEPSS float64
	if v := q.Get("min_epss"); v != "" {
		var err error
		if minEPSS, err = strconv.ParseFloat(v, 64); err != nil {
			s.fail(w, r, apperr.E(apperr.Invalid, "min_epss %q: want a number from 0 to 1", v))
			return
		}
	}
	rep, err := ps.Exposure(r.Context(), exposure.ExposureFilter{Severity: q.Get("severity"), Product: q.Get("product"), All: all,
		KEV: kev, MinEPSS: minEPSS, Sort: q.Get("sort")})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

func (s *Server) timeToPatch(w http.ResponseWriter, r *http.Request) {
	ps := s.patchService(w, r)
	if ps == nil {
		return
	}
	name := r.PathValue("name")
	if err := tuf.ValidIdent("product", name); err != nil {
		s.fail(w, r, apperr.E(apperr.Invalid, "%v", err))
		return
	}
	out, err := ps.TimeToPatch(r.Context(), name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// checkRelease matches an uploaded SBOM as ?product=&version= and answers the release gate's
// verdict; the SBOM is kept by digest for the publish gate.
func (s *Server) checkRelease(w http.ResponseWriter, r *http.Request) {
	ps := s.patchService(w, r)
	if ps == nil {
		return
	}
	raw, err := readBody(w, r, vuln.MaxSBOMBytes)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	out, err := ps.CheckRelease(r.Context(), q.Get("product"), q.Get("version"), raw)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("release checked", "product", out.Product, "version", out.Version, "sha256", out.SHA256, "findings", len(out.Findings),
		"blocked", out.Gate.Blocked, "actor", actorOf(r))
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) putTriage(w http.ResponseWriter, r *http.Request) {
	ps := s.patchService(w, r)
	if ps == nil {
		return
	}
	var t exposure.Triage
	if err := decode(w, r, wire.MaxAPIBody, &t); err != nil {
		s.fail(w, r, err)
		return
	}
	t.Product = r.PathValue("name")
	out, err := ps.SetTriage(r.Context(), t, actorOf(r))
	s.exposuresChanged()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("VEX statement recorded", "product", out.Product, "version", out.Version, "vulnerability", out.Vuln, "component", out.Component,
		"status", out.Status, "justification", out.Justification, "analyst", out.Analyst, "actor", actorOf(r))
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) listTriage(w http.ResponseWriter, r *http.Request) {
	ps := s.patchService(w, r)
	if ps == nil {
		return
	}
	out, err := ps.Triage(r.Context(), r.PathValue("name"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(out))
}

func (s *Server) createWaiver(w http.ResponseWriter, r *http.Request) {
	ps := s.patchService(w, r)
	if ps == nil {
		return
	}
	var req exposure.Waiver
	if err := decode(w, r, wire.MaxAPIBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	out, err := ps.CreateWaiver(r.Context(), req)
	s.exposuresChanged()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	audit.SetTarget(r.Context(), out.ID)
	s.logger().Warn("release gate waiver granted", "waiver", out.ID, "product", out.Product, "version", out.Version, "vulnerability", out.Vuln,
		"by", out.CreatedBy, "reason", out.Reason, "actor", actorOf(r))
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) listWaivers(w http.ResponseWriter, r *http.Request) {
	ps := s.patchService(w, r)
	if ps == nil {
		return
	}
	out, err := ps.Waivers(r.Context(), r.URL.Query().Get("product"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, nonNil(out))
}

func (s *Server) revokeWaiver(w http.ResponseWriter, r *http.Request) {
	ps := s.patchService(w, r)
	if ps == nil {
		return
	}
	var req wire.RevokeWaiverRequest
	if err := decode(w, r, wire.MaxAPIBody, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	err := ps.RevokeWaiver(r.Context(), r.PathValue("id"), req.By)
	s.exposuresChanged()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Warn("release gate waiver revoked", "waiver", r.PathValue("id"), "by", req.By, "actor", actorOf(r))
	w.WriteHeader(http.StatusNoContent)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
