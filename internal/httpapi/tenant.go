package httpapi

import (
	"net/http"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/wire"
)

// maxTenantRequest bounds the body of POST /api/v1/tenants: a name and six small key files.
const maxTenantRequest = 512 << 10

// tenantRoutes are the default tenant's management of tenants. A tenant's own stack has no
// Tenants: there they answer 404 with a JSON error that says where tenants are managed.
func (s *Server) tenantRoutes(mux *router) {
	mux.api("GET /api/v1/tenants", auth.PermTenantsRead, s.listTenants)
	mux.api("POST /api/v1/tenants", auth.PermTenantsWrite, s.addTenant)
}

// noTenants answers a tenants route of a stack that manages none.
func (s *Server) noTenants(w http.ResponseWriter, r *http.Request) bool {
	if s.Tenants != nil {
		return false
	}
	s.fail(w, r, apperr.E(apperr.NotFound, "tenants are managed by the default tenant's administrators, at the server's URL without a /t/NAME prefix"))
	return true
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) {
	if s.noTenants(w, r) {
		return
	}
	ts, err := s.Tenants.Tenants(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ts)
}

func (s *Server) addTenant(w http.ResponseWriter, r *http.Request) {
	if s.noTenants(w, r) {
		return
	}
	var req wire.TenantRequest
	if err := decode(w, r, maxTenantRequest, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	created, err := s.Tenants.AddTenant(r.Context(), req)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.logger().Info("tenant added", "tenant", created.Tenant.Name, "actor", actorOf(r))
	writeJSON(w, http.StatusCreated, created)
}
