package httpapi

import (
	"net/http"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/wire"
)

// maxTenantRequest bounds the body of POST /api/v1/tenants: a name and six small key files.
const maxTenantRequest = 512 << 10

// tenantRoutes are the default tenant's management of tenants; a tenant's own stack has no
// Tenants and so no such routes (404 under /t/{name}/).
func (s *Server) tenantRoutes(mux *router) {
	if s.Tenants == nil {
		return
	}
	mux.api("GET /api/v1/tenants", auth.PermTenantsRead, s.listTenants)
	mux.api("POST /api/v1/tenants", auth.PermTenantsWrite, s.addTenant)
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) {
	ts, err := s.Tenants.Tenants(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, ts)
}

func (s *Server) addTenant(w http.ResponseWriter, r *http.Request) {
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
