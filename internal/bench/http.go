package bench

// The server's scale-out figures: `upkeep bench checkin`, `bench download` and `bench fleet`.
// Each figure is measured next to a reference in the same run (nginx on the same machine, under
// the same wrk load), since absolute figures on a shared machine say little.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/devclient"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// HTTPConfig configures `upkeep bench checkin`, `bench download` and `bench fleet`.
type HTTPConfig struct {
	// Postgres names an existing database to connect to; the bench creates a database of its
	// own next to it (upkeep_bench_PID) and drops it at the end. Empty: no PostgreSQL figures
	// (checkin); fleet requires it.
	Postgres string
	Duration time.Duration // each wrk run (checkin, download); the measured window (fleet)
	Conns    []int         // wrk connections
	Threads  int           // wrk threads
	Repeat   int           // wrk runs per figure; the median is reported
	Devices  int           // enrolled devices whose tokens the check-ins rotate through
	Size     int           // download: artifact bytes
	Replicas int           // fleet: `upkeep serve` processes on one database
	Interval time.Duration // fleet: the poll interval the servers suggest (serve --poll-seconds); devices follow the server's hints
	Warmup   time.Duration // fleet: polling before the window opens
	Enrolers int           // fleet: enrolments in flight
	// TLS (checkin): the server and nginx serve HTTPS with one self-signed certificate made for
	// the run, and the full and resumed handshake rates are measured too. TLS (fleet): the
	// replicas serve HTTPS, every check-in a connection of its own resuming a session.
	TLS bool
	// SQLite (fleet): one node on its embedded SQLite database instead of replicas on PostgreSQL.
	SQLite bool
	// Outage (fleet): after the window, every replica stops for this long and starts again; the
	// bench then follows the devices back (0: no outage).
	Outage time.Duration
	// Server (fleet) is the upkeep binary the replicas run; empty: this executable.
	Server string
}

func DefaultHTTPConfig() HTTPConfig {
	return HTTPConfig{
		Postgres: cmp.Or(os.Getenv("UPKEEP_BENCH_POSTGRES"), "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"),
		Duration: 10 * time.Second, Conns: []int{64, 256}, Threads: 2, Repeat: 3, Devices: 1000, Size: 64 << 20,
		Replicas: 2, Interval: 5 * time.Minute, Warmup: 20 * time.Second, Enrolers: 64,
	}
}

// needTools fails, naming them, if any of the external tools is not in PATH. The benches
// install nothing themselves.
func needTools(bench string, tools ...string) error {
	var missing []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("upkeep bench %s needs %s, not found in PATH (on Debian: apt-get install %s)",
			bench, strings.Join(missing, " and "), strings.Join(missing, " "))
	}
	return nil
}

// benchStack is a temporary folder with a key set, and the server processes started on it.
type benchStack struct {
	dir, keys, exe string
	servers        []*ServerProcess
	after          []func() // run by close once the servers stopped (dropping a database)
}

func newBenchStack() (*benchStack, error) {
	dir, err := os.MkdirTemp(sim.TempDir(), "upkeep-bench-")
	if err != nil {
		return nil, err
	}
	b := &benchStack{dir: dir, keys: filepath.Join(dir, "keys")}
	if _, err := tuf.InitKeySet(b.keys, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if b.exe, err = os.Executable(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return b, nil
}

// start starts `upkeep serve` with its data in a folder of its own.
func (b *benchStack) start(ctx context.Context, name string, args ...string) (*ServerProcess, error) {
	p, err := StartServerProcess(ctx, b.exe, filepath.Join(b.dir, name), b.keys, filepath.Join(b.dir, name+".log"), args...)
	if err != nil {
		return nil, fmt.Errorf("start server %s: %w", name, err)
	}
	b.servers = append(b.servers, p)
	return p, nil
}

func (b *benchStack) close() {
	for _, p := range b.servers {
		p.Stop()
	}
	for _, f := range b.after {
		f()
	}
	os.RemoveAll(b.dir)
}

// benchDatabase creates a fresh database on the server that adminURL names and returns its URL
// and a function that drops it.
func benchDatabase(ctx context.Context, adminURL, name string) (string, func(), error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", nil, fmt.Errorf("connect to PostgreSQL (--postgres): %w", err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return "", nil, fmt.Errorf("create database %s: %w", name, err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", nil, err
	}
	u.Path = "/" + name
	drop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, adminURL)
		if err != nil {
			fmt.Fprintf(os.Stderr, "drop database %s: %v\n", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			fmt.Fprintf(os.Stderr, "drop database %s: %v\n", name, err)
		}
	}
	return u.String(), drop, nil
}

