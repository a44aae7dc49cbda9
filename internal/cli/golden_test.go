// TestGoldenDeviceRequests keeps the device protocol (/device/v1, and the image repository the
// agent reads under /repo/image) working for agents already in the field. The file
// testdata/golden/device_requests.json holds every kind of request today's agent makes over a
// life cycle (enrolment with and without an enrolment token, token requests while pending and
// once accepted, check-ins answered 200 and 304, director and image metadata, an image download
// cut off and resumed with Range, reports; consent and opt-out are local and send nothing), with
// the exact body bytes, the headers the agent set, and the status, top-level JSON keys and read
// headers of the answers. The test replays them in order against a fresh server taken through
// the same operator steps, and fails if an answer's status differs or a recorded key or header
// is missing: a renamed field, path or header, or a changed status, breaks those devices.
//
// Re-record only with an agent built BEFORE a protocol change, never after one (the point is that
// old requests keep working):
//
//	go test -run TestGoldenDeviceRequests ./internal/cli -record-golden
//
// The recording is deterministic (device keys from fixed seeds, fixed serials, images and clock),
// so re-recording an unchanged agent gives the same file. Replay substitutes only what a fresh
// server issues anew: the enrolment token ({enroll_token}), each device's bearer token
// ({device_token}, from the replayed enrolment or token answer), and, should the server number
// its metadata otherwise, the snapshot and targets versions its timestamp and snapshot announce.

package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/agent"
	"upkeep.dev/upkeep/internal/agent/boot"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/wire"
)

var recordGolden = flag.Bool("record-golden", false, "re-record testdata/golden/device_requests.json with this tree's agent (see golden_test.go)")

const goldenPath = "testdata/golden/device_requests.json"

// goldenClock is the agent's and the server's clock while recording, and the server's clock at
// replay (the signed requests carry it; the server accepts them within auth.MaxClockSkew).
var goldenClock = time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)

// goldenCut is where the recorded first download of the update is cut off, so that the agent
// resumes it with a Range request.
const goldenCut = 32 << 10

// Placeholders in recorded headers for the secrets a fresh server issues anew.
const (
	phEnrollToken = "{enroll_token}"
	phDeviceToken = "{device_token}"
)

// goldenRecording is the file's content.
type goldenRecording struct {
	Note      string           `json:"note"`
	Clock     time.Time        `json:"clock"`
	Exchanges []goldenExchange `json:"exchanges"`
}

// goldenExchange is one request of the agent and the server's answer.
type goldenExchange struct {
	Step   string            `json:"step"`
	Device string            `json:"device"` // serial
	Method string            `json:"method"`
	Path   string            `json:"path"` // path and query
	Header map[string]string `json:"header,omitempty"`
	// The exact body: BodyJSON holds compact JSON as the agent sent it (shown indented here;
	// replay compacts it again and checks BodySHA256), BodyBase64 anything else.
	BodyJSON   json.RawMessage `json:"body_json,omitempty"`
	BodyBase64 string          `json:"body_base64,omitempty"`
	BodySHA256 string          `json:"body_sha256,omitempty"`
	Status     int             `json:"status"`
	JSONKeys   []string        `json:"json_keys,omitempty"` // top-level keys of a JSON object answer
	// RespHeader holds the answer's headers that the agent reads. Replay requires each to be
	// present, and Content-Range (which the agent parses) to be equal.
	RespHeader map[string]string `json:"response_header,omitempty"`
}

// goldenRespHeaders are the answer headers the agent reads.
var goldenRespHeaders = []string{"Content-Range", wire.HeaderPollInterval, wire.HeaderPollJitter}

func (x *goldenExchange) body() ([]byte, error) {
	var b []byte
	switch {
	case x.BodyJSON != nil:
		var buf bytes.Buffer
		if err := json.Compact(&buf, x.BodyJSON); err != nil {
			return nil, err
		}
		b = buf.Bytes()
	case x.BodyBase64 != "":
		var err error
		if b, err = base64.StdEncoding.DecodeString(x.BodyBase64); err != nil {
			return nil, err
		}
	default:
		return nil, nil
	}
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != x.BodySHA256 {
		return nil, errors.New("body does not match its recorded sha256 (was the golden file edited?)")
	}
	return b, nil
}

