package server

import (
	"context"
	"sync/atomic"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/faillog"
	"upkeep.dev/upkeep/internal/push"
	"upkeep.dev/upkeep/wire"
)

// LogConfig bounds the failure log bundles devices upload: how many each device may upload per
// hour, how many are kept per device and for how long (faillog.Service; defaults there).
type LogConfig struct {
	PerHour   int
	KeepCount int
	MaxAge    time.Duration
}

// pushRetryEvery is how often the server tries to reach a broker it could not connect to at
// start; until then devices poll.
const pushRetryEvery = 30 * time.Second

// pusher is the broker connection once there is one: nudges and credentials before it exists
// are dropped and refused (404), and devices poll.
type pusher struct{ p atomic.Pointer[push.Service] }

// Credentials implements httpapi.PushCredentials.
func (l *pusher) Credentials(ctx context.Context, device string) (*wire.PushCredentials, error) {
	p := l.p.Load()
	if p == nil {
		return nil, apperr.E(apperr.NotFound, "push broker not reachable: poll")
	}
	return p.Credentials(ctx, device)
}

// Nudge asks a device to check in now, if a broker is connected.
func (l *pusher) Nudge(device string) {
	if p := l.p.Load(); p != nil {
		p.Nudge(device)
	}
}

// Service is the broker connection, nil before there is one.
func (l *pusher) Service() *push.Service { return l.p.Load() }

// newFailureLogs builds the failure log service from the configuration.
func (s *Server) newFailureLogs() *faillog.Service {
	c := s.Config.Logs
	return &faillog.Service{Store: s.DB, PerHour: c.PerHour, KeepPerDevice: c.KeepCount, MaxAge: c.MaxAge, Now: s.Config.Now, Logger: s.Config.Logger}
}

// startPush connects to the configured broker (now, or in the background every pushRetryEvery
// until it answers) and makes every assignment change nudge its device.
func (s *Server) startPush(ctx context.Context) {
	if s.Config.Push.URL == "" {
		return
	}
	prev := s.Director.OnAssign
	s.Director.OnAssign = func(id string, v int64) {
		if prev != nil {
			prev(id, v)
		}
		s.push.Nudge(id)
	}
	connect := func(ctx context.Context) bool {
		p, err := push.Open(ctx, s.Config.Push, s.Config.Logger)
		if err != nil {
			s.Config.Logger.Warn("push broker unavailable: devices poll until it answers", "err", err, "retry_in", pushRetryEvery.String())
			return false
		}
		s.push.p.Store(p)
		s.Config.Logger.Info("push broker connected", "url", s.Config.Push.URL)
		return true
	}
	if connect(ctx) {
		return
	}
	s.Go("push-connect", func(ctx context.Context) {
		t := time.NewTicker(pushRetryEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if connect(ctx) {
					return
				}
			}
		}
	})
}

// Push is the broker connection, nil when push is off or the broker has not answered yet.
func (s *Server) Push() *push.Service { return s.push.Service() }

// pruneLogs applies the failure logs' retention (housekeeping).
func (s *Server) pruneLogs(ctx context.Context) {
	if n, err := s.Logs.Prune(ctx); err != nil {
		if ctx.Err() == nil {
			s.Config.Logger.Warn("prune failure logs", "err", err)
		}
	} else if n > 0 {
		s.Config.Logger.Info("pruned failure logs", "bundles", n)
	}
}