// benchImage is what the simulated devices say they run.
var benchImage = func() wire.Installed {
	h := sha256.Sum256([]byte("bench factory image"))
	return wire.Installed{Target: "thermostat-1.0.0.img", Version: "1.0.0", SecurityVersion: 1, SHA256: hex.EncodeToString(h[:])}
}()

// benchDevice is a lightweight device: its key, its token and the director version it trusts.
// It speaks the protocol through the device client, as the agent does. One goroutine at a time
// uses it.
type benchDevice struct {
	key     ed25519.PrivateKey
	id      string
	token   string
	expires time.Time
	version int64
}

// enrolBenchDevice creates a device key and enrols it with an enrolment token, as the agent's
// Enroll does.
func enrolBenchDevice(ctx context.Context, c *devclient.Client, enrollToken string, i int) (*benchDevice, error) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	resp, err := c.Enroll(ctx, key, wire.EnrollPayload{
		PublicKey: hex.EncodeToString(pub), Time: time.Now().UTC(), Installed: benchImage,
		Identity: wire.Identity{Serial: fmt.Sprintf("BENCH-%06d", i), Product: "thermostat", HardwareID: "tstat-v2"},
	}, enrollToken)
	if err != nil {
		return nil, fmt.Errorf("enrol device %d: %w", i, err)
	}
	if resp.Token == "" {
		return nil, fmt.Errorf("enrol device %d: device %s is %s, no token", i, resp.DeviceID, resp.Status)
	}
	return &benchDevice{key: key, id: resp.DeviceID, token: resp.Token, expires: resp.ExpiresAt}, nil
}

// enrolBenchDevices enrols n devices, conc at a time, spreading them over the servers.
func enrolBenchDevices(ctx context.Context, servers []*devclient.Client, enrollToken string, n, conc int) ([]*benchDevice, error) {
	devs := make([]*benchDevice, n)
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				d, err := enrolBenchDevice(ctx, servers[i%len(servers)], enrollToken, i)
				if err != nil {
					once.Do(func() { firstErr = err })
					next.Store(int64(n))
					return
				}
				devs[i] = d
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return devs, firstErr
}

// ensureToken renews the device token as the agent does: when it is missing or expires within
// a minute, with a request signed by the device key.
func (d *benchDevice) ensureToken(ctx context.Context, c *devclient.Client) (renewed bool, err error) {
	if d.token != "" && time.Now().Add(time.Minute).Before(d.expires) {
		return false, nil
	}
	resp, err := c.Token(ctx, d.key, wire.TokenPayload{DeviceID: d.id, Time: time.Now().UTC()})
	if err != nil {
		return false, fmt.Errorf("device token: %w", err)
	}
	if resp.Token == "" {
		return false, fmt.Errorf("device token: device %s is %s, no token", d.id, resp.Status)
	}
	d.token, d.expires = resp.Token, resp.ExpiresAt
	return true, nil
}

// checkinBody is the agent's check-in body for a device that runs benchImage and is idle.
func (d *benchDevice) checkinBody() wire.Checkin {
	return wire.Checkin{Installed: benchImage, State: "idle", DirectorVersion: d.version}
}

// checkin polls once as the agent's Cycle does: If-None-Match with the director version it
// trusts; a 401 drops the token so that the next poll asks for a fresh one. A 200 (the
// director changed) is taken as if the full refresh had followed. The result carries the
// server's poll hints; a *devclient.TransientError its Retry-After.
func (d *benchDevice) checkin(ctx context.Context, c *devclient.Client) (devclient.CheckinResult, error) {
	if _, err := d.ensureToken(ctx, c); err != nil {
		return devclient.CheckinResult{}, err
	}
	res, err := c.Checkin(ctx, d.token, d.checkinBody())
	if err != nil {
		var se *devclient.ServerError
		if errors.As(err, &se) && se.Status == http.StatusUnauthorized {
			d.token = ""
		}
		return res, fmt.Errorf("check-in: %w", err)
	}
	d.version = res.Version
	return res, nil
}

// benchClients returns a device client for each server, over hc.
func benchClients(hc *http.Client, bases ...string) []*devclient.Client {
	cs := make([]*devclient.Client, len(bases))
	for i, b := range bases {
		cs[i] = &devclient.Client{HTTP: hc, Base: b}
	}
	return cs
}