func (x *goldenExchange) String() string {
	return fmt.Sprintf("%s: %s %s %s", x.Step, x.Device, x.Method, x.Path)
}

// goldenDevice is one device of the scenario: its fixed identity, and when recording its agent.
type goldenDevice struct {
	serial string
	key    ed25519.PrivateKey
	id     string
	// recording
	cfg   agent.Config
	agent *agent.Agent
	// the bearer token the device last received (recording: to recognise it; replay: to send)
	token string
}

// goldenRun drives the scenario, recording a real agent or replaying its requests.
type goldenRun struct {
	t                *testing.T
	e                *env
	record           bool
	factory, update  []byte
	factRel, updRel  *wire.Release
	devices          map[string]*goldenDevice
	mu               sync.Mutex
	step             string
	exchanges        []goldenExchange  // recorded, or to replay
	next             int               // replay: the next exchange
	metaVersions     map[string]string // replay: "serial repo role" -> the version announced
	cutDone          bool              // recording: the first image download was cut off
	replayHTTPClient *http.Client
}

// goldenStep is a step of the life cycle: an operator action (run in both modes), or a device's
// turn (its agent acts when recording; its recorded requests are sent at replay).
type goldenStep struct {
	name   string
	op     func(g *goldenRun)
	device string
	act    func(ctx context.Context, g *goldenRun, d *goldenDevice) error
	// wantErr: the agent's step ends in an error that belongs to the scenario (recording only).
	wantErr bool
}

const (
	goldenSerialA = "SN-GOLDEN-A" // enrols with a token
	goldenSerialB = "SN-GOLDEN-B" // enrols without one and waits for an operator
)

func goldenSteps() []goldenStep {
	return []goldenStep{
		{name: "enroll-with-token", device: goldenSerialA, act: func(ctx context.Context, g *goldenRun, d *goldenDevice) error {
			return g.enroll(ctx, d, g.e.enrollToken)
		}},
		{name: "first-cycle", device: goldenSerialA, act: func(ctx context.Context, g *goldenRun, d *goldenDevice) error {
			var err error
			if d.agent, err = agent.New(ctx, d.cfg); err != nil {
				return err
			}
			return d.agent.Cycle(ctx)
		}},
		{name: "operator-deploys-update", op: func(g *goldenRun) { g.e.deploy(g.updRel, g.devices[goldenSerialA].id) }},
		// The download is cut off at goldenCut bytes: the cycle fails and leaves it to the next.
		{name: "update-download-cut", device: goldenSerialA, wantErr: true, act: func(ctx context.Context, g *goldenRun, d *goldenDevice) error {
			return d.agent.Cycle(ctx)
		}},
		{name: "update-resume-install", device: goldenSerialA, act: func(ctx context.Context, g *goldenRun, d *goldenDevice) error {
			if err := d.agent.Cycle(ctx); err != nil {
				return err
			}
			if st := d.agent.State(); st.Installed.Version != g.updRel.Version || st.Phase != agent.PhaseIdle {
				return fmt.Errorf("after the update: %+v phase %s (%s)", st.Installed, st.Phase, st.LastError)
			}
			return nil
		}},
		{name: "idle-checkin", device: goldenSerialA, act: func(ctx context.Context, g *goldenRun, d *goldenDevice) error {
			return d.agent.Cycle(ctx)
		}},
		{name: "enroll-pending", device: goldenSerialB, act: func(ctx context.Context, g *goldenRun, d *goldenDevice) error {
			return g.enroll(ctx, d, "")
		}},
		// A pending device asks for a token and is told to wait (202).
		{name: "token-while-pending", device: goldenSerialB, wantErr: true, act: func(ctx context.Context, g *goldenRun, d *goldenDevice) error {
			var err error
			if d.agent, err = agent.New(ctx, d.cfg); err != nil {
				return err
			}
			return d.agent.Cycle(ctx)
		}},
		{name: "operator-accepts", op: func(g *goldenRun) {
			if err := g.e.cli.Accept(context.Background(), g.devices[goldenSerialB].id); err != nil {
				g.t.Fatal(err)
			}
		}},
		{name: "token-after-accept", device: goldenSerialB, act: func(ctx context.Context, g *goldenRun, d *goldenDevice) error {
			return d.agent.Cycle(ctx)
		}},
	}
}

