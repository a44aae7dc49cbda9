// Package show prints what the operator CLI and the demo show a person: campaign status tables,
// wave sizes and progress bars. It holds no state and makes no calls.
package show

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/wire"
)

// Text makes text that came from devices (event messages, errors, states, attributes, serials)
// safe to print on an operator's terminal: control characters (C0, DEL and C1: escape sequences,
// carriage return, bell, backspace), Unicode format characters (the bidi overrides and isolates
// such as U+202E, zero-width characters) and line and paragraph separators are written as
// escapes (\x1b, \u202e). So a device can neither drive the terminal nor make a line read other
// than it is. Tab and newline are escaped too: one field stays on its line and in its column.
// Invalid UTF-8 shows as U+FFFD. Every place the CLI and the demo print device text uses it.
func Text(s string) string {
	plain := true
	for _, r := range s {
		if unsafeRune(r) || r == utf8.RuneError {
			plain = false
			break
		}
	}
	if plain {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x100 && unsafeRune(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// unsafeRune reports whether r must not reach a terminal as it is.
func unsafeRune(r rune) bool {
	return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' || unicode.Is(unicode.Cf, r)
}

// WaveSizes turns cumulative wave ends into per-wave sizes.
func WaveSizes(cum []int) []int {
	out := make([]int, len(cum))
	prev := 0
	for i, c := range cum {
		out[i], prev = c-prev, c
	}
	return out
}

// Last is the last element of xs, or 0.
func Last(xs []int) int {
	if len(xs) == 0 {
		return 0
	}
	return xs[len(xs)-1]
}

var statusOrder = []string{rollout.MemberPending, rollout.MemberAssigned, rollout.MemberTimedOut, rollout.MemberWaiting, rollout.MemberCommitted, rollout.MemberHealthy,
	rollout.MemberFailed, rollout.MemberSuperseded, rollout.MemberCancelled}

// CampaignStatus prints a campaign's settings, its waves by member status and its timeline.
func CampaignStatus(w io.Writer, st *wire.CampaignStatus) {
	c := st.Campaign
	fmt.Fprintf(w, "campaign %s: %s to %s — %s\n", c.ID, c.Release, c.Selector, strings.ToUpper(c.State))
	if c.PauseReason != "" {
		fmt.Fprintf(w, "paused: %s\n", Text(c.PauseReason))
	}
	if !c.StartAt.IsZero() && c.State == rollout.StateScheduled {
		fmt.Fprintf(w, "scheduled: starts at %s\n", c.StartAt.UTC().Format(time.RFC3339))
	}
	if c.Dynamic {
		until := "until cancelled"
		if !c.Until.IsZero() {
			until = "until " + c.Until.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "dynamic: devices that come to match %s join the current wave, %s\n", c.Selector, until)
	}
	mode := "forced"
	if c.Consent {
		mode = "soft (owner consent)"
	}
	fmt.Fprintf(w, "thresholds: advance at %.0f%% healthy, pause above %.0f%% failed; health gate %s; %s", c.SuccessThreshold*100, c.FailureThreshold*100, c.HealthGate, mode)
	if c.Window != "" {
		fmt.Fprintf(w, "; window %s UTC", c.Window)
	}
	if c.Days != "" {
		fmt.Fprintf(w, " on %s", c.Days)
	}
	if c.IgnoreWindow {
		fmt.Fprint(w, "; ignores maintenance windows")
	}
	fmt.Fprintln(w)
	if c.AssignTimeout != "" && c.AssignTimeout != "0s" {
		fmt.Fprintf(w, "assigned devices silent for %s count as timed out (not in the success count)\n", c.AssignTimeout)
	}
	if c.Stale > 0 {
		fmt.Fprintf(w, "left out at creation: %d devices not seen recently\n", c.Stale)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "WAVE\tSIZE\t")
	for _, s := range statusOrder {
		fmt.Fprintf(tw, "%s\t", strings.ToUpper(s))
	}
	fmt.Fprintln(tw)
	for i, k := range st.Waves {
		n := 0
		for _, v := range k {
			n += v
		}
		mark := ""
		if i+1 == c.Wave {
			mark = "*"
		}
		fmt.Fprintf(tw, "%s%d\t%d\t", mark, i+1, n)
		for _, s := range statusOrder {
			fmt.Fprintf(tw, "%d\t", k[s])
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	if d := st.Download; d != nil && d.ImageBytes > 0 {
		// Full downloads fetch a little more than the image (retries, a delta that failed first):
		// no negative saving.
		saved := "nothing saved by delta updates"
		if d.Bytes < d.ImageBytes {
			saved = fmt.Sprintf("%.1f%% saved by delta updates", 100*float64(d.ImageBytes-d.Bytes)/float64(d.ImageBytes))
		}
		fmt.Fprintf(w, "\ndownloads: %d devices fetched %s for %s of images (%s)\n", d.Devices, Size(d.Bytes), Size(d.ImageBytes), saved)
	}
	if len(st.Waiting) > 0 {
		fmt.Fprintf(w, "\n%d devices wait (consent or maintenance window):\n", len(st.Waiting))
		for _, m := range st.Waiting[:min(len(st.Waiting), 10)] {
			fmt.Fprintf(w, "  %s  wave %d  %s\n", Text(m.DeviceID), m.Wave, Text(m.Detail))
		}
	}
	if len(st.Failed) > 0 {
		fmt.Fprintf(w, "\n%d devices failed:\n", len(st.Failed))
		for _, m := range st.Failed[:min(len(st.Failed), 10)] {
			fmt.Fprintf(w, "  %s  wave %d  %s\n", Text(m.DeviceID), m.Wave, Text(m.Detail))
		}
	}
	fmt.Fprintln(w, "\ntimeline:")
	for _, e := range st.Timeline {
		fmt.Fprintf(w, "  %s  %-8s %-9s %s\n", e.Time.Local().Format(time.DateTime), Text(e.Actor), Text(e.Action), Text(e.Detail))
	}
}

// Size writes a byte count in binary units: "512 B", "3.4 MiB".
func Size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// Bar draws n of total as a bar of width characters.
func Bar(n, total, width int) string {
	if total == 0 {
		return "[" + strings.Repeat(" ", width) + "]"
	}
	k := n * width / total
	return "[" + strings.Repeat("#", k) + strings.Repeat(".", width-k) + "]"
}

// Waves describes a campaign's waves from their cumulative ends, in devices:
// "10 devices in waves of 1, 4, 5".
func Waves(cum []int) string {
	sizes := WaveSizes(cum)
	parts := make([]string, len(sizes))
	for i, n := range sizes {
		parts[i] = strconv.Itoa(n)
	}
	return fmt.Sprintf("%d devices in waves of %s", Last(cum), strings.Join(parts, ", "))
}

// AuditRecords prints audit records as a table, one per line, every field through Text (a
// login name or user agent is the client's to choose).
func AuditRecords(w io.Writer, rs []wire.AuditRecord) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tACTION\tTARGET\tOUTCOME\tIP\tDETAIL")
	for _, r := range rs {
		actor := r.ActorType
		if r.Actor != "" {
			actor += ":" + r.Actor
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Seq, r.Time.UTC().Format(time.RFC3339), Text(actor), Text(r.Action), Text(r.Target), r.Outcome, Text(r.IP), Text(r.Detail))
	}
	tw.Flush()
}