// benchHTTPClient keeps up to conns connections per server alive, as a load balancer in front of
// the replicas would.
func benchHTTPClient(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = 0, conns, conns
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

// operatorClient returns a client for the first server's operator token and an enrolment token.
func benchEnrollToken(ctx context.Context, srv *ServerProcess) (*client.Client, string, error) {
	return benchEnrollTokenWith(ctx, srv, nil)
}

// benchEnrollTokenWith is benchEnrollToken through hc (nil: the default client).
func benchEnrollTokenWith(ctx context.Context, srv *ServerProcess, hc *http.Client) (*client.Client, string, error) {
	if srv.Token == "" {
		return nil, "", errors.New("the new server printed no operator token")
	}
	c := &client.Client{Base: srv.URL, Token: srv.Token, HTTP: hc}
	tok, err := c.CreateEnrollToken(ctx, wire.EnrollTokenRequest{Name: "bench", Uses: 1_000_000})
	if err != nil {
		return nil, "", err
	}
	return c, tok.Token, nil
}

// ---- wrk and nginx ----

// wrkResult is what one wrk run reports.
type wrkResult struct {
	RPS      float64
	P99      time.Duration
	Transfer float64 // bytes per second
	Requests int64
	Bad      int64 // non-2xx/3xx answers and socket errors
}

// parseWrk reads wrk's report (run with --latency).
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	var haveRPS, haveP99 bool
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk: %q: %w", line, err)
			}
			r.RPS, haveRPS = v, true
		case len(f) == 2 && f[0] == "Transfer/sec:":
			v, err := parseWrkBytes(f[1])
			if err != nil {
				return r, err
			}
			r.Transfer = v
		case len(f) == 2 && f[0] == "99%":
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return r, err
			}
			r.P99, haveP99 = d, true
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			r.Requests, _ = strconv.ParseInt(f[0], 10, 64)
		case len(f) == 5 && f[0] == "Non-2xx": // Non-2xx or 3xx responses: N
			n, _ := strconv.ParseInt(f[4], 10, 64)
			r.Bad += n
		case len(f) > 2 && f[0] == "Socket" && f[1] == "errors:":
			for _, s := range strings.Split(strings.Join(f[2:], " "), ",") {
				if kv := strings.Fields(s); len(kv) == 2 {
					n, _ := strconv.ParseInt(kv[1], 10, 64)
					r.Bad += n
				}
			}
		}
	}
	if !haveRPS || !haveP99 {
		return r, fmt.Errorf("wrk: no Requests/sec or 99%% latency in its report:\n%s", out)
	}
	return r, nil
}

// parseWrkDuration reads wrk's durations: 812.00us, 1.23ms, 2.01s, 1.02m.
func parseWrkDuration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"m", time.Minute}, {"s", time.Second}, {"h", time.Hour}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("wrk duration %q: %w", s, err)
			}
			return time.Duration(math.Round(f * float64(u.unit))), nil
		}
	}
	return 0, fmt.Errorf("wrk duration %q: unknown unit", s)
}

// parseWrkBytes reads wrk's byte counts (binary units): 512.00B, 3.50KB, 1.21GB.
func parseWrkBytes(s string) (float64, error) {
	for _, u := range []struct {
		suffix string
		unit   float64
	}{{"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30}, {"TB", 1 << 40}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, fmt.Errorf("wrk bytes %q: %w", s, err)
			}
			return f * u.unit, nil
		}
	}
	return 0, fmt.Errorf("wrk bytes %q: unknown unit", s)
}

// runWrk runs wrk once against target; script (may be empty) gets scriptArgs.
func runWrk(ctx context.Context, threads, conns int, d time.Duration, script, target string, extra []string, scriptArgs ...string) (wrkResult, error) {
	args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", strconv.Itoa(int(d.Seconds())) + "s", "--latency", "--timeout", "30s"}
	args = append(args, extra...)
	if script != "" {
		args = append(args, "-s", script)
	}
	args = append(args, target)
	if len(scriptArgs) > 0 {
		args = append(append(args, "--"), scriptArgs...)
	}
	out, err := exec.CommandContext(ctx, "wrk", args...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w: %s", strings.Join(args, " "), err, out)
	}
	r, err := parseWrk(string(out))
	if err == nil && r.Requests > 0 && r.Bad*100 > r.Requests { // more than 1% failed: not a measurement
		err = fmt.Errorf("wrk against %s: %d of %d requests failed", target, r.Bad, r.Requests)
	}
	return r, err
}

// checkinLua drives one request per device in turn: args are the device file (token TAB body
// per line), the method and the path. POST sends the device's check-in with If-None-Match; GET
// (the nginx reference) sends the same Authorization header and no body. Each thread starts at
// its own place in the list.
const checkinLua = `local devices = {}
local method, path
local i = 0
local started = 0

setup = function(thread)
  started = started + 1
  thread:set("thread_number", started)
end

init = function(args)
  for line in io.lines(args[1]) do
    local token, etag, body = line:match("^([^\t]+)\t([^\t]+)\t(.*)$")
    devices[#devices + 1] = {auth = "Bearer " .. token, etag = etag, body = body}
  end
  method, path = args[2], args[3]
  i = ((thread_number or 1) - 1) * 7919 % #devices
end

request = function()
  i = i % #devices + 1
  local d = devices[i]
  if method == "POST" then
    return wrk.format("POST", path, {["Authorization"] = d.auth, ["If-None-Match"] = d.etag,
      ["Content-Type"] = "application/json", ["Upkeep-Protocol"] = "1"}, d.body)
  end
  return wrk.format("GET", path, {["Authorization"] = d.auth, ["Upkeep-Protocol"] = "1"})
end
`

