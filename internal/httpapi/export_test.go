package httpapi

// SetNoAuth makes Handler serve /api/v1 without authentication or authorization: the baseline
// of BenchmarkOperatorGet. Tests only.
func SetNoAuth(s *Server) { s.noAuth = true }
