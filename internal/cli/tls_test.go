package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/tlsclient"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/wire"
)

// testCA is a private certificate authority for the TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // its certificate, PEM
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Upkeep test CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{key: key, file: filepath.Join(dir, "ca.pem")}
	if ca.cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue writes a certificate for 127.0.0.1 with the serial given and its key to certFile and
// keyFile, each replaced at once (written aside, then renamed over), as a certificate renewal does.
func (ca *testCA) issue(t *testing.T, serial int64, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, keyFile, "PRIVATE KEY", kb)
	writePEM(t, certFile, "CERTIFICATE", der)
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// servedSerial opens a new TLS connection to addr and returns the serial of the certificate
// the server presents.
func servedSerial(t *testing.T, addr, caFile string) int64 {
	t.Helper()
	cfg, err := tlsclient.Config(caFile)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestTLSEndToEnd serves HTTPS with a certificate from a private CA: the operator CLI and the
// real agent binary trust it with --ca, the agent enrols and installs an update over it, and one
// without --ca is refused. Replacing the certificate files is seen by new connections without a
// restart, and a second connection resumes the first's TLS session.
func TestTLSEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent binary")
	}
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if _, err := tuf.InitKeySet(keys, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, dir)
	certFile, keyFile := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	ca.issue(t, 100, certFile, keyFile)
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.KeysDir, cfg.Logger, cfg.PollSeconds = "127.0.0.1:0", filepath.Join(dir, "data"), keys, quietLogger(), 1
	cfg.TLSCert, cfg.TLSKey, cfg.TLSCheckEvery = certFile, keyFile, 10*time.Millisecond
	srv, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !strings.HasPrefix(srv.URL, "https://") {
		t.Fatalf("server URL %s, want https://", srv.URL)
	}
	g := []string{"--server", srv.URL, "--token", srv.AdminToken, "--ca", ca.file}
	if _, err := cliErr("--server", srv.URL, "--token", srv.AdminToken, "devices", "list"); err == nil {
		t.Fatal("the operator CLI trusted the private CA's certificate without --ca")
	}
	v100, v101 := image("1.0.0", 64<<10), image("1.0.1", 80<<10)
	f100, f101 := filepath.Join(dir, "fw-1.0.0.img"), filepath.Join(dir, "fw-1.0.1.img")
	os.WriteFile(f100, v100, 0o644)
	os.WriteFile(f101, v101, 0o644)
	pub := func(v, sv, f string) {
		cli(t, append(g, "release", "publish", "--product", testProduct, "--hardware", testHardware, "--version", v,
			"--security-version", sv, "--class", "security", "--key", filepath.Join(keys, "targets.key"), f)...)
	}
	pub("1.0.0", "1", f100)
	token := strings.TrimSpace(cli(t, append(g, "enroll-token", "--name", "line-1")...))

	agentBin := filepath.Join(dir, "upkeep-agent")
	if b, err := exec.Command("go", "build", "-o", agentBin, "../../cmd/upkeep-agent").CombinedOutput(); err != nil {
		t.Fatalf("build agent: %v\n%s", err, b)
	}
	state := filepath.Join(dir, "device")
	os.MkdirAll(filepath.Join(state, "slots"), 0o700)
	os.WriteFile(filepath.Join(state, "slots", "slot-a.img"), v100, 0o600)
	enroll := func(server string, extra ...string) (string, error) {
		args := append([]string{"enroll", "--state", state, "--server", server, "--token", token, "--serial", "SN-TLS",
			"--product", testProduct, "--hardware", testHardware, "--image-root", filepath.Join(keys, "root.json"),
			"--director-root", filepath.Join(keys, "director-root.json"), "--installed-target", "thermostat/1.0.0/fw-1.0.0.img",
			"--installed-version", "1.0.0", "--installed-security-version", "1"}, extra...)
		b, err := exec.Command(agentBin, args...).CombinedOutput()
		return string(b), err
	}
	if out, err := enroll("http://example.com"); err == nil || !strings.Contains(out, "plain http") {
		t.Fatalf("the agent enrolled over plain HTTP off loopback: %v\n%s", err, out)
	}
	if out, err := enroll(srv.URL); err == nil || !strings.Contains(out, "certificate") {
		t.Fatalf("the agent trusted the private CA's certificate without --ca: %v\n%s", err, out)
	}
	if out, err := enroll(srv.URL, "--ca", ca.file); err != nil || !strings.Contains(out, "accepted") {
		t.Fatalf("enroll with --ca: %v\n%s", err, out)
	}
	runCmd := exec.Command(agentBin, "run", "--state", state, "--boot", "sim", "--poll", "1s", "--ca", ca.file)
	var agentLog bytes.Buffer
	runCmd.Stderr = &agentLog
	if err := runCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { runCmd.Process.Kill(); runCmd.Wait() }()
	pub("1.0.1", "2", f101)
	var devs []wire.Device
	json.Unmarshal([]byte(cli(t, append(g, "devices", "list", "--json")...)), &devs)
	if len(devs) != 1 {
		t.Fatalf("devices: %+v", devs)
	}
	cli(t, append(g, "deploy", "--release", "thermostat@1.0.1", "--device", devs[0].ID)...)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		st, err := agent.ReadStatus(state)
		if err == nil && st.Installed.Version == "1.0.1" && st.Phase == agent.PhaseIdle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not install 1.0.1 over TLS: %+v\n%s", st, agentLog.String())
		}
	}

	// Session resumption: a second connection resumes the first's session (TLS 1.3 ticket).
	tr, err := tlsclient.Transport(ca.file)
	if err != nil {
		t.Fatal(err)
	}
	tr.DisableKeepAlives = true
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var resumed []bool
	for range 2 {
		resp, err := hc.Get(srv.URL + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		resumed = append(resumed, resp.TLS.DidResume)
	}
	if resumed[0] || !resumed[1] {
		t.Fatalf("resumed %v, want a full handshake then a resumed one", resumed)
	}

	// Certificate reload: the files are replaced; new connections get the new certificate.
	addr := strings.TrimPrefix(srv.URL, "https://")
	if got := servedSerial(t, addr, ca.file); got != 100 {
		t.Fatalf("served serial %d, want 100", got)
	}
	ca.issue(t, 200, certFile, keyFile)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if got := servedSerial(t, addr, ca.file); got == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the replaced certificate was not served to new connections")
		}
	}
	if ev := cli(t, append(g, "devices", "events", devs[0].ID)...); !strings.Contains(ev, "commit") {
		t.Fatalf("events after the reload: %s", ev)
	}
}

