package httpapi

import (
	_ "embed"
	"net/http"
)

// openAPIDoc is the OpenAPI 3.1 contract of /api/v1 and /device/v1. It is generated from the
// route table and the types of package wire by TestOpenAPI (openapi_test.go):
//
//	go test ./internal/httpapi -run TestOpenAPI -update
//
// and the test fails when the committed file differs from what it generates. The hawkBit DDI
// routes are not in it: they follow hawkBit's own contract (internal/cli/testdata/ddi-openapi.yaml).
//
//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the OpenAPI 3.1 document (JSON) that GET /api/v1/openapi.json serves.
func OpenAPI() []byte { return openAPIDoc }

// openAPI serves the contract; it needs no credential (auth.PermNone).
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.Write(openAPIDoc)
}
