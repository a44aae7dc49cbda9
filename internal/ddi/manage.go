package ddi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/wire"
)

// AdminRoutes returns the management routes, to be served behind the operator token: creating a
// DDI device ahead of time (its target token in the answer) and reading a device's token again.
func (s *Service) AdminRoutes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"POST /api/v1/ddi/devices":            s.createDevice,
		"GET /api/v1/ddi/devices/{id}/token":  s.deviceToken,
		"POST /api/v1/ddi/devices/{id}/token": s.rotateToken,
	}
}

// parseDeviceRequest parses the body of POST /api/v1/ddi/devices (`upkeep devices create
// --ddi`): one JSON object, no unknown fields; the values are checked by Create.
func parseDeviceRequest(body io.Reader) (*wire.DDIDeviceRequest, error) {
	var req wire.DDIDeviceRequest
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, apperr.E(apperr.TooLarge, "request body is larger than %d bytes", tooBig.Limit)
		}
		return nil, apperr.Wrap(apperr.Invalid, err, "malformed JSON body: "+err.Error())
	}
	if dec.More() {
		return nil, apperr.E(apperr.Invalid, "malformed JSON body: more than one value")
	}
	return &req, nil
}

func (s *Service) createDevice(w http.ResponseWriter, r *http.Request) {
	req, err := parseDeviceRequest(http.MaxBytesReader(w, r.Body, 4<<10))
	if err != nil {
		s.manageFail(w, r, err)
		return
	}
	tok, err := s.Create(r.Context(), req.ID, req.Product, req.HardwareID)
	if err != nil {
		s.manageFail(w, r, err)
		return
	}
	manageJSON(w, http.StatusCreated, wire.DDIDeviceResponse{ID: req.ID, TargetToken: tok, Tenant: s.tenant()})
}

func (s *Service) deviceToken(w http.ResponseWriter, r *http.Request) {
	tok, err := s.Token(r.Context(), r.PathValue("id"), false)
	if err != nil {
		s.manageFail(w, r, err)
		return
	}
	manageJSON(w, http.StatusOK, wire.DDIDeviceResponse{ID: r.PathValue("id"), TargetToken: tok, Tenant: s.tenant()})
}

// rotateToken issues a device a new target token; the old one stops working.
func (s *Service) rotateToken(w http.ResponseWriter, r *http.Request) {
	tok, err := s.Token(r.Context(), r.PathValue("id"), true)
	if err != nil {
		s.manageFail(w, r, err)
		return
	}
	manageJSON(w, http.StatusOK, wire.DDIDeviceResponse{ID: r.PathValue("id"), TargetToken: tok, Tenant: s.tenant()})
}

// The management routes are part of /api/v1 (docs/OPERATORS.md, the OpenAPI contract): they
// answer application/json, and errors as wire.Error like every other management route, not in
// hawkBit's shapes, which are the device side's.
func (s *Service) manageFail(w http.ResponseWriter, r *http.Request, err error) {
	code := apperr.CodeOf(err)
	if code == apperr.Internal {
		s.logger().Error("DDI management request failed", "path", r.URL.Path, "err", err)
	}
	manageJSON(w, apperr.HTTPStatus(code), wire.Error{Code: string(code), Message: apperr.Message(err)})
}

func manageJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}
