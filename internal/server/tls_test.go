package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSessionTicketsAcrossReplicas: replicas that share the device-token key resume each other's
// TLS sessions, during the ticket's period and the next one; a replica with another key, or a
// ticket two periods old, gets a full handshake.
func TestSessionTicketsAcrossReplicas(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := selfSigned(t, certFile, keyFile)
	certs, err := newCertReloader(certFile, keyFile, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	secret, other := []byte("installation device-token key"), []byte("another installation's key")
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	serve := func(secret []byte, at time.Time) string {
		ln, err := tls.Listen("tcp", "127.0.0.1:0", tlsConfig(certs, secret, at))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					c.(*tls.Conn).Handshake() //nolint:errcheck // the client sees the outcome
					c.Write([]byte("x"))      //nolint:errcheck // sends the session ticket first (TLS 1.3)
				}()
			}
		}()
		return ln.Addr().String()
	}
	cache := tls.NewLRUClientSessionCache(8)
	dial := func(addr string) bool {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", ClientSessionCache: cache})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		return c.ConnectionState().DidResume
	}
	a, b := serve(secret, now), serve(secret, now)
	if dial(a) {
		t.Fatal("first connection resumed")
	}
	// The session cache is keyed by server name, the same for every replica (127.0.0.1).
	if !dial(b) {
		t.Error("replica b did not resume replica a's session")
	}
	if !dial(serve(secret, now.Add(ticketKeyPeriod))) {
		t.Error("a ticket of the previous period was not accepted")
	}
	dial(a) // a fresh ticket of now's period
	if dial(serve(secret, now.Add(2*ticketKeyPeriod))) {
		t.Error("a ticket two periods old was accepted")
	}
	dial(a)
	if dial(serve(other, now)) {
		t.Error("a replica with another key resumed the session")
	}
}

func selfSigned(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}