// ddiLua polls the DDI base resource of one device in turn: args are the device file
// (controller id TAB target token per line).
const ddiLua = `local devices = {}
local i = 0
local started = 0

setup = function(thread)
  started = started + 1
  thread:set("thread_number", started)
end

init = function(args)
  for line in io.lines(args[1]) do
    local id, token = line:match("^([^\t]+)\t(.*)$")
    devices[#devices + 1] = {path = "/DEFAULT/controller/v1/" .. id, auth = "TargetToken " .. token}
  end
  i = ((thread_number or 1) - 1) * 7919 % #devices
end

request = function()
  i = i % #devices + 1
  local d = devices[i]
  return wrk.format("GET", d.path, {["Authorization"] = d.auth, ["Content-Type"] = "application/json"})
end
`

// ddiTarget creates n DDI devices on srv, each of which sends its configData and polls once
// (the steady state: nothing new to do), and returns the wrk target polling them in turn.
func ddiTarget(ctx context.Context, srv *ServerProcess, hc *http.Client, dir string, n int) (*wrkTarget, error) {
	c := &client.Client{Base: srv.URL, Token: srv.Token, HTTP: hc}
	var lines bytes.Buffer
	for i := range n {
		id := fmt.Sprintf("ddi-bench-%05d", i)
		r, err := c.CreateDDIDevice(ctx, wire.DDIDeviceRequest{ID: id, Product: "bench", HardwareID: "bench-hw"})
		if err != nil {
			return nil, err
		}
		for _, req := range []struct{ method, path, body string }{
			{http.MethodPut, "/configData", `{"mode":"merge","data":{"hwRevision":"1"}}`},
			{http.MethodGet, "", ""},
		} {
			hr, _ := http.NewRequestWithContext(ctx, req.method, srv.URL+"/DEFAULT/controller/v1/"+id+req.path, strings.NewReader(req.body))
			hr.Header.Set("Authorization", "TargetToken "+r.TargetToken)
			hr.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(hr)
			if err != nil {
				return nil, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return nil, fmt.Errorf("DDI %s %s answered %d", req.method, req.path, resp.StatusCode)
			}
		}
		fmt.Fprintf(&lines, "%s\t%s\n", id, r.TargetToken)
	}
	file, script := filepath.Join(dir, "ddi-devices.tsv"), filepath.Join(dir, "ddi.lua")
	if err := os.WriteFile(file, lines.Bytes(), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(script, []byte(ddiLua), 0o644); err != nil {
		return nil, err
	}
	return &wrkTarget{name: "upkeep DDI poll (SQLite)", url: srv.URL + "/DEFAULT/controller/v1/", script: script, args: []string{file}}, nil
}

// writeDeviceFile writes token, ETag and check-in body of each device, one a line, for checkinLua.
func writeDeviceFile(path string, devs []*benchDevice) error {
	var b bytes.Buffer
	for _, d := range devs {
		body, err := json.Marshal(d.checkinBody())
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s\t\"%d\"\t%s\n", d.token, d.version, body)
	}
	return os.WriteFile(path, b.Bytes(), 0o600)
}

// nginxProcess is an nginx master process started from a temporary configuration.
type nginxProcess struct {
	cmd  *exec.Cmd
	dir  string
	URL  string
	done chan struct{}
}

// freeLoopbackPort returns a port that nothing listens on right now.
func freeLoopbackPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// startNginx serves files (name -> path to copy or link) from a temporary folder: worker
// processes auto, access log off, keep-alive without a request limit (as the Go server).
func startNginx(ctx context.Context, files map[string]string) (*nginxProcess, error) {
	return startNginxTLS(ctx, files, "", "")
}