func TestGoldenDeviceRequests(t *testing.T) {
	start := time.Now()
	g := &goldenRun{t: t, record: *recordGolden, devices: map[string]*goldenDevice{}, metaVersions: map[string]string{}}
	clock := goldenClock
	if !g.record {
		rec := loadGolden(t)
		g.exchanges, clock = rec.Exchanges, rec.Clock
		checkGoldenCoverage(t, g.exchanges)
	}
	g.e = newEnvWith(t, func(c *server.Config) {
		c.Now = func() time.Time { return clock } // the signed requests' times (device tokens follow the wall clock)
	})
	g.factory, g.update = image("1.0.0", 64<<10), image("1.0.1", 80<<10)
	g.factRel = g.e.publish("1.0.0", 1, g.factory)
	g.updRel = g.e.publish("1.0.1", 2, g.update)
	for i, serial := range []string{goldenSerialA, goldenSerialB} {
		g.devices[serial] = g.newDevice(serial, byte(i+1))
	}
	g.replayHTTPClient = &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(g.replayHTTPClient.CloseIdleConnections)

	ctx := context.Background()
	for _, s := range goldenSteps() {
		g.mu.Lock()
		g.step = s.name
		g.mu.Unlock()
		switch {
		case s.op != nil:
			s.op(g)
		case g.record:
			err := s.act(ctx, g, g.devices[s.device])
			if (err != nil) != s.wantErr {
				t.Fatalf("recording step %s: error %v, want an error: %v", s.name, err, s.wantErr)
			}
		default:
			g.replayStep(s)
		}
	}
	if g.record {
		checkGoldenCoverage(t, g.exchanges)
		g.save()
		t.Logf("recorded %d requests in %s", len(g.exchanges), goldenPath)
	} else if g.next != len(g.exchanges) {
		t.Fatalf("%d recorded requests belong to no step of the scenario, from %s", len(g.exchanges)-g.next, &g.exchanges[g.next])
	}
	t.Logf("%d requests in %s", len(g.exchanges), time.Since(start).Round(time.Millisecond))
}

