// Package brokertest starts a real Mosquitto broker for tests: its own folder, config and
// dynamic-security file, on a free loopback port, stopped when the test ends. Without
// mosquitto the test skips, or fails under CI (testenv.Required).
package brokertest

import (
	"fmt"
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
	cmd     *exec.Cmd
	conf    string
	dir     string
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

func start(t testing.TB, anon bool) *Broker {
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
