package wire

import "time"

// Failure logs and push (added to protocol version 1 without a version change: optional routes
// that older agents do not call, and that a server without them answers 404).

// MaxLogBundle bounds a failure log bundle as sent: gzip-compressed JSON of a LogBundle. The
// server answers 413 past it; the agent drops the oldest log lines first to stay under it.
const MaxLogBundle = 256 << 10

// MaxLogBundleExpanded bounds the bundle once decompressed, so that a small compressed body
// cannot expand without bound on the server.
const MaxLogBundleExpanded = 8 << 20

// LogBundle is what a device uploads, gzip-compressed, to POST /device/v1/logs when an install,
// a health check or an update module fails: the failing step, the output of the hook or module
// that failed, and the tail of the agent's own log (oldest line first).
type LogBundle struct {
	Time    time.Time `json:"time"`
	Target  string    `json:"target,omitempty"`
	Step    string    `json:"step"`              // wire.Step*: install, health, ...
	Message string    `json:"message,omitempty"` // the error, as reported in the step's event
	Output  string    `json:"output,omitempty"`  // the hook's or module's stdout and stderr (its tail when cut)
	// AgentLog is the tail of the agent's own log, one line per entry, oldest first.
	AgentLog []string `json:"agent_log,omitempty"`
	// Truncated says the device cut the bundle (oldest lines, output head) to fit MaxLogBundle.
	Truncated bool `json:"truncated,omitempty"`
}

// DeviceLog is a stored failure log bundle, as the management API shows it
// (GET /api/v1/devices/{id}/logs).
type DeviceLog struct {
	ID         int64     `json:"id"`
	DeviceID   string    `json:"device_id"`
	ReceivedAt time.Time `json:"received_at"`
	Size       int       `json:"size"` // compressed bytes as received
	LogBundle
}

// PushCredentials answer POST /device/v1/push: where and as whom a device listens for nudges.
// The broker lets these credentials subscribe to Topic only, and publish nothing. A nudge's
// payload is ignored: it only makes the device do its normal signed check-in sooner.
type PushCredentials struct {
	URL      string `json:"url"` // tcp://, ssl://, mqtts://, ws:// or wss:// broker URL
	Username string `json:"username"`
	Password string `json:"password"`
	Topic    string `json:"topic"`
	ClientID string `json:"client_id"`
}