// newDevice makes a device with a key from a fixed seed and, when recording, its state folder,
// file-backed A/B slots with the factory image in A, and an agent configuration whose HTTP
// client records every request.
func (g *goldenRun) newDevice(serial string, seed byte) *goldenDevice {
	t := g.t
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	d := &goldenDevice{serial: serial, key: key, id: auth.DeviceID(key.Public().(ed25519.PublicKey))}
	if !g.record {
		return d
	}
	dir := filepath.Join(g.e.dir, "devices", serial)
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	k, err := tuf.NewKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := tuf.SaveKey(filepath.Join(state, "device.key"), k); err != nil {
		t.Fatal(err)
	}
	bl, err := boot.NewSim(filepath.Join(dir, "bootenv.json"))
	if err != nil {
		t.Fatal(err)
	}
	slots, err := boot.NewFileSlots(filepath.Join(dir, "slots"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := slots.Create(context.Background(), boot.SlotA)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(g.factory); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	d.cfg = agent.Config{
		StateDir: state, Bootloader: bl, Slots: slots, Logger: quietLogger(),
		HTTP: &http.Client{Transport: &goldenRecorder{g: g, d: d, next: tr}},
		Now:  func() time.Time { return goldenClock },
		// A cut-off download is left to the next cycle at once, without a retry wait.
		MaxRetryWait: time.Nanosecond,
	}
	return d
}

func (g *goldenRun) enroll(ctx context.Context, d *goldenDevice, token string) error {
	sum := sha256.Sum256(g.factory)
	st, err := agent.Enroll(ctx, d.cfg, agent.EnrollOptions{
		Server: g.e.srv.URL, EnrollToken: token, ImageRoot: g.e.imageRoot, DirectorRoot: g.e.directorRoot,
		Identity:  wire.Identity{Serial: d.serial, Product: testProduct, HardwareID: testHardware},
		Installed: agent.Image{Target: g.factRel.Target, Version: g.factRel.Version, SecurityVersion: g.factRel.SecurityVersion, SHA256: hex.EncodeToString(sum[:]), Slot: boot.SlotA},
	})
	if err != nil {
		return err
	}
	if st.DeviceID != d.id {
		return fmt.Errorf("enrolled as %s, want %s (the key from the fixed seed was not used)", st.DeviceID, d.id)
	}
	return nil
}

// goldenRecorder is the recording device's HTTP transport: it notes each request and answer,
// and cuts the first image download off after goldenCut bytes.
type goldenRecorder struct {
	g    *goldenRun
	d    *goldenDevice
	next http.RoundTripper
}

var errGoldenCut = errors.New("connection cut by the golden recording")

func (r *goldenRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	g := r.g
	x := goldenExchange{Device: r.d.serial, Method: req.Method, Path: req.URL.RequestURI()}
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		sum := sha256.Sum256(b)
		x.BodySHA256 = hex.EncodeToString(sum[:])
		if json.Valid(b) && goldenCompact(b) {
			x.BodyJSON = b
		} else {
			x.BodyBase64 = base64.StdEncoding.EncodeToString(b)
		}
	}
	for k, v := range req.Header {
		if k == "User-Agent" || k == "Accept-Encoding" {
			continue // the transport's, not the agent's
		}
		if len(v) != 1 {
			g.t.Errorf("%s %s: header %s has %d values", req.Method, x.Path, k, len(v))
			continue
		}
		val := v[0]
		switch {
		case k == "Authorization":
			if val != "Bearer "+r.d.token || r.d.token == "" {
				g.t.Errorf("%s %s: the agent sent a bearer token the recording did not see issued", req.Method, x.Path)
			}
			val = "Bearer " + phDeviceToken
		case k == wire.HeaderEnrollToken:
			if val != g.e.enrollToken {
				g.t.Errorf("%s %s: unknown enrolment token", req.Method, x.Path)
			}
			val = phEnrollToken
		}
		if x.Header == nil {
			x.Header = map[string]string{}
		}
		x.Header[k] = val
	}
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		g.t.Errorf("%s %s: %v", req.Method, x.Path, err)
		return nil, err
	}
	x.Status = resp.StatusCode
	for _, h := range goldenRespHeaders {
		if v := resp.Header.Get(h); v != "" {
			if x.RespHeader == nil {
				x.RespHeader = map[string]string{}
			}
			x.RespHeader[h] = v
		}
	}
	if strings.HasPrefix(req.URL.Path, "/device/v1/targets/") {
		g.mu.Lock()
		if !g.cutDone && resp.StatusCode == http.StatusOK {
			g.cutDone = true
			resp.Body = &cutBody{ReadCloser: resp.Body, left: goldenCut}
		}
		g.mu.Unlock()
	} else {
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		x.JSONKeys = jsonKeys(b)
		if (req.URL.Path == "/device/v1/enroll" || req.URL.Path == "/device/v1/token") && resp.StatusCode == http.StatusOK {
			var er wire.EnrollResponse
			if err := json.Unmarshal(b, &er); err == nil && er.Token != "" {
				r.d.token = er.Token
			}
		}
	}
	g.mu.Lock()
	x.Step = g.step
	g.exchanges = append(g.exchanges, x)
	g.mu.Unlock()
	return resp, nil
}

// goldenCompact says whether b survives being shown indented in the golden file and compacted
// again at replay.
func goldenCompact(b []byte) bool {
	var ind, c bytes.Buffer
	if json.Indent(&ind, b, "", "  ") != nil || json.Compact(&c, ind.Bytes()) != nil {
		return false
	}
	return bytes.Equal(c.Bytes(), b)
}

// cutBody ends an answer's body with an error after left bytes.
type cutBody struct {
	io.ReadCloser
	left int
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, errGoldenCut
	}
	if len(p) > c.left {
		p = p[:c.left]
	}
	n, err := c.ReadCloser.Read(p)
	c.left -= n
	return n, err
}

// jsonKeys returns the sorted top-level keys of a JSON object, nil for anything else.
func jsonKeys(b []byte) []string {
	var m map[string]json.RawMessage
	if json.Unmarshal(b, &m) != nil || m == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}

// replayStep sends the recorded requests of step s, in order, and checks each answer.
func (g *goldenRun) replayStep(s goldenStep) {
	t := g.t
	d := g.devices[s.device]
	n := 0
	for ; g.next < len(g.exchanges) && g.exchanges[g.next].Step == s.name; g.next++ {
		g.replay(d, &g.exchanges[g.next])
		n++
	}
	if n == 0 {
		t.Fatalf("step %s: no recorded requests", s.name)
	}
}

