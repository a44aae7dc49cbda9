package agent

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"upkeep.dev/upkeep/wire"
)

// Failure logs: when an install, a health check or an update module fails, the agent uploads a
// bundle (wire.LogBundle, gzip-compressed, at most wire.MaxLogBundle) with the output of what
// failed and the tail of its own log, kept in memory by a ring (LogRing). One bundle waits at a
// time (a newer failure replaces it); it is sent with the next report, and dropped once the
// server took or refused it (a 429 keeps it until the Retry-After).

// OutputError is a failure of an external program (a health command, an update module) with
// what it printed. Its message keeps a short excerpt; the failure log bundle carries Output.
type OutputError struct {
	Err    error
	Output []byte
}

func (e *OutputError) Error() string { return e.Err.Error() }
func (e *OutputError) Unwrap() error { return e.Err }

// MaxOutput is how much of a program's output the agent keeps for a failure log: the tail.
const MaxOutput = 1 << 20

// Tail returns at most the last n bytes of b.
func Tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Bounds of the agent's log ring.
const (
	ringLines = 1000
	ringBytes = 256 << 10
)

// LogRing keeps the agent's most recent log lines in memory (at most ringLines lines and
// ringBytes bytes), for failure logs. It is an io.Writer for a slog text handler: each Write is
// one line. Safe for concurrent use.
type LogRing struct {
	mu    sync.Mutex
	lines []string
	size  int
}

// Write implements io.Writer.
func (r *LogRing) Write(p []byte) (int, error) {
	line := strings.TrimRight(string(p), "\n")
	if len(line) > 4<<10 {
		line = line[:4<<10] + "..."
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	r.size += len(line)
	for len(r.lines) > ringLines || r.size > ringBytes {
		r.size -= len(r.lines[0])
		r.lines = r.lines[1:]
	}
	if cap(r.lines) > 4*ringLines { // the slice's start creeps forward: copy it now and then
		r.lines = append([]string(nil), r.lines...)
	}
	return len(p), nil
}

// Lines returns the lines kept, oldest first.
func (r *LogRing) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.lines...)
}

// teeHandler sends each record to the agent's own handler and, at info level and above, to the
// ring.
type teeHandler struct {
	main, ring slog.Handler
}

func (h teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.main.Enabled(ctx, l) || h.ring.Enabled(ctx, l)
}

func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	var err error
	if h.main.Enabled(ctx, r.Level) {
		err = h.main.Handle(ctx, r)
	}
	if h.ring.Enabled(ctx, r.Level) {
		h.ring.Handle(ctx, r) //nolint:errcheck // the ring does not fail
	}
	return err
}

func (h teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{h.main.WithAttrs(as), h.ring.WithAttrs(as)}
}

func (h teeHandler) WithGroup(name string) slog.Handler {
	return teeHandler{h.main.WithGroup(name), h.ring.WithGroup(name)}
}

// withRing returns log writing also into a new ring, and the ring.
func withRing(log *slog.Logger) (*slog.Logger, *LogRing) {
	ring := &LogRing{}
	return slog.New(teeHandler{main: log.Handler(), ring: slog.NewTextHandler(ring, nil)}), ring
}

// failed records a failure log bundle for step's failure err, to be sent with the next report.
func (a *Agent) failed(target, step string, err error) {
	b := &wire.LogBundle{Time: now(a.cfg), Target: target, Step: step, Message: err.Error()}
	var oe *OutputError
	if errors.As(err, &oe) {
		b.Output = string(oe.Output)
	}
	if a.ring != nil {
		b.AgentLog = a.ring.Lines()
	}
	a.failLog = b
}

// uploadFailLog sends the waiting failure log bundle, if any. A transient failure keeps it
// (until the server's Retry-After); anything else drops it.
func (a *Agent) uploadFailLog(ctx context.Context) {
	if a.failLog == nil || time.Now().Before(a.failLogAfter) {
		return
	}
	body, err := EncodeLogBundle(a.failLog)
	if err != nil {
		a.log.Warn("failure log not sent", "err", err)
		a.failLog = nil
		return
	}
	tok, err := a.token(ctx)
	if err == nil {
		err = a.api.UploadLog(ctx, tok, body)
	}
	var te *TransientError
	if errors.As(err, &te) {
		a.failLogAfter = time.Now().Add(max(te.RetryAfter, 30*time.Second))
		a.log.Warn("failure log not sent, will retry", "err", err)
		return
	}
	if err != nil {
		a.log.Warn("failure log refused", "err", err)
	} else {
		a.log.Info("failure log sent", "step", a.failLog.Step, "bytes", len(body))
	}
	a.failLog = nil
}

// EncodeLogBundle compresses b, cutting it to fit wire.MaxLogBundle: the oldest agent log lines
// go first, then the head of the output.
func EncodeLogBundle(b *wire.LogBundle) ([]byte, error) {
	c := *b
	c.AgentLog = append([]string(nil), b.AgentLog...)
	for {
		raw, err := json.Marshal(&c)
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		zw.Write(raw) //nolint:errcheck // a bytes.Buffer does not fail
		if err := zw.Close(); err != nil {
			return nil, err
		}
		if buf.Len() <= wire.MaxLogBundle {
			return buf.Bytes(), nil
		}
		c.Truncated = true
		switch {
		case len(c.AgentLog) > 0:
			c.AgentLog = c.AgentLog[(len(c.AgentLog)+1)/2:]
		case len(c.Output) > 1024:
			c.Output = c.Output[len(c.Output)/2:]
		default:
			c.Output, c.Message = "", c.Message[:min(len(c.Message), 1024)]
			if len(raw) > 64<<10 {
				return nil, errors.New("failure log bundle does not fit")
			}
		}
	}
}