// TestServeRefusesPlainHTTPOffLoopback: serve on a non-loopback address without a certificate
// is refused unless --behind-proxy says a TLS proxy is in front; loopback stays allowed.
func TestServeRefusesPlainHTTPOffLoopback(t *testing.T) {
	dir := t.TempDir()
	for _, addr := range []string{"0.0.0.0:8080", ":8080", "[::]:8080", "192.0.2.10:8080"} {
		out, err := cliErr("serve", "--addr", addr, "--data", filepath.Join(dir, "data"), "--keys", filepath.Join(dir, "keys"))
		if err == nil || !strings.Contains(err.Error(), "--behind-proxy") {
			t.Errorf("serve --addr %s without TLS: %v\n%s", addr, err, out)
		}
	}
	cfg := server.DefaultConfig()
	cfg.Addr = "0.0.0.0:8080"
	if err := cfg.Validate(); err == nil {
		t.Error("plain HTTP on 0.0.0.0 validated")
	}
	cfg.BehindProxy = true
	if err := cfg.Validate(); err != nil {
		t.Errorf("--behind-proxy: %v", err)
	}
	cfg.BehindProxy, cfg.TLSCert, cfg.TLSKey = false, "cert.pem", "key.pem"
	if err := cfg.Validate(); err != nil {
		t.Errorf("with a certificate: %v", err)
	}
	cfg.TLSKey = ""
	if err := cfg.Validate(); err == nil {
		t.Error("a certificate without its key validated")
	}
	cfg = server.DefaultConfig()
	for _, addr := range []string{"127.0.0.1:0", "localhost:8080", "[::1]:8080"} {
		cfg.Addr = addr
		if err := cfg.Validate(); err != nil {
			t.Errorf("loopback %s: %v", addr, err)
		}
	}
	t.Setenv("UPKEEP_BEHIND_PROXY", "true") // the variable binds to the flag
	out, err := cliErr("serve", "--addr", "0.0.0.0:8080", "--data", filepath.Join(dir, "data"), "--keys", filepath.Join(dir, "keys"))
	if err == nil || strings.Contains(err.Error(), "--behind-proxy") {
		t.Errorf("UPKEEP_BEHIND_PROXY=true: %v (want a failure past the address check: no keys)\n%s", err, out)
	}
}