func (g *goldenRun) replay(d *goldenDevice, x *goldenExchange) {
	t := g.t
	t.Helper()
	if x.Device != d.serial {
		t.Fatalf("%s: recorded for device %s, the scenario's step is %s's", x, x.Device, d.serial)
	}
	body, err := x.body()
	if err != nil {
		t.Fatalf("%s: %v", x, err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	path := g.metaPath(d, x.Path)
	req, err := http.NewRequest(x.Method, g.e.srv.URL+path, rd)
	if err != nil {
		t.Fatalf("%s: %v", x, err)
	}
	for k, v := range x.Header {
		switch {
		case strings.Contains(v, phDeviceToken):
			if d.token == "" {
				t.Fatalf("%s: the device has no token yet", x)
			}
			v = strings.ReplaceAll(v, phDeviceToken, d.token)
		case v == phEnrollToken:
			v = g.e.enrollToken
		}
		req.Header[k] = []string{v}
	}
	resp, err := g.replayHTTPClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", x, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s: read the answer: %v", x, err)
	}
	if resp.StatusCode != x.Status {
		t.Fatalf("%s: answered %d, an agent built before this change expects %d: %.300s", x, resp.StatusCode, x.Status, b)
	}
	g.noteMeta(d, path, b)
	if len(x.JSONKeys) > 0 {
		got := jsonKeys(b)
		for _, k := range x.JSONKeys {
			if !slices.Contains(got, k) {
				t.Errorf("%s: the answer lacks %q (has %v)", x, k, got)
			}
		}
	}
	for h, v := range x.RespHeader {
		got := resp.Header.Get(h)
		switch {
		case got == "":
			t.Errorf("%s: the answer lacks the header %s", x, h)
		case h == "Content-Range" && got != v:
			t.Errorf("%s: Content-Range %q, want %q", x, got, v)
		}
	}
	if (req.URL.Path == "/device/v1/enroll" || req.URL.Path == "/device/v1/token") && resp.StatusCode == http.StatusOK {
		// Read as today's agent does, by the field's name on the wire (not through package wire,
		// which the change under test may have edited).
		var er struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal(b, &er); err != nil || er.Token == "" {
			t.Fatalf("%s: no token in the answer: %.300s", x, b)
		}
		d.token = er.Token
	}
}

// metaPath is the path of a recorded metadata request, with the version the replayed server
// announced in place of the recorded one should they differ: an agent asks for the snapshot
// version its timestamp names, and the targets version its snapshot names. The scenario makes
// them equal; a server that numbers its metadata otherwise has not changed the protocol.
func (g *goldenRun) metaPath(d *goldenDevice, path string) string {
	for _, repo := range []string{"/device/v1/director/", "/repo/image/"} {
		file, ok := strings.CutPrefix(path, repo)
		if !ok {
			continue
		}
		for _, role := range []string{"snapshot", "targets"} {
			v, ok := strings.CutSuffix(file, "."+role+".json")
			if !ok {
				continue
			}
			if want, ok := g.metaVersions[d.serial+" "+repo+role]; ok && want != v {
				g.t.Logf("%s: the server announces version %s of %s%s.json, the recording asked for %s", path, want, repo, role, v)
				return repo + want + "." + role + ".json"
			}
		}
	}
	return path
}

// noteMeta remembers, from a replayed timestamp or snapshot answer, which snapshot or targets
// version the device will ask for next (metaPath).
func (g *goldenRun) noteMeta(d *goldenDevice, path string, body []byte) {
	for _, repo := range []string{"/device/v1/director/", "/repo/image/"} {
		file, ok := strings.CutPrefix(path, repo)
		if !ok {
			continue
		}
		var next string
		switch {
		case file == "timestamp.json":
			next = "snapshot"
		case strings.HasSuffix(file, ".snapshot.json"):
			next = "targets"
		default:
			return
		}
		var m struct {
			Signed struct {
				Meta map[string]struct {
					Version int64 `json:"version"`
				} `json:"meta"`
			} `json:"signed"`
		}
		if json.Unmarshal(body, &m) != nil {
			return
		}
		if meta, ok := m.Signed.Meta[next+".json"]; ok {
			g.metaVersions[d.serial+" "+repo+next] = strconv.FormatInt(meta.Version, 10)
		}
	}
}

