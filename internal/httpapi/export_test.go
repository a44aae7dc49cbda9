package httpapi

import "time"

// SetNoAuth makes Handler serve /api/v1 without authentication or authorization: the baseline
// of BenchmarkOperatorGet. Tests only.
func SetNoAuth(s *Server) { s.noAuth = true }

// AuditAction names a route's audit action, and whether the table has it; Recorded says
// whether the route's calls are recorded.
func AuditAction(pattern string) (string, bool) { a, ok := auditActions[pattern]; return a, ok }

// Recorded reports whether calls of the route pattern are recorded.
func Recorded(pattern string) bool { return recorded(pattern) }

// ForgetConsoleCaches drops the console's reused fleet counts and exposure reports.
func (s *Server) ForgetConsoleCaches() {
	s.fleetCounts.mu.Lock()
	s.fleetCounts.counts = nil
	s.fleetCounts.mu.Unlock()
	s.exposures.mu.Lock()
	s.exposures.reports = nil
	s.exposures.mu.Unlock()
}

// SetStreamSessionEvery sets how often the console's event streams check their session.
func SetStreamSessionEvery(s *Server, d time.Duration) { s.streamSessionEvery.Store(int64(d)) }

// SetMaxStreams bounds the console's event streams on the server while it serves (0: MaxStreams).
func SetMaxStreams(s *Server, n int) { s.maxStreams.Store(int64(n)) }
