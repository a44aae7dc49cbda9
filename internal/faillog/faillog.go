// Package faillog keeps the failure log bundles devices upload when an install, a health check
// or an update module fails (POST /device/v1/logs): it parses what a device sends (Parse, the
// one parser of that untrusted input), bounds how often a device may upload (Service.Allow),
// stores the compressed bundle as received, and applies the retention (Service.Prune: the last
// KeepPerDevice bundles of each device, none older than MaxAge).
package faillog

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/wire"
)

// Log is one stored bundle: its metadata in columns, the gzip-compressed JSON as received.
type Log struct {
	ID         int64
	DeviceID   string
	ReceivedAt time.Time
	Target     string
	Step       string
	Data       []byte // gzip of a wire.LogBundle, at most wire.MaxLogBundle bytes
}

// Store keeps bundles. Implementations are safe for concurrent use.
type Store interface {
	// CreateDeviceLog stores l and sets its ID.
	CreateDeviceLog(ctx context.Context, l *Log) error
	// FindDeviceLogs returns a device's bundles, newest first, at most limit (limit <= 0: all).
	// An unknown device has none.
	FindDeviceLogs(ctx context.Context, deviceID string, limit int) ([]*Log, error)
	// PruneDeviceLogs deletes the bundles received before before and, of each device, all but
	// its newest keep (keep <= 0: no bound by count), and returns how many it deleted.
	PruneDeviceLogs(ctx context.Context, before time.Time, keep int) (int64, error)
}

// Defaults of the retention and rate.
const (
	DefaultKeepPerDevice = 10
	DefaultMaxAge        = 30 * 24 * time.Hour
	DefaultPerHour       = 6
)

// Bounds of a bundle's content, checked after decompression.
const (
	MaxLines    = 5000    // agent log lines
	MaxLineLen  = 8 << 10 // bytes of one line
	MaxOutput   = 4 << 20 // bytes of the hook's output
	MaxFieldLen = 4 << 10 // target, step, message
	maxRateKeys = 1 << 20 // devices whose recent uploads are remembered
	rateWindow  = time.Hour
)

