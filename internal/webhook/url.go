package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/event"
)

// Bounds of what an operator stores in a webhook.
const (
	MaxURL         = 2048
	MaxDescription = 256
)

// Spec is a webhook to create, as an operator asks for it.
type Spec struct {
	URL          string   `json:"url"`
	Events       []string `json:"events,omitempty"`
	Description  string   `json:"description,omitempty"`
	AllowPrivate bool     `json:"allow_private,omitempty"`
	AllowHTTP    bool     `json:"allow_http,omitempty"`
}

// Validate checks everything about s that needs no name resolution: the URL (https://, or
// http:// with AllowHTTP; a host; no credentials, fragment or zone; a literal address that is
// special only with AllowPrivate), the event types and the description. Errors are
// apperr.Invalid, with a message for the operator.
func (s Spec) Validate() error {
	if _, err := s.parse(); err != nil {
		return err
	}
	if len(s.Description) > MaxDescription {
		return apperr.E(apperr.Invalid, "description: at most %d bytes", MaxDescription)
	}
	if len(s.Events) > len(event.Types) {
		return apperr.E(apperr.Invalid, "events: at most %d types", len(event.Types))
	}
	for _, e := range s.Events {
		if !slices.Contains(event.Types, e) {
			return apperr.E(apperr.Invalid, "event type %.80q: want one of %s", e, strings.Join(event.Types, ", "))
		}
	}
	return nil
}

// parse checks the URL and returns it.
func (s Spec) parse() (*url.URL, error) {
	bad := func(format string, args ...any) (*url.URL, error) {
		return nil, apperr.E(apperr.Invalid, "webhook url: "+format, args...)
	}
	if s.URL == "" || len(s.URL) > MaxURL {
		return bad("want 1 to %d bytes", MaxURL)
	}
	u, err := url.Parse(s.URL)
	if err != nil {
		return bad("not a URL")
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && s.AllowHTTP:
	case u.Scheme == "http":
		return bad("plain http:// carries events in clear; use https://, or --allow-http for a receiver on a trusted network")
	default:
		return bad("scheme %.16q: want https://", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return bad("no host")
	}
	if u.User != nil {
		return bad("credentials in the URL are shown to anyone who lists webhooks; the signature authenticates the server")
	}
	if u.Fragment != "" || strings.Contains(s.URL, "#") {
		return bad("a fragment is never sent")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return bad("port %.8q", p)
		}
	}
	host := u.Hostname()
	if strings.Contains(host, "%") {
		return bad("an IPv6 zone is not allowed")
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if !s.AllowPrivate && Special(a) {
			return bad("%s is a loopback, private, link-local or other special address: refused unless an admin sets --allow-private", a)
		}
	} else if !validHostname(host) {
		return bad("host %.64q is not a host name", host)
	}
	return u, nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Resolver resolves host names at creation (net.DefaultResolver implements it).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// checkResolved refuses a host name that resolves to a special address, unless AllowPrivate.
// The dialer checks the address again at every connection (DNS rebinding); this check tells the
// operator early.
func (s Spec) checkResolved(ctx context.Context, r Resolver) error {
	u, err := s.parse()
	if err != nil {
		return err
	}
	host := u.Hostname()
	if _, err := netip.ParseAddr(host); err == nil || s.AllowPrivate {
		return nil
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return apperr.Wrap(apperr.Invalid, err, fmt.Sprintf("webhook url: host %s does not resolve", host))
	}
	for _, a := range addrs {
		if Special(a) {
			return apperr.E(apperr.Invalid, "webhook url: %s resolves to %s, a loopback, private, link-local or other special address: refused unless an admin sets --allow-private", host, a.Unmap())
		}
	}
	return nil
}

// special are the ranges, besides those netip classifies, that a webhook must not reach
// without AllowPrivate: IANA special-purpose registries (RFC 6890 and its updates).
var special = func() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []string{
		"0.0.0.0/8",       // "this network"
		"100.64.0.0/10",   // shared address space (carrier-grade NAT)
		"192.0.0.0/24",    // IETF protocol assignments
		"192.0.2.0/24",    // documentation
		"198.18.0.0/15",   // benchmarking
		"198.51.100.0/24", // documentation
		"203.0.113.0/24",  // documentation
		"240.0.0.0/4",     // reserved, and the limited broadcast address
		"64:ff9b::/96",    // NAT64: would reach any IPv4 address, private ones too
		"64:ff9b:1::/48",  // local-use NAT64
		"100::/64",        // discard-only
		"2001::/23",       // IETF protocol assignments (Teredo, ORCHID, ...)
		"2001:db8::/32",   // documentation
		"2002::/16",       // 6to4: embeds an IPv4 address
		"fec0::/10",       // deprecated site-local
		"::ffff:0:0:0/96", // IPv4-translated
		"::/96",           // IPv4-compatible (deprecated)
		"5f00::/16",       // SRv6 SIDs
		"3fff::/20",       // documentation
	} {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}()

// Special reports whether a is an address a webhook must not reach without AllowPrivate:
// loopback, private (RFC 1918, fc00::/7), link-local, unspecified, multicast, or another
// special-purpose range. IPv4-mapped IPv6 addresses are judged as the IPv4 address.
func Special(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsUnspecified() || a.IsMulticast() ||
		a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() || a.Zone() != "" {
		return true
	}
	for _, p := range special {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ErrSpecialAddress is the dial error for a special address reached without AllowPrivate.
var ErrSpecialAddress = errors.New("refused to connect to a loopback, private, link-local or other special address (the webhook needs --allow-private)")

// dialControl is the net.Dialer Control of webhooks without AllowPrivate: it runs on the
// address actually dialled, after name resolution, so a name that resolves to a public address
// at creation and to a private one later (DNS rebinding) is still refused.
func dialControl(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrSpecialAddress, address)
	}
	if Special(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrSpecialAddress, ap.Addr())
	}
	return nil
}

var _ Resolver = (*net.Resolver)(nil)
