// Package tlsclient holds the client side of Upkeep's transport rules, shared by the device agent
// and the operator CLI: a TLS configuration that trusts the system's roots plus a private CA,
// with session resumption, and the rule that a server URL is https:// unless it is on loopback.
package tlsclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
)

// Config returns a client TLS configuration: TLS 1.2 and up, a session cache so that a new
// connection to the same server resumes the last session (a TLS 1.3 ticket) instead of a full
// handshake, and, if caFile is set, the certificates of that PEM file trusted besides the
// system's roots (artifacts may come from a public object store).
func Config(caFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(0)}
	if caFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca %s: no PEM certificate in it", caFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// Transport is http.DefaultTransport's clone with Config(caFile).
func Transport(caFile string) (*http.Transport, error) {
	cfg, err := Config(caFile)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return tr, nil
}

// ErrPlainHTTP is returned for an http:// server URL off loopback.
var ErrPlainHTTP = errors.New("plain http:// to a server off this machine")

// CheckServerURL accepts an https:// URL, and an http:// one only to a loopback address
// (localhost, 127.0.0.0/8, ::1): elsewhere tokens, reports and the device's identity would cross
// the network in clear.
func CheckServerURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("server URL %q: want https://HOST[:PORT]", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if h := u.Hostname(); h == "localhost" || net.ParseIP(h) != nil && net.ParseIP(h).IsLoopback() {
			return nil
		}
		return fmt.Errorf("server URL %s: %w (tokens would travel in clear): use https://, with --ca for a private CA", raw, ErrPlainHTTP)
	default:
		return fmt.Errorf("server URL %q: want https:// (or http:// on loopback)", raw)
	}
}