// Service stores and serves failure log bundles. It is safe for concurrent use.
type Service struct {
	Store Store
	// PerHour is how many bundles one device may upload per hour (default DefaultPerHour);
	// KeepPerDevice and MaxAge the retention (defaults DefaultKeepPerDevice, DefaultMaxAge).
	PerHour       int
	KeepPerDevice int
	MaxAge        time.Duration
	Now           func() time.Time
	Logger        *slog.Logger

	mu     sync.Mutex
	recent map[string][]time.Time // device -> times of its uploads within the last hour
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// Allow takes one upload of device's hourly allowance. When none is left it returns false and
// how long until there is.
func (s *Service) Allow(device string) (bool, time.Duration) {
	per := s.PerHour
	if per <= 0 {
		per = DefaultPerHour
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recent == nil {
		s.recent = map[string][]time.Time{}
	}
	if len(s.recent) >= maxRateKeys {
		for k, ts := range s.recent {
			if len(ts) == 0 || now.Sub(ts[len(ts)-1]) >= rateWindow {
				delete(s.recent, k)
			}
		}
	}
	ts := s.recent[device]
	for len(ts) > 0 && now.Sub(ts[0]) >= rateWindow {
		ts = ts[1:]
	}
	if len(ts) >= per {
		s.recent[device] = ts
		return false, rateWindow - now.Sub(ts[0])
	}
	s.recent[device] = append(ts, now)
	return true, 0
}

// Upload parses a device's bundle (Parse) and stores it as received. Returns apperr.Invalid for
// a bundle that does not parse, apperr.TooLarge past wire.MaxLogBundle.
func (s *Service) Upload(ctx context.Context, device string, body []byte) (*Log, error) {
	b, err := Parse(body)
	if err != nil {
		return nil, err
	}
	l := &Log{DeviceID: device, ReceivedAt: s.now(), Target: b.Target, Step: b.Step, Data: bytes.Clone(body)}
	if err := s.Store.CreateDeviceLog(ctx, l); err != nil {
		return nil, fmt.Errorf("store failure log of %s: %w", device, err)
	}
	return l, nil
}

// Logs returns a device's bundles, newest first: the latest only unless all.
func (s *Service) Logs(ctx context.Context, device string, all bool) ([]wire.DeviceLog, error) {
	limit := 1
	if all {
		limit = 0
	}
	ls, err := s.Store.FindDeviceLogs(ctx, device, limit)
	if err != nil {
		return nil, err
	}
	out := make([]wire.DeviceLog, 0, len(ls))
	for _, l := range ls {
		b, err := Parse(l.Data)
		if err != nil { // stored only after it parsed: a bound changed since
			b = &wire.LogBundle{Target: l.Target, Step: l.Step, Message: "bundle no longer readable: " + err.Error()}
		}
		out = append(out, wire.DeviceLog{ID: l.ID, DeviceID: l.DeviceID, ReceivedAt: l.ReceivedAt, Size: len(l.Data), LogBundle: *b})
	}
	return out, nil
}

// Prune applies the retention and returns how many bundles it deleted.
func (s *Service) Prune(ctx context.Context) (int64, error) {
	keep, age := s.KeepPerDevice, s.MaxAge
	if keep == 0 {
		keep = DefaultKeepPerDevice
	}
	if age == 0 {
		age = DefaultMaxAge
	}
	return s.Store.PruneDeviceLogs(ctx, s.now().Add(-age), keep)
}

// Parse reads a bundle as a device sends it: gzip-compressed JSON of a wire.LogBundle, at most
// wire.MaxLogBundle bytes compressed and wire.MaxLogBundleExpanded expanded, with the field
// bounds above. Every error is apperr.Invalid (apperr.TooLarge for the sizes), with a message
// the device may be shown.
func Parse(body []byte) (*wire.LogBundle, error) {
	if len(body) > wire.MaxLogBundle {
		return nil, apperr.E(apperr.TooLarge, "failure log bundle of %d bytes: at most %d compressed", len(body), wire.MaxLogBundle)
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, apperr.Wrap(apperr.Invalid, err, "failure log bundle: not gzip")
	}
	zr.Multistream(false)
	raw, err := io.ReadAll(io.LimitReader(zr, wire.MaxLogBundleExpanded+1))
	if err != nil {
		return nil, apperr.Wrap(apperr.Invalid, err, "failure log bundle: bad gzip stream")
	}
	if len(raw) > wire.MaxLogBundleExpanded {
		return nil, apperr.E(apperr.TooLarge, "failure log bundle expands past %d bytes", wire.MaxLogBundleExpanded)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var b wire.LogBundle
	if err := dec.Decode(&b); err != nil {
		return nil, apperr.Wrap(apperr.Invalid, err, "failure log bundle: not the JSON of a bundle")
	}
	if dec.More() {
		return nil, apperr.E(apperr.Invalid, "failure log bundle: data after the JSON document")
	}
	if err := check(&b); err != nil {
		return nil, apperr.Wrap(apperr.Invalid, err, "failure log bundle: "+err.Error())
	}
	return &b, nil
}

func check(b *wire.LogBundle) error {
	switch b.Step {
	case wire.StepCheck, wire.StepVerify, wire.StepDownload, wire.StepInstall, wire.StepReboot, wire.StepHealth, wire.StepCommit, wire.StepRollback:
	case "":
		return errors.New("step is required")
	default:
		return fmt.Errorf("unknown step %q", truncate(b.Step, 32))
	}
	for name, v := range map[string]string{"target": b.Target, "message": b.Message} {
		if len(v) > MaxFieldLen {
			return fmt.Errorf("%s longer than %d bytes", name, MaxFieldLen)
		}
		if !utf8.ValidString(v) {
			return fmt.Errorf("%s is not UTF-8", name)
		}
	}
	if len(b.Output) > MaxOutput {
		return fmt.Errorf("output longer than %d bytes", MaxOutput)
	}
	if len(b.AgentLog) > MaxLines {
		return fmt.Errorf("%d agent log lines: at most %d", len(b.AgentLog), MaxLines)
	}
	for _, l := range b.AgentLog {
		if len(l) > MaxLineLen {
			return fmt.Errorf("an agent log line is longer than %d bytes", MaxLineLen)
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
