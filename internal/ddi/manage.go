package ddi

import (
	"encoding/json"
	"net/http"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/wire"
)

// AdminRoutes returns the management routes, to be served behind the operator token: creating a
// DDI device ahead of time (its target token in the answer) and reading a device's token again.
func (s *Service) AdminRoutes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"POST /api/v1/ddi/devices":           s.createDevice,
		"GET /api/v1/ddi/devices/{id}/token": s.deviceToken,
	}
}

func (s *Service) createDevice(w http.ResponseWriter, r *http.Request) {
	var req wire.DDIDeviceRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.fail(w, r, apperr.Wrap(apperr.Invalid, err, "malformed JSON body: "+err.Error()))
		return
	}
	tok, err := s.Create(r.Context(), req.ID, req.Product, req.HardwareID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, wire.DDIDeviceResponse{ID: req.ID, TargetToken: tok, Tenant: s.tenant()})
}

func (s *Service) deviceToken(w http.ResponseWriter, r *http.Request) {
	tok, err := s.Token(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, wire.DDIDeviceResponse{ID: r.PathValue("id"), TargetToken: tok, Tenant: s.tenant()})
}
