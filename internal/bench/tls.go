package bench

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// selfSignedCert writes a self-signed ECDSA P-256 certificate for 127.0.0.1 and its key (PEM) to
// certFile and keyFile, the same pair for the server and nginx, and returns a pool that trusts it.
func selfSignedCert(certFile, keyFile string) (*x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o644); err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool, nil
}

// handshakeRate opens a new TLS connection for every request (keep-alive off) from conc
// goroutines for d, and returns requests per second and the share of handshakes that resumed
// a session. With resume, the client keeps a session cache (a device that reconnects); without,
// every handshake is a full one. req sends one request on hc and reports its error.
func handshakeRate(ctx context.Context, pool *x509.CertPool, resume bool, conc int, d time.Duration, req func(ctx context.Context, hc *http.Client, worker int) error) (rps, resumed float64, err error) {
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if resume {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(0)
	}
	var n, dials, res atomic.Int64
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true, ForceAttemptHTTP2: false,
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, network, addr)
			if err == nil {
				dials.Add(1)
				if c.(*tls.Conn).ConnectionState().DidResume {
					res.Add(1)
				}
			}
			return c, err
		}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	var first error
	var once sync.Once
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if err := req(ctx, hc, w); err != nil {
					if ctx.Err() == nil {
						once.Do(func() { first = err })
						cancel()
					}
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, 0, first
	}
	secs := time.Since(start).Seconds()
	if n.Load() == 0 {
		return 0, 0, fmt.Errorf("no request completed in %s", d)
	}
	return float64(n.Load()) / secs, float64(res.Load()) / float64(max(dials.Load(), 1)), nil
}

// getOK is a request for handshakeRate: GET url, expect 200.
func getOK(url string) func(ctx context.Context, hc *http.Client, _ int) error {
	return func(ctx context.Context, hc *http.Client, _ int) error {
		r, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(r)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body) //nolint:errcheck // drained for the measurement only
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
		}
		return nil
	}
}