// startNginxTLS is startNginx serving HTTPS with the certificate and key given (none: HTTP):
// TLS 1.2 and 1.3, session tickets on (nginx's default) and a shared session cache.
func startNginxTLS(ctx context.Context, files map[string]string, certFile, keyFile string) (*nginxProcess, error) {
	dir, err := os.MkdirTemp(sim.TempDir(), "upkeep-bench-nginx-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*nginxProcess, error) { os.RemoveAll(dir); return nil, err }
	// The workers may run as an unprivileged user: the folder must be readable by all.
	www := filepath.Join(dir, "www")
	for _, d := range []string{dir, www, filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fail(err)
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return fail(err)
		}
	}
	for name, src := range files {
		dst := filepath.Join(www, name)
		if err := os.Link(src, dst); err != nil {
			b, err := os.ReadFile(src)
			if err != nil {
				return fail(err)
			}
			if err := os.WriteFile(dst, b, 0o644); err != nil {
				return fail(err)
			}
		}
		if err := os.Chmod(dst, 0o644); err != nil {
			return fail(err)
		}
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return fail(err)
	}
	tmp := filepath.Join(dir, "tmp")
	scheme, sslListen, sslConf := "http", "", ""
	if certFile != "" {
		scheme, sslListen = "https", " ssl"
		sslConf = fmt.Sprintf("        ssl_certificate %s;\n        ssl_certificate_key %s;\n        ssl_protocols TLSv1.2 TLSv1.3;\n"+
			"        ssl_session_cache shared:SSL:10m;\n        ssl_session_tickets on;\n", certFile, keyFile)
	}
	conf := fmt.Sprintf(`worker_processes auto;
daemon off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    default_type application/octet-stream;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    server {
        listen 127.0.0.1:%[3]d%[5]s;
        root %[4]s;
%[6]s    }
}
`, dir, tmp, port, www, sslListen, sslConf)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return fail(err)
	}
	cmd := exec.CommandContext(ctx, "nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", confPath)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("start nginx: %w", err))
	}
	p := &nginxProcess{cmd: cmd, dir: dir, URL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, port), done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }() //nolint:errcheck // the exit status says nothing here
	for deadline := time.Now().Add(10 * time.Second); ; {
		select {
		case <-p.done:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return fail(fmt.Errorf("nginx exited: %s%s", out.String(), log))
		default:
		}
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
			c.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, errors.New("nginx did not listen within 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (p *nginxProcess) Stop() {
	p.cmd.Process.Signal(syscall.SIGQUIT) //nolint:errcheck // graceful stop; best effort
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill() //nolint:errcheck // it would not stop
		<-p.done
	}
	os.RemoveAll(p.dir)
}

// wrkTarget is one thing measured under wrk: a name, a URL and the wrk arguments for it.
type wrkTarget struct {
	name, url, script string
	extra, args       []string
	runs              map[int][]wrkResult // by connections
}

