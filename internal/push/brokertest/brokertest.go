// Package brokertest starts a real Mosquitto broker for tests: its own folder, config and
// dynamic-security file, on a free loopback port, stopped when the test ends. Without
// mosquitto the test skips, or fails under CI (testenv.Required).
package brokertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/testenv"
)

// AdminUser and AdminPassword are the broker's dynamic-security administrator, the server's
// account in tests.
const (
	AdminUser     = "upkeep-admin"
	AdminPassword = "test-admin-password"
)

// Broker is a running Mosquitto.
type Broker struct {
	URL  string // tcp://127.0.0.1:PORT
	Addr string
	// AnonURL is a second listener without access control, for benchmarks whose simulated
	// devices need no credentials of their own (StartAnonymous).
	AnonURL string
	// TLSURL is a second listener with TLS (ssl://), its certificate signed by CA, for
	// 127.0.0.1 (StartTLS).
	TLSURL string
	CA     *x509.CertPool
	cmd    *exec.Cmd
	conf   string
	dir    string
}

// plugin is where Debian's mosquitto package puts the dynamic-security plugin.
const plugin = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"

func tool(t testing.TB, name, path string) string {
	if _, err := os.Stat(path); err == nil {
		return path
	}
	return testenv.Tool(t, name, "mosquitto")
}

// Start starts a broker with the dynamic-security plugin and no anonymous access.
func Start(t testing.TB) *Broker {
	t.Helper()
	return start(t, false)
}

// StartAnonymous is Start with a second listener, AnonURL, open to anyone: for benchmarks of
// fan-out to many simulated devices, which would otherwise each need credentials provisioned.
func StartAnonymous(t testing.TB) *Broker {
	t.Helper()
	return start(t, true)
}

func freeAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// StartTLS is Start with a second listener, TLSURL, that speaks TLS with a certificate of a
// test CA (CA), under the same access control.
func StartTLS(t testing.TB) *Broker {
	t.Helper()
	return start(t, false, true)
}

func start(t testing.TB, anon bool, withTLS ...bool) *Broker {
	t.Helper()
	bin := tool(t, "mosquitto", "/usr/sbin/mosquitto")
	ctl := tool(t, "mosquitto_ctrl", "/usr/bin/mosquitto_ctrl")
	if _, err := os.Stat(plugin); err != nil {
		if testenv.Required() {
			t.Fatalf("mosquitto's dynamic-security plugin %s is missing", plugin)
		}
		t.Skipf("mosquitto's dynamic-security plugin %s is missing", plugin)
	}
	dir := t.TempDir()
	dynsec := filepath.Join(dir, "dynsec.json")
	if out, err := exec.Command(ctl, "dynsec", "init", dynsec, AdminUser, AdminPassword).CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_ctrl dynsec init: %v: %s", err, out)
	}
	addr := freeAddr(t)
	b := &Broker{URL: "tcp://" + addr, Addr: addr, dir: dir, conf: filepath.Join(dir, "mosquitto.conf")}
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf("per_listener_settings true\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nmax_keepalive 600\n"+
		"listener %s 127.0.0.1\nallow_anonymous false\nplugin %s\nplugin_opt_config_file %s\n", port, plugin, dynsec)
	if len(withTLS) > 0 && withTLS[0] {
		// One access control for both listeners: the plugin and allow_anonymous apply to all.
		conf = fmt.Sprintf("per_listener_settings false\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\nmax_keepalive 600\n"+
			"allow_anonymous false\nplugin %s\nplugin_opt_config_file %s\nlistener %s 127.0.0.1\n", plugin, dynsec, port)
		certFile, keyFile, pool := testCert(t, dir)
		a := freeAddr(t)
		_, tport, _ := net.SplitHostPort(a)
		b.TLSURL, b.CA = "ssl://"+a, pool
		conf += fmt.Sprintf("listener %s 127.0.0.1\ncertfile %s\nkeyfile %s\n", tport, certFile, keyFile)
	}
	if anon {
		a := freeAddr(t)
		_, aport, _ := net.SplitHostPort(a)
		b.AnonURL = "tcp://" + a
		conf += fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\n", aport)
	}
	if os.Geteuid() == 0 {
		conf += "user root\n" // as root mosquitto would switch to the mosquitto user, who cannot read the test's folder
	}
	if err := os.WriteFile(b.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	b.cmd = exec.Command(bin, "-c", b.conf)
	b.cmd.Stderr = os.Stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	t.Cleanup(b.Stop)
	b.waitUp(t)
	return b
}

func (b *Broker) waitUp(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", b.Addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("mosquitto did not listen on %s", b.Addr)
}

// Stop stops the broker (idempotent).
func (b *Broker) Stop() {
	if b.cmd == nil || b.cmd.Process == nil {
		return
	}
	b.cmd.Process.Kill()
	b.cmd.Wait() //nolint:errcheck // killed
	b.cmd = nil
}

// Restart starts the stopped broker again on the same port, with the credentials it saved.
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	b.Stop()
	b.cmd = exec.Command(tool(t, "mosquitto", "/usr/sbin/mosquitto"), "-c", b.conf)
	b.cmd.Stderr = os.Stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatalf("restart mosquitto: %v", err)
	}
	b.waitUp(t)
}

// testCert writes a CA-signed certificate for 127.0.0.1 and its key into dir, and returns their
// paths and a pool holding the CA.
func testCert(t testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "broker test CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "broker.crt"), filepath.Join(dir, "broker.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return certFile, keyFile, pool
}
