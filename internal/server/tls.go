package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// certReloader serves the certificate in a pair of PEM files and loads them again when either
// file changes (another inode, size or modification time), checking at most once per interval:
// a renewed certificate (certbot, cert-manager, an ACME client's deploy hook) is served to new
// connections without a restart. A pair that fails to load keeps the last good one in service.
type certReloader struct {
	certFile, keyFile string
	every             time.Duration
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]os.FileInfo
	checked time.Time
}

func newCertReloader(certFile, keyFile string, every time.Duration, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, every: every, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	r.checked = time.Now()
	return r, nil
}

// load reads the pair; the caller holds r.mu or owns r.
func (r *certReloader) load() error {
	var stamp [2]os.FileInfo
	for i, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		stamp[i] = fi
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls certificate %s, key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.stamp = &cert, stamp
	return nil
}

func (r *certReloader) changed() bool {
	for i, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return false // being replaced: keep serving the current pair
		}
		old := r.stamp[i]
		if !os.SameFile(fi, old) || fi.Size() != old.Size() || !fi.ModTime().Equal(old.ModTime()) {
			return true
		}
	}
	return false
}

// GetCertificate is tls.Config.GetCertificate.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= r.every {
		r.checked = now
		if r.changed() {
			if err := r.load(); err != nil {
				r.log.Error("reload tls certificate: keeping the one in service", "err", err)
			} else {
				r.log.Info("tls certificate reloaded", "cert", r.certFile)
			}
		}
	}
	return r.cert, nil
}

// tlsConfig is the server's TLS configuration: TLS 1.2 and up, the certificate from r, and
// session tickets whose keys every replica derives alike from secret (ticketKeys), so that a
// device that reconnects resumes its session, on whichever replica it reaches, instead of a
// full handshake. rotateTicketKeys keeps them current.
func tlsConfig(r *certReloader, secret []byte, now time.Time) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
	c.SetSessionTicketKeys(ticketKeys(secret, now))
	return c
}

// ticketKeyPeriod is how long one session ticket key makes new tickets; a ticket is accepted
// for one period more.
const ticketKeyPeriod = 24 * time.Hour

// ticketKeys returns the session ticket keys at now: the current period's, which makes new
// tickets, then the previous period's. Each is HMAC-SHA256 of the period's number under secret
// (the device-token key, which every replica of an installation holds), with a label that
// keeps it apart from the key's other use. With crypto/tls's own keys, random in each process,
// a device resumed only on the replica that issued its ticket.
func ticketKeys(secret []byte, now time.Time) [][32]byte {
	p := now.Unix() / int64(ticketKeyPeriod/time.Second)
	keys := make([][32]byte, 2)
	for i := range keys {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte("upkeep tls session ticket key\x00"))
		m.Write(binary.BigEndian.AppendUint64(nil, uint64(p-int64(i))))
		copy(keys[i][:], m.Sum(nil))
	}
	return keys
}

// loopback says whether a listen address only accepts connections from this machine.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
