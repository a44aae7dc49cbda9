package server

import (
	"context"
	"time"
)

// Warn runs the warnings job once with its own memory of what was warned.
func (s *Server) Warn(ctx context.Context, warned map[string]time.Time) { s.warn(ctx, warned) }