// checkGoldenCoverage fails unless the exchanges hold every kind of request an agent makes.
func checkGoldenCoverage(t *testing.T, xs []goldenExchange) {
	t.Helper()
	type kind struct {
		name string
		ok   func(x *goldenExchange) bool
	}
	post := func(path string, status int, hdr string) func(x *goldenExchange) bool {
		return func(x *goldenExchange) bool {
			return x.Method == http.MethodPost && x.Path == path && x.Status == status && (hdr == "" || x.Header[hdr] != "")
		}
	}
	get := func(prefix string, status int, hdr string) func(x *goldenExchange) bool {
		return func(x *goldenExchange) bool {
			return x.Method == http.MethodGet && strings.HasPrefix(x.Path, prefix) && x.Status == status && (hdr == "" || x.Header[hdr] != "")
		}
	}
	kinds := []kind{
		{"enrolment with a token (200)", post("/device/v1/enroll", 200, "Upkeep-Enroll-Token")},
		{"enrolment without a token (202)", post("/device/v1/enroll", 202, "")},
		{"token while pending (202)", post("/device/v1/token", 202, "")},
		{"token once accepted (200)", post("/device/v1/token", 200, "")},
		{"check-in (200)", post("/device/v1/checkin", 200, "If-None-Match")},
		{"check-in unchanged (304)", post("/device/v1/checkin", 304, "If-None-Match")},
		{"report", func(x *goldenExchange) bool {
			return x.Method == http.MethodPost && x.Path == "/device/v1/report" && x.Status < 300
		}},
		{"director root probe (404)", get("/device/v1/director/", 404, "")},
		{"director timestamp", func(x *goldenExchange) bool { return x.Path == "/device/v1/director/timestamp.json" && x.Status == 200 }},
		{"director snapshot", func(x *goldenExchange) bool {
			return strings.HasSuffix(x.Path, ".snapshot.json") && get("/device/v1/director/", 200, "")(x)
		}},
		{"director targets", func(x *goldenExchange) bool {
			return strings.HasSuffix(x.Path, ".targets.json") && get("/device/v1/director/", 200, "")(x)
		}},
		{"image root probe (404)", get("/repo/image/", 404, "")},
		{"image timestamp", func(x *goldenExchange) bool { return x.Path == "/repo/image/timestamp.json" && x.Status == 200 }},
		{"image snapshot", func(x *goldenExchange) bool {
			return strings.HasSuffix(x.Path, ".snapshot.json") && get("/repo/image/", 200, "")(x)
		}},
		{"image targets", func(x *goldenExchange) bool {
			return strings.HasSuffix(x.Path, ".targets.json") && get("/repo/image/", 200, "")(x)
		}},
		{"image download (200)", get("/device/v1/targets/", 200, "Authorization")},
		{"resumed image download (206)", get("/device/v1/targets/", 206, "Range")},
	}
	for _, k := range kinds {
		if !slices.ContainsFunc(xs, func(x goldenExchange) bool { return k.ok(&x) }) {
			t.Errorf("the golden requests hold no %s", k.name)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

func loadGolden(t *testing.T) *goldenRecording {
	t.Helper()
	b, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (record it: go test -run TestGoldenDeviceRequests ./internal/cli -record-golden)", err)
	}
	var rec goldenRecording
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("%s: %v", goldenPath, err)
	}
	return &rec
}

// save writes the recording, and checks that every body reads back byte for byte.
func (g *goldenRun) save() {
	t := g.t
	rec := goldenRecording{
		Note:  "Device requests of an agent built before any protocol change; replayed by TestGoldenDeviceRequests (cmd/upkeep/golden_test.go). Never re-record with a newer agent.",
		Clock: goldenClock, Exchanges: g.exchanges,
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(rec); err != nil {
		t.Fatal(err)
	}
	var back goldenRecording
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	for i := range back.Exchanges {
		if _, err := back.Exchanges[i].body(); err != nil {
			t.Fatalf("%s: %v", &back.Exchanges[i], err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(goldenPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenPath, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