// median returns the median requests per second, p99 and transfer rate of runs, each taken
// on its own.
func median(runs []wrkResult) wrkResult {
	pick := func(f func(wrkResult) float64) float64 {
		v := make([]float64, len(runs))
		for i, r := range runs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return wrkResult{
		RPS:      pick(func(r wrkResult) float64 { return r.RPS }),
		P99:      time.Duration(pick(func(r wrkResult) float64 { return float64(r.P99) })),
		Transfer: pick(func(r wrkResult) float64 { return r.Transfer }),
	}
}

// runWrkRounds runs every target at every connection count, Repeat rounds, the targets of one
// connection count right next to each other.
func runWrkRounds(ctx context.Context, cfg HTTPConfig, conns []int, targets []*wrkTarget, out io.Writer) error {
	for rep := range cfg.Repeat {
		for _, c := range conns {
			for _, t := range targets {
				r, err := runWrk(ctx, cfg.Threads, c, cfg.Duration, t.script, t.url, t.extra, t.args...)
				if err != nil {
					return fmt.Errorf("%s: %w", t.name, err)
				}
				if t.runs == nil {
					t.runs = map[int][]wrkResult{}
				}
				t.runs[c] = append(t.runs[c], r)
				fmt.Fprintf(out, "run %d/%d, %3d connections, %-22s %9.0f req/s  p99 %-9s %8.1f MiB/s\n",
					rep+1, cfg.Repeat, c, t.name+":", r.RPS, r.P99.Round(10*time.Microsecond), r.Transfer/(1<<20))
			}
		}
	}
	return nil
}

// ---- bench checkin ----

// Checkin runs `upkeep bench checkin`.
func Checkin(ctx context.Context, cfg HTTPConfig, out io.Writer) error {
	if err := needTools("checkin", "wrk", "nginx"); err != nil {
		return err
	}
	if cfg.Repeat < 1 || cfg.Devices < 1 || len(cfg.Conns) == 0 {
		return errors.New("bench checkin: --repeat, --devices and --conns must be positive")
	}
	stack, err := newBenchStack()
	if err != nil {
		return err
	}
	defer stack.close()
	type server struct {
		name string
		proc *ServerProcess
	}
	servers := []server{}
	var tlsArgs []string
	var pool *x509.CertPool
	certFile, keyFile := filepath.Join(stack.dir, "tls-cert.pem"), filepath.Join(stack.dir, "tls-key.pem")
	if cfg.TLS {
		if pool, err = selfSignedCert(certFile, keyFile); err != nil {
			return err
		}
		tlsArgs = []string{"--tls-cert", certFile, "--tls-key", keyFile}
	}
	// wrk's connections all come from 127.0.0.1, standing for devices at many addresses: the
	// per-address bound (32 in flight, for token requests, enrolments and DDI authentication)
	// would answer it 429.
	tlsArgs = append(tlsArgs, "--max-per-ip", "100000")
	sq, err := stack.start(ctx, "sqlite", tlsArgs...)
	if err != nil {
		return err
	}
	servers = append(servers, server{"upkeep (SQLite)", sq})
	if cfg.Postgres != "" {
		dbURL, drop, err := benchDatabase(ctx, cfg.Postgres, fmt.Sprintf("upkeep_bench_%d", os.Getpid()))
		if err != nil {
			return err
		}
		stack.after = append(stack.after, drop)
		pg, err := stack.start(ctx, "postgres", append([]string{"--db", dbURL}, tlsArgs...)...)
		if err != nil {
			return err
		}
		servers = append(servers, server{"upkeep (PostgreSQL)", pg})
	}
	// The nginx reference gets a 300-byte file and the same Lua script with the same headers.
	static := filepath.Join(stack.dir, "static-300.json")
	if err := os.WriteFile(static, bytes.Repeat([]byte("x"), 300), 0o644); err != nil {
		return err
	}
	script := filepath.Join(stack.dir, "checkin.lua")
	if err := os.WriteFile(script, []byte(checkinLua), 0o644); err != nil {
		return err
	}
	hc := benchHTTPClient(64)
	if pool != nil {
		hc.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	var targets []*wrkTarget
	var firstDevices string
	var firstDevs []*benchDevice
	for i, s := range servers {
		_, tok, err := benchEnrollTokenWith(ctx, s.proc, hc)
		if err != nil {
			return err
		}
		t := time.Now()
		dc := benchClients(hc, s.proc.URL)
		devs, err := enrolBenchDevices(ctx, dc, tok, cfg.Devices, 16)
		if err != nil {
			return err
		}
		took := time.Since(t)
		// One check-in per device before measuring: every one must be answered 304, and the
		// server's check-in cache then holds every device (the steady state).
		for _, d := range devs {
			res, err := d.checkin(ctx, dc[0])
			if err != nil {
				return fmt.Errorf("%s: %w", s.name, err)
			}
			if res.Status != http.StatusNotModified {
				return fmt.Errorf("%s: check-in answered %d, want 304", s.name, res.Status)
			}
		}
		file := filepath.Join(stack.dir, fmt.Sprintf("devices-%d.tsv", i))
		if err := writeDeviceFile(file, devs); err != nil {
			return err
		}
		if firstDevices == "" {
			firstDevices, firstDevs = file, devs
		}
		fmt.Fprintf(out, "%s: pid %d on %s, %d devices enrolled in %s\n", s.name, s.proc.cmd.Process.Pid, s.proc.URL, len(devs), took.Round(time.Millisecond))
		targets = append(targets, &wrkTarget{name: s.name, url: s.proc.URL + "/device/v1/checkin", script: script, args: []string{file, "POST", "/device/v1/checkin"}})
		if i == 0 { // the hawkBit DDI poll with nothing new, on the same server
			// Enough devices that, at 256 connections, one is not polled again while its last
			// poll is still in flight; past the per-device bound it would be answered 429.
			n := max(cfg.Devices, 4000)
			t, err := ddiTarget(ctx, s.proc, hc, stack.dir, n)
			if err != nil {
				return fmt.Errorf("%s: DDI devices: %w", s.name, err)
			}
			fmt.Fprintf(out, "%s: %d DDI devices created, each sent configData and polled once\n", s.name, n)
			targets = append(targets, t)
		}
	}
	var ng *nginxProcess
	if cfg.TLS {
		ng, err = startNginxTLS(ctx, map[string]string{"static-300.json": static}, certFile, keyFile)
	} else {
		ng, err = startNginx(ctx, map[string]string{"static-300.json": static})
	}
	if err != nil {
		return err
	}
	defer ng.Stop()
	fmt.Fprintf(out, "nginx: pid %d on %s, a 300-byte file\n", ng.cmd.Process.Pid, ng.URL)
	if cfg.TLS {
		fmt.Fprintf(out, "TLS: one self-signed ECDSA P-256 certificate for 127.0.0.1 (%s) on both; wrk keeps its connections alive\n", certFile)
	}
	floor, err := startFloor(ctx, stack.exe, tlsArgs[:len(tlsArgs)-2])
	if err != nil {
		return err
	}
	defer floor.Stop()
	fmt.Fprintf(out, "net/http floor: pid %d on %s (reads the body, answers 304, no other work)\n", floor.cmd.Process.Pid, floor.URL)
	targets = append([]*wrkTarget{{name: "nginx (300 B file)", url: ng.URL + "/static-300.json", script: script,
		args: []string{firstDevices, "GET", "/static-300.json"}},
		{name: "net/http floor (no work)", url: floor.URL + "/device/v1/checkin", script: script, args: []string{firstDevices, "POST", "/device/v1/checkin"}}}, targets...)
	fmt.Fprintf(out, "wrk -t%d, %s per run, %d runs, connections %v\n", cfg.Threads, cfg.Duration, cfg.Repeat, cfg.Conns)
	if err := runWrkRounds(ctx, cfg, cfg.Conns, targets, out); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nmedian of %d runs:\n", cfg.Repeat)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "connections\tserver\treq/s\tp99\tratio to nginx\t")
	for _, c := range cfg.Conns {
		ref := median(targets[0].runs[c])
		for _, t := range targets {
			m := median(t.runs[c])
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%s\t%.2fx\t\n", c, t.name, m.RPS, m.P99.Round(10*time.Microsecond), m.RPS/ref.RPS)
		}
	}
	if err := tw.Flush(); err != nil || !cfg.TLS {
		return err
	}
	return handshakeRates(ctx, cfg, pool, ng.URL+"/static-300.json", servers[0].name, servers[0].proc.URL, firstDevs, out)
}

// handshakeRates measures, for nginx and the first server, requests per second when every
// request opens a new TLS connection: full handshakes (no client session cache) and resumed
// ones (a session cache, as the agent keeps). The server is sent check-ins, nginx the file.
func handshakeRates(ctx context.Context, cfg HTTPConfig, pool *x509.CertPool, staticURL, name, base string, devs []*benchDevice, out io.Writer) error {
	const conc = 16
	var next [conc]int // each client checks its own devices in: w, w+conc, w+2·conc, …
	checkin := func(ctx context.Context, hc *http.Client, w int) error {
		i := (w + next[w]*conc) % len(devs)
		next[w]++
		res, err := devs[i].checkin(ctx, &devclient.Client{HTTP: hc, Base: base})
		if err == nil && res.Status != http.StatusNotModified {
			err = fmt.Errorf("check-in answered %d, want 304", res.Status)
		}
		return err
	}
	fmt.Fprintf(out, "\na new TLS connection per request, %d clients in Go, %s per run, median of %d runs:\n", conc, cfg.Duration, cfg.Repeat)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "handshake\tserver\treq/s\tresumed\tratio to nginx\t")
	for _, resume := range []bool{false, true} {
		kind := "full"
		if resume {
			kind = "resumed"
		}
		var ref float64
		for _, t := range []struct {
			name string
			req  func(context.Context, *http.Client, int) error
		}{{"nginx (300 B file)", getOK(staticURL)}, {name, checkin}} {
			var runs []float64
			var share float64
			for range cfg.Repeat {
				rps, res, err := handshakeRate(ctx, pool, resume, conc, cfg.Duration, t.req)
				if err != nil {
					return fmt.Errorf("%s, %s handshakes: %w", t.name, kind, err)
				}
				runs, share = append(runs, rps), res
			}
			slices.Sort(runs)
			m := runs[len(runs)/2]
			if ref == 0 {
				ref = m
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f%%\t%.2fx\t\n", kind, t.name, m, share*100, m/ref)
		}
	}
	return tw.Flush()
}

// ---- bench download ----

// Download runs `upkeep bench download`.
func Download(ctx context.Context, cfg HTTPConfig, out io.Writer) error {
	if err := needTools("download", "wrk", "nginx"); err != nil {
		return err
	}
	if cfg.Repeat < 1 || cfg.Size < 1 || len(cfg.Conns) == 0 {
		return errors.New("bench download: --repeat, --size and --conns must be positive")
	}
	stack, err := newBenchStack()
	if err != nil {
		return err
	}
	defer stack.close()
	srv, err := stack.start(ctx, "server")
	if err != nil {
		return err
	}
	c, tok, err := benchEnrollToken(ctx, srv)
	if err != nil {
		return err
	}
	targetsKey, err := tuf.LoadKey(filepath.Join(stack.keys, tuf.FileTargetsKey))
	if err != nil {
		return err
	}
	imageRoot, err := os.ReadFile(filepath.Join(stack.keys, tuf.FileImageRoot))
	if err != nil {
		return err
	}
	file := filepath.Join(stack.dir, "thermostat-2.0.0.img")
	if err := os.WriteFile(file, sim.Image("2.0.0", cfg.Size), 0o644); err != nil {
		return err
	}
	rel, err := c.Publish(ctx, client.PublishOptions{File: file, TargetsKey: targetsKey, TrustedRoot: imageRoot, Expires: tuf.DefaultLifetimes().Targets,
		Custom: uptane.TargetCustom{Product: "thermostat", HardwareIDs: []string{"tstat-v2"}, Version: "2.0.0", SecurityVersion: 2, Class: uptane.ClassSecurity}})
	if err != nil {
		return err
	}
	dc := benchClients(benchHTTPClient(4), srv.URL)[0]
	devs, err := enrolBenchDevices(ctx, []*devclient.Client{dc}, tok, 1, 1)
	if err != nil {
		return err
	}
	// A device fetches only what its director view names.
	if _, err := c.Deploy(ctx, wire.DeployRequest{Release: rel.Product + "@" + rel.Version, DeviceIDs: []string{devs[0].id}}); err != nil {
		return err
	}
	// Check once that the device gets the whole artifact, byte for byte.
	resp, err := dc.FetchArtifact(ctx, devs[0].token, dc.TargetURL(rel.Target), 0, "")
	if err != nil {
		return fmt.Errorf("download check: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || n != int64(cfg.Size) || hex.EncodeToString(h.Sum(nil)) != rel.SHA256 {
		return fmt.Errorf("download check: HTTP %d, %d bytes, %v", resp.StatusCode, n, err)
	}
	ng, err := startNginx(ctx, map[string]string{"artifact.img": file})
	if err != nil {
		return err
	}
	defer ng.Stop()
	fmt.Fprintf(out, "upkeep (SQLite, fs artifacts on %s): pid %d on %s; nginx: pid %d on %s; artifact %d bytes\n",
		stack.dir, srv.cmd.Process.Pid, srv.URL, ng.cmd.Process.Pid, ng.URL, cfg.Size)
	auth := []string{"-H", "Authorization: Bearer " + devs[0].token}
	targets := []*wrkTarget{
		{name: "nginx (same file)", url: ng.URL + "/artifact.img", extra: auth},
		{name: "upkeep (device GET)", url: dc.TargetURL(rel.Target), extra: auth},
	}
	if err := runWrkRounds(ctx, cfg, cfg.Conns, targets, out); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nmedian of %d runs:\n", cfg.Repeat)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "connections\tserver\tMiB/s\tdownloads/s\tratio to nginx\t")
	for _, c := range cfg.Conns {
		ref := median(targets[0].runs[c])
		for _, t := range targets {
			m := median(t.runs[c])
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%.1f\t%.2fx\t\n", c, t.name, m.Transfer/(1<<20), m.RPS, m.Transfer/ref.Transfer)
		}
	}
	return tw.Flush()
}

// ---- bench fleet ----

// procCPU returns a process's user+system CPU time from /proc/PID/stat (pid 0: this process).
func procCPU(pid int) (time.Duration, error) {
	p := "/proc/self/stat"
	if pid != 0 {
		p = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	// Fields after the command name (in parentheses, which may hold spaces): state is field 3,
	// utime 14 and stime 15, in clock ticks (USER_HZ, 100 on Linux).
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: unexpected format", p)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: unexpected format", p)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	return time.Duration(ut+st) * time.Second / 100, nil
}

// pgStats are a database's cumulative counters from pg_stat_database.
type pgStats struct {
	Writes, Commits, Reads int64 // rows inserted+updated+deleted; transactions committed; rows fetched
}

func readPGStats(ctx context.Context, conn *pgx.Conn, db string) (pgStats, error) {
	var s pgStats
	err := conn.QueryRow(ctx, `SELECT tup_inserted + tup_updated + tup_deleted, xact_commit, tup_fetched FROM pg_stat_database WHERE datname = $1`, db).
		Scan(&s.Writes, &s.Commits, &s.Reads)
	return s, err
}

// hostCPU reads the machine's busy and stolen CPU time from /proc/stat, in clock ticks. Stolen
// time is what the hypervisor gave other tenants while this machine wanted to run: on a shared
// host it slows every phase of a bench without showing in any process's own CPU time.
func hostCPU() (busy, steal int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	for i := 1; i <= 8; i++ {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		switch i {
		case 4, 5: // idle, iowait
		case 8:
			steal = n
		default:
			busy += n
		}
	}
	return busy, steal
}

// referenceSHA256 times `sha256sum` over a 64 MiB file in dir (the best of three runs): the
// machine's speed in the same run, for reading the bench's other figures against.
func referenceSHA256(ctx context.Context, dir string) (time.Duration, error) {
	f := filepath.Join(dir, "reference-64MiB")
	if err := os.WriteFile(f, bytes.Repeat([]byte("upkeep reference "), 64<<20/17+1)[:64<<20], 0o644); err != nil {
		return 0, err
	}
	defer os.Remove(f)
	best := time.Duration(0)
	for range 3 {
		t := time.Now()
		if err := exec.CommandContext(ctx, "sha256sum", f).Run(); err != nil {
			return 0, fmt.Errorf("sha256sum: %w", err)
		}
		if d := time.Since(t); best == 0 || d < best {
			best = d
		}
	}
	return best, nil
}
