package httpapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/auth"
	blobfs "upkeep.dev/upkeep/internal/blob/fs"
	"upkeep.dev/upkeep/internal/director"
	"upkeep.dev/upkeep/internal/fleet"
	"upkeep.dev/upkeep/internal/httpapi"
	"upkeep.dev/upkeep/internal/imagerepo"
	"upkeep.dev/upkeep/internal/installpolicy"
	"upkeep.dev/upkeep/internal/release"
	"upkeep.dev/upkeep/internal/store/sqlite"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/internal/webhook"
	"upkeep.dev/upkeep/wire"
)

const (
	testProduct  = "thermostat"
	testHardware = "tstat-v2"
	maxArtifact  = 64 << 10
)

// stack is the server wiring of `upkeep serve` (cmd/upkeep OpenServer) on a temporary folder,
// without the background jobs.
type stack struct {
	t          testing.TB
	root       string // temporary folder holding keys/ and data/
	db         *sqlite.DB
	blobs      *blobfs.Store
	fleet      *fleet.Service
	images     *imagerepo.Service
	director   *director.Service
	api        *httpapi.Server
	handler    http.Handler
	admin      string // operator token
	targetsKey *tuf.Key
	imageRoot  []byte
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newStack(t testing.TB) *stack { t.Helper(); return newStackOn(t, nil) }

// newStackOn is newStack over db (nil: a new SQLite database in the stack's folder), closed
// when the test ends.
func newStackOn(t testing.TB, db *sqlite.DB) *stack {
	t.Helper()
	ctx := context.Background()
	s := &stack{t: t, root: t.TempDir()}
	keysDir, dataDir := filepath.Join(s.root, "keys"), filepath.Join(s.root, "data")
	if _, err := tuf.InitKeySet(keysDir, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
		t.Fatal(err)
	}
	keys, err := tuf.LoadServerKeys(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	if s.targetsKey, err = tuf.LoadKey(filepath.Join(keysDir, tuf.FileTargetsKey)); err != nil {
		t.Fatal(err)
	}
	s.imageRoot = keys.ImageRoot
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if s.db = db; db == nil {
		if s.db, err = sqlite.Open(ctx, filepath.Join(dataDir, "upkeep.db")); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { s.db.Close() })
	if s.blobs, err = blobfs.New(filepath.Join(dataDir, "artifacts")); err != nil {
		t.Fatal(err)
	}
	hmacKey, err := s.db.Setting(ctx, "device_token_key", func() []byte { _, h := auth.NewSecret(""); return h })
	if err != nil {
		t.Fatal(err)
	}
	logger := quietLogger()
	s.fleet = &fleet.Service{Store: s.db, Tokens: auth.DeviceTokens{Key: hmacKey, TTL: time.Hour}, Now: time.Now, PollSeconds: 60, Logger: logger}
	s.images = &imagerepo.Service{Store: s.db, Blobs: s.blobs, Lifetimes: tuf.DefaultLifetimes(), Now: time.Now, Logger: logger,
		Keys: imagerepo.Keys{Snapshot: keys.Snapshot, Timestamp: keys.Timestamp}}
	s.director = &director.Service{Store: s.db, Images: s.images, Devices: s.db, Releases: s.db, Key: keys.Director, Lifetimes: tuf.DefaultLifetimes(), Now: time.Now, Logger: logger,
		OnAssign: s.fleet.SetDirectorVersion}
	if err := s.images.Bootstrap(ctx, keys.ImageRoot, keys.ImageTargets); err != nil {
		t.Fatal(err)
	}
	if err := s.director.Bootstrap(ctx, keys.DirectorRoot); err != nil {
		t.Fatal(err)
	}
	if err := s.db.CreateUser(ctx, &auth.User{Name: "admin", Role: auth.RoleAdmin, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	secret, hash := auth.NewSecret(auth.AdminPrefix)
	if err := s.db.CreateOperatorToken(ctx, &auth.OperatorToken{ID: auth.TokenID(hash), Name: "admin", Role: auth.RoleAdmin, Hash: hash, CreatedAt: time.Now(), User: "admin"}); err != nil {
		t.Fatal(err)
	}
	s.admin = secret
	s.api = &httpapi.Server{Fleet: s.fleet, Images: s.images, Director: s.director, Devices: s.db, Releases: s.db, Blobs: s.blobs, Admin: s.db, Audit: s.db, Logger: logger, MaxArtifact: maxArtifact, Tenants: listTenants{},
		Webhooks: &webhook.Service{Store: s.db, Logger: logger}}
	s.handler = s.api.Handler()
	return s
}

// serve starts the stack's handler on a real loopback listener.
func (s *stack) serve() *httptest.Server {
	srv := httptest.NewServer(s.handler)
	s.t.Cleanup(srv.Close)
	return srv
}

// reply is an HTTP answer, with the statuses of any redirects followed on the way.
type reply struct {
	status    int
	header    http.Header
	body      []byte
	redirects []int
}

// call sends a request to srv. hdr entries with an empty value are left out.
func call(t testing.TB, srv *httptest.Server, method, path string, body []byte, hdr map[string]string) reply {
	t.Helper()
	var r reply
	c := srv.Client()
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		r.redirects = append(r.redirects, req.Response.StatusCode)
		if len(via) > 5 {
			return http.ErrUseLastResponse
		}
		return nil
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		if v != "" {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if r.body, err = io.ReadAll(resp.Body); err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	r.status, r.header = resp.StatusCode, resp.Header
	return r
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// wantError checks an error answer: its status, a JSON content type, and a body that is exactly
// {"code":..., "message":...} with the given code and a message containing msg.
func wantError(t testing.TB, r reply, status int, code apperr.Code, msg string) wire.Error {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	return wantErrorBody(t, r.header, r.body, code, msg)
}

func wantErrorBody(t testing.TB, h http.Header, body []byte, code apperr.Code, msg string) wire.Error {
	t.Helper()
	if ct, _, _ := mime.ParseMediaType(h.Get("Content-Type")); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json; body %s", h.Get("Content-Type"), body)
	}
	var e wire.Error
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error body %q is not {code, message}: %v", body, err)
	}
	if e.Code != string(code) {
		t.Fatalf("code %q, want %q (message %q)", e.Code, code, e.Message)
	}
	if strings.TrimSpace(e.Message) == "" || !strings.Contains(e.Message, msg) {
		t.Fatalf("message %q, want one containing %q", e.Message, msg)
	}
	return e
}

func decodeJSON[T any](t testing.TB, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// device is a simulated device key.
type device struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	id   string
}

func newDevice(t testing.TB) *device {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &device{priv: priv, pub: pub, id: auth.DeviceID(pub)}
}

func (d *device) payload(serial string, at time.Time) wire.EnrollPayload {
	return wire.EnrollPayload{
		PublicKey: hex.EncodeToString(d.pub),
		Identity:  wire.Identity{Serial: serial, Product: testProduct, HardwareID: testHardware},
		Time:      at,
		Installed: wire.Installed{Target: testProduct + "/0.9.0/fw.img", Version: "0.9.0", SecurityVersion: 1},
	}
}

// sign wraps payload bytes as the agent does: the signature covers the exact bytes.
func (d *device) sign(payload []byte) wire.SignedRequest {
	return wire.SignedRequest{Payload: payload, Signature: hex.EncodeToString(ed25519.Sign(d.priv, payload))}
}

func (d *device) enrollBody(t testing.TB) []byte {
	t.Helper()
	return mustJSON(t, d.sign(mustJSON(t, d.payload("SN-"+d.id[:8], time.Now()))))
}

func (d *device) tokenBody(t testing.TB) []byte {
	t.Helper()
	return mustJSON(t, d.sign(mustJSON(t, wire.TokenPayload{DeviceID: d.id, Time: time.Now()})))
}

// enrollToken creates an enrolment token through the management API.
func (s *stack) enrollToken(srv *httptest.Server) string {
	s.t.Helper()
	r := call(s.t, srv, http.MethodPost, "/api/v1/enroll-tokens", mustJSON(s.t, wire.EnrollTokenRequest{Name: "factory"}), bearer(s.admin))
	if r.status != http.StatusCreated {
		s.t.Fatalf("create enrolment token: %d %s", r.status, r.body)
	}
	tok := decodeJSON[wire.EnrollTokenResponse](s.t, r.body)
	if !strings.HasPrefix(tok.Token, auth.EnrollPrefix) {
		s.t.Fatalf("enrolment token %q", tok.Token)
	}
	return tok.Token
}

// enrolled enrols a new device with an enrolment token and returns it with its device token.
func (s *stack) enrolled(srv *httptest.Server) (*device, string) {
	s.t.Helper()
	d := newDevice(s.t)
	r := call(s.t, srv, http.MethodPost, "/device/v1/enroll", d.enrollBody(s.t), map[string]string{wire.HeaderEnrollToken: s.enrollToken(srv)})
	if r.status != http.StatusOK {
		s.t.Fatalf("enrol: %d %s", r.status, r.body)
	}
	resp := decodeJSON[wire.EnrollResponse](s.t, r.body)
	if resp.Status != fleet.StatusAccepted || resp.Token == "" || resp.DeviceID != d.id {
		s.t.Fatalf("enrol answer %+v", resp)
	}
	return d, resp.Token
}

func (s *stack) deviceCount() int {
	s.t.Helper()
	ds, err := s.db.FindDevices(context.Background(), fleet.DeviceFilter{})
	if err != nil {
		s.t.Fatal(err)
	}
	return len(ds)
}

// files lists the regular files under dir, relative to it.
func files(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (s *stack) blobFiles() []string {
	return files(s.t, filepath.Join(s.root, "data", "artifacts"))
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// uploadAndSign uploads content and returns the release's target name and image targets metadata
// adding it, signed by keys (none: unsigned).
func (s *stack) uploadAndSign(srv *httptest.Server, version string, content []byte, keys ...*tuf.Key) (string, []byte) {
	s.t.Helper()
	r := call(s.t, srv, http.MethodPut, "/api/v1/blobs/"+sha256hex(content), content, bearer(s.admin))
	if r.status != http.StatusCreated {
		s.t.Fatalf("upload: %d %s", r.status, r.body)
	}
	info := decodeJSON[wire.BlobInfo](s.t, r.body)
	if info.SHA256 != sha256hex(content) || info.Length != int64(len(content)) || len(info.SHA512) != 128 {
		s.t.Fatalf("upload answer %+v", info)
	}
	r = call(s.t, srv, http.MethodGet, "/api/v1/image/targets", nil, bearer(s.admin))
	if r.status != http.StatusOK {
		s.t.Fatalf("current targets: %d %s", r.status, r.body)
	}
	root, err := tuf.ParseRoot(s.imageRoot)
	if err != nil {
		s.t.Fatal(err)
	}
	cur, err := uptane.VerifyImageTargets(root, r.body, time.Now())
	if err != nil {
		s.t.Fatal(err)
	}
	name := tuf.TargetName(testProduct, version, "fw.img")
	tf, err := uptane.NewTargetFile(info.Length, info.SHA256, info.SHA512, uptane.TargetCustom{
		Product: testProduct, HardwareIDs: []string{testHardware}, Version: version, SecurityVersion: 2, Class: uptane.ClassSecurity,
	})
	if err != nil {
		s.t.Fatal(err)
	}
	cur.Signed.Targets[name] = tf
	cur.Signed.Version++
	cur.Signed.Expires = time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
	signed, err := tuf.SignTargets(cur, keys...)
	if err != nil {
		s.t.Fatal(err)
	}
	return name, signed
}

func (s *stack) publish(srv *httptest.Server, name string, targets []byte) reply {
	s.t.Helper()
	return call(s.t, srv, http.MethodPost, "/api/v1/releases", mustJSON(s.t, wire.PublishRequest{Target: name, Targets: targets}), bearer(s.admin))
}

func TestHealthz(t *testing.T) {
	srv := newStack(t).serve()
	if r := call(t, srv, http.MethodGet, "/healthz", nil, nil); r.status != http.StatusOK || string(r.body) != "ok\n" {
		t.Fatalf("healthz: %d %q", r.status, r.body)
	}
}

func TestEnrollMalformedJSON(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	for name, body := range map[string]string{
		"truncated":         `{"payload":`,
		"not json":          `payload=1&signature=2`,
		"empty":             ``,
		"array":             `[]`,
		"string":            `"enrol me"`,
		"wrong field type":  `{"payload":{},"signature":42}`,
		"invalid utf8 junk": "{\"payload\":\xff}",
	} {
		t.Run(name, func(t *testing.T) {
			r := call(t, srv, http.MethodPost, "/device/v1/enroll", []byte(body), nil)
			wantError(t, r, http.StatusBadRequest, apperr.Invalid, "malformed JSON body")
		})
	}
	t.Run("payload not an enrolment", func(t *testing.T) {
		d := newDevice(t)
		r := call(t, srv, http.MethodPost, "/device/v1/enroll", mustJSON(t, d.sign([]byte(`[1,2,3]`))), nil)
		wantError(t, r, http.StatusBadRequest, apperr.Invalid, "malformed signed payload")
	})
	t.Run("public key not hex", func(t *testing.T) {
		d := newDevice(t)
		p := d.payload("SN-1", time.Now())
		p.PublicKey = "zz" + p.PublicKey[2:]
		r := call(t, srv, http.MethodPost, "/device/v1/enroll", mustJSON(t, d.sign(mustJSON(t, p))), nil)
		wantError(t, r, http.StatusBadRequest, apperr.Invalid, "public_key")
	})
	if n := s.deviceCount(); n != 0 {
		t.Fatalf("%d devices after malformed enrolments", n)
	}
}

func TestEnrollUnknownFields(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	d := newDevice(t)
	t.Run("envelope", func(t *testing.T) {
		req := d.sign(mustJSON(t, d.payload("SN-1", time.Now())))
		body := mustJSON(t, map[string]any{"payload": req.Payload, "signature": req.Signature, "admin": true})
		r := call(t, srv, http.MethodPost, "/device/v1/enroll", body, nil)
		wantError(t, r, http.StatusBadRequest, apperr.Invalid, `unknown field "admin"`)
	})
	t.Run("signed payload", func(t *testing.T) {
		var p map[string]any
		if err := json.Unmarshal(mustJSON(t, d.payload("SN-1", time.Now())), &p); err != nil {
			t.Fatal(err)
		}
		p["status"] = "accepted"
		r := call(t, srv, http.MethodPost, "/device/v1/enroll", mustJSON(t, d.sign(mustJSON(t, p))), nil)
		wantError(t, r, http.StatusBadRequest, apperr.Invalid, `unknown field "status"`)
	})
	t.Run("identity", func(t *testing.T) {
		var p map[string]any
		if err := json.Unmarshal(mustJSON(t, d.payload("SN-1", time.Now())), &p); err != nil {
			t.Fatal(err)
		}
		p["identity"].(map[string]any)["role"] = "gateway"
		r := call(t, srv, http.MethodPost, "/device/v1/enroll", mustJSON(t, d.sign(mustJSON(t, p))), nil)
		wantError(t, r, http.StatusBadRequest, apperr.Invalid, `unknown field "role"`)
	})
	if n := s.deviceCount(); n != 0 {
		t.Fatalf("%d devices after refused enrolments", n)
	}
}

func TestEnrollTrailingData(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	for name, trailer := range map[string]string{
		"second object": ` {}`,
		"second array":  `[]`,
		"garbage":       `x`,
		"number":        ` 1`,
		"closing brace": `}`,
		"closing brack": `]`,
	} {
		t.Run(name, func(t *testing.T) {
			d := newDevice(t)
			body := append(d.enrollBody(t), trailer...)
			r := call(t, srv, http.MethodPost, "/device/v1/enroll", body, nil)
			if r.status != http.StatusBadRequest {
				t.Fatalf("status %d, want 400; body %s", r.status, r.body)
			}
			wantErrorBody(t, r.header, r.body, apperr.Invalid, "malformed JSON body")
			if _, err := s.db.FindDevice(context.Background(), d.id); !apperr.Is(err, apperr.NotFound) {
				t.Fatalf("device created from a body with trailing data (FindDevice: %v)", err)
			}
		})
	}
	t.Run("trailing whitespace is fine", func(t *testing.T) {
		d := newDevice(t)
		r := call(t, srv, http.MethodPost, "/device/v1/enroll", append(d.enrollBody(t), " \n\t"...), nil)
		if r.status != http.StatusAccepted {
			t.Fatalf("status %d, want 202; body %s", r.status, r.body)
		}
	})
}

func TestOversizedBodies(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	t.Run("enroll", func(t *testing.T) {
		d := newDevice(t)
		p := d.payload(strings.Repeat("S", 10), time.Now())
		p.Identity.Attributes = map[string]string{"pad": strings.Repeat("a", wire.MaxEnrollBody)}
		body := mustJSON(t, d.sign(mustJSON(t, p)))
		if len(body) <= wire.MaxEnrollBody {
			t.Fatalf("body of %d bytes is not over the limit", len(body))
		}
		r := call(t, srv, http.MethodPost, "/device/v1/enroll", body, nil)
		wantError(t, r, http.StatusRequestEntityTooLarge, apperr.TooLarge, "larger than")
		if n := s.deviceCount(); n != 0 {
			t.Fatalf("%d devices after an oversized enrolment", n)
		}
	})
	t.Run("enroll garbage", func(t *testing.T) {
		body := append([]byte(`{"payload":"`), bytes.Repeat([]byte("A"), wire.MaxEnrollBody+1)...)
		r := call(t, srv, http.MethodPost, "/device/v1/enroll", body, nil)
		wantError(t, r, http.StatusRequestEntityTooLarge, apperr.TooLarge, "larger than")
	})
	t.Run("checkin", func(t *testing.T) {
		_, tok := s.enrolled(srv)
		ok := call(t, srv, http.MethodPost, "/device/v1/checkin", mustJSON(t, wire.Checkin{State: "idle"}), bearer(tok))
		if ok.status != http.StatusOK {
			t.Fatalf("checkin: %d %s", ok.status, ok.body)
		}
		body := mustJSON(t, wire.Checkin{State: strings.Repeat("x", wire.MaxCheckinBody)})
		r := call(t, srv, http.MethodPost, "/device/v1/checkin", body, bearer(tok))
		wantError(t, r, http.StatusRequestEntityTooLarge, apperr.TooLarge, "larger than")
	})
	t.Run("token", func(t *testing.T) {
		body := append([]byte(`{"payload":{"device_id":"`), bytes.Repeat([]byte("a"), wire.MaxEnrollBody)...)
		r := call(t, srv, http.MethodPost, "/device/v1/token", append(body, `"}}`...), nil)
		wantError(t, r, http.StatusRequestEntityTooLarge, apperr.TooLarge, "larger than")
	})
}

func TestEnrollBadSignature(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	tok := s.enrollToken(srv)
	d := newDevice(t)
	payload := mustJSON(t, d.payload("SN-1", time.Now()))
	other := newDevice(t)
	good := d.sign(payload)
	sigBytes, _ := hex.DecodeString(good.Signature)
	sigBytes[0] ^= 1
	altered := bytes.Replace(payload, []byte("SN-1"), []byte("SN-2"), 1)
	for name, req := range map[string]wire.SignedRequest{
		"signed by another key":   other.sign(payload),
		"flipped bit":             {Payload: payload, Signature: hex.EncodeToString(sigBytes)},
		"payload changed":         {Payload: altered, Signature: good.Signature},
		"signature not hex":       {Payload: payload, Signature: "not-hex"},
		"empty signature":         {Payload: payload},
		"truncated signature":     {Payload: payload, Signature: good.Signature[:64]},
		"stale time":              d.sign(mustJSON(t, d.payload("SN-1", time.Now().Add(-time.Hour)))),
		"time far in the future":  d.sign(mustJSON(t, d.payload("SN-1", time.Now().Add(time.Hour)))),
		"zero time":               d.sign(mustJSON(t, d.payload("SN-1", time.Time{}))),
		"another device's claims": d.sign(mustJSON(t, other.payload("SN-1", time.Now()))),
	} {
		t.Run(name, func(t *testing.T) {
			for _, hdr := range []map[string]string{nil, {wire.HeaderEnrollToken: tok}} {
				r := call(t, srv, http.MethodPost, "/device/v1/enroll", mustJSON(t, req), hdr)
				wantError(t, r, http.StatusUnauthorized, apperr.Unauthorized, "enrolment refused")
			}
		})
	}
	if n := s.deviceCount(); n != 0 {
		t.Fatalf("%d devices after bad signatures", n)
	}
}

func TestEnrollWrongToken(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	real := s.enrollToken(srv)
	d := newDevice(t)
	for name, tok := range map[string]string{
		"unknown":               auth.EnrollPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"operator token":        s.admin,
		"real token with extra": real + "x",
		"real token truncated":  real[:len(real)-1],
	} {
		t.Run(name, func(t *testing.T) {
			r := call(t, srv, http.MethodPost, "/device/v1/enroll", d.enrollBody(t), map[string]string{wire.HeaderEnrollToken: tok})
			wantError(t, r, http.StatusUnauthorized, apperr.Unauthorized, "enrolment token")
			got := call(t, srv, http.MethodGet, "/api/v1/devices/"+d.id, nil, bearer(s.admin))
			wantError(t, got, http.StatusNotFound, apperr.NotFound, d.id)
		})
	}
	if n := s.deviceCount(); n != 0 {
		t.Fatalf("%d devices after wrong enrolment tokens", n)
	}
	list := call(t, srv, http.MethodGet, "/api/v1/devices", nil, bearer(s.admin))
	if list.status != http.StatusOK || len(decodeJSON[[]wire.Device](t, list.body)) != 0 {
		t.Fatalf("device list after wrong tokens: %d %s", list.status, list.body)
	}
	t.Run("used up token", func(t *testing.T) {
		r := call(t, srv, http.MethodPost, "/api/v1/enroll-tokens", mustJSON(t, wire.EnrollTokenRequest{Name: "once", Uses: 1}), bearer(s.admin))
		if r.status != http.StatusCreated {
			t.Fatalf("create token: %d %s", r.status, r.body)
		}
		once := decodeJSON[wire.EnrollTokenResponse](t, r.body).Token
		first := call(t, srv, http.MethodPost, "/device/v1/enroll", newDevice(t).enrollBody(t), map[string]string{wire.HeaderEnrollToken: once})
		if first.status != http.StatusOK {
			t.Fatalf("first use: %d %s", first.status, first.body)
		}
		second := newDevice(t)
		again := call(t, srv, http.MethodPost, "/device/v1/enroll", second.enrollBody(t), map[string]string{wire.HeaderEnrollToken: once})
		wantError(t, again, http.StatusUnauthorized, apperr.Unauthorized, "used up or expired")
		if _, err := s.db.FindDevice(context.Background(), second.id); !apperr.Is(err, apperr.NotFound) {
			t.Fatalf("device created with a used-up token (FindDevice: %v)", err)
		}
	})
}

func TestEnrollPendingUntilAccepted(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	d := newDevice(t)

	r := call(t, srv, http.MethodPost, "/device/v1/enroll", d.enrollBody(t), nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("enrol without token: %d %s", r.status, r.body)
	}
	resp := decodeJSON[wire.EnrollResponse](t, r.body)
	if resp.Status != fleet.StatusPending || resp.Token != "" || resp.DeviceID != d.id || !resp.ExpiresAt.IsZero() {
		t.Fatalf("enrol answer %+v, want pending without a token", resp)
	}
	// Enrolling again is idempotent and still pending.
	if r := call(t, srv, http.MethodPost, "/device/v1/enroll", d.enrollBody(t), nil); r.status != http.StatusAccepted || decodeJSON[wire.EnrollResponse](t, r.body).Token != "" {
		t.Fatalf("second enrolment: %d %s", r.status, r.body)
	}
	for range 2 {
		r = call(t, srv, http.MethodPost, "/device/v1/token", d.tokenBody(t), nil)
		if r.status != http.StatusAccepted {
			t.Fatalf("token while pending: %d %s", r.status, r.body)
		}
		if resp := decodeJSON[wire.EnrollResponse](t, r.body); resp.Status != fleet.StatusPending || resp.Token != "" {
			t.Fatalf("token answer while pending %+v", resp)
		}
	}
	// Another key cannot ask for this device's token.
	other := newDevice(t)
	forged := mustJSON(t, other.sign(mustJSON(t, wire.TokenPayload{DeviceID: d.id, Time: time.Now()})))
	wantError(t, call(t, srv, http.MethodPost, "/device/v1/token", forged, nil), http.StatusUnauthorized, apperr.Unauthorized, "token refused")
	wantError(t, call(t, srv, http.MethodPost, "/device/v1/token", other.tokenBody(t), nil), http.StatusUnauthorized, apperr.Unauthorized, "enrol first")

	if err := s.fleet.Accept(context.Background(), d.id, false); err != nil {
		t.Fatal(err)
	}
	r = call(t, srv, http.MethodPost, "/device/v1/token", d.tokenBody(t), nil)
	if r.status != http.StatusOK {
		t.Fatalf("token after accept: %d %s", r.status, r.body)
	}
	resp = decodeJSON[wire.EnrollResponse](t, r.body)
	if resp.Status != fleet.StatusAccepted || !strings.HasPrefix(resp.Token, "upk_dev.") || resp.ExpiresAt.Before(time.Now()) {
		t.Fatalf("token answer after accept %+v", resp)
	}
	c := call(t, srv, http.MethodPost, "/device/v1/checkin", mustJSON(t, wire.Checkin{}), bearer(resp.Token))
	if c.status != http.StatusOK {
		t.Fatalf("checkin with the new token: %d %s", c.status, c.body)
	}
}

func TestUnknownDeviceToken(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	d, good := s.enrolled(srv)
	otherKey := auth.DeviceTokens{Key: []byte("not the server key"), TTL: time.Hour}
	forged, _ := otherKey.Issue(d.id, time.Now())
	expired, _ := s.fleet.Tokens.Issue(d.id, time.Now().Add(-2*time.Hour))
	swapped := strings.Replace(good, d.id, newDevice(t).id, 1)
	body := mustJSON(t, wire.Checkin{})
	for name, hdr := range map[string]map[string]string{
		"no header":          nil,
		"empty bearer":       {"Authorization": "Bearer "},
		"basic scheme":       {"Authorization": "Basic " + good},
		"garbage":            bearer("garbage"),
		"shaped but unknown": bearer("upk_dev.0123456789abcdef0123456789abcdef.9999999999.AAAA"),
		"other server's key": bearer(forged),
		"expired":            bearer(expired),
		"other device id":    bearer(swapped),
		"operator token":     bearer(s.admin),
	} {
		t.Run(name, func(t *testing.T) {
			for _, ep := range []struct{ method, path string }{
				{http.MethodPost, "/device/v1/checkin"},
				{http.MethodPost, "/device/v1/report"},
				{http.MethodGet, "/device/v1/director/timestamp.json"},
				{http.MethodGet, "/device/v1/targets/thermostat/1.0.0/fw.img"},
			} {
				var b []byte
				if ep.method == http.MethodPost {
					b = body
				}
				r := call(t, srv, ep.method, ep.path, b, hdr)
				wantError(t, r, http.StatusUnauthorized, apperr.Unauthorized, "invalid or expired device token")
			}
		})
	}
	if r := call(t, srv, http.MethodPost, "/device/v1/checkin", body, bearer(good)); r.status != http.StatusOK {
		t.Fatalf("checkin with the good token: %d %s", r.status, r.body)
	}
}

func TestAdminAuth(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	pending := newDevice(t)
	if r := call(t, srv, http.MethodPost, "/device/v1/enroll", pending.enrollBody(t), nil); r.status != http.StatusAccepted {
		t.Fatalf("enrol: %d %s", r.status, r.body)
	}
	_, devTok := s.enrolled(srv)
	enrolTok := s.enrollToken(srv)
	blob := []byte("firmware")
	endpoints := []struct {
		method, path string
		body         []byte
	}{
		{http.MethodGet, "/api/v1/devices", nil},
		{http.MethodGet, "/api/v1/devices/" + pending.id, nil},
		{http.MethodPost, "/api/v1/devices/" + pending.id + "/accept", nil},
		{http.MethodGet, "/api/v1/devices/" + pending.id + "/events", nil},
		{http.MethodPut, "/api/v1/blobs/" + sha256hex(blob), blob},
		{http.MethodGet, "/api/v1/image/targets", nil},
		{http.MethodPut, "/api/v1/image/root", s.imageRoot},
		{http.MethodPost, "/api/v1/releases", []byte(`{"target":"thermostat/1.0.0/fw.img","targets":{}}`)},
		{http.MethodGet, "/api/v1/releases", nil},
		{http.MethodPost, "/api/v1/deployments", []byte(`{"release":"thermostat@1.0.0","all":true}`)},
		{http.MethodPost, "/api/v1/enroll-tokens", []byte(`{"name":"x"}`)},
		{http.MethodGet, "/api/v1/users", nil},
		{http.MethodPost, "/api/v1/users", []byte(`{"name":"eve","role":"admin","password":"a long password"}`)},
		{http.MethodPut, "/api/v1/users/admin/role", []byte(`{"role":"viewer"}`)},
		{http.MethodGet, "/api/v1/session", nil},
		{http.MethodPost, "/api/v1/logout", nil},
	}
	for name, c := range map[string]struct {
		hdr map[string]string
		msg string
	}{
		"no token":         {nil, "operator token required"},
		"empty bearer":     {map[string]string{"Authorization": "Bearer "}, "operator token required"},
		"not bearer":       {map[string]string{"Authorization": s.admin}, "operator token required"},
		"wrong token":      {bearer(auth.AdminPrefix + "wrong"), "unknown operator token"},
		"admin token typo": {bearer(s.admin + "x"), "unknown operator token"},
		"device token":     {bearer(devTok), "unknown operator token"},
		"enrolment token":  {bearer(enrolTok), "unknown operator token"},
		"token in query":   {nil, "operator token required"},
	} {
		t.Run(name, func(t *testing.T) {
			for _, ep := range endpoints {
				path := ep.path
				if name == "token in query" {
					path += "?token=" + s.admin
				}
				r := call(t, srv, ep.method, path, ep.body, c.hdr)
				if r.status != http.StatusUnauthorized {
					t.Fatalf("%s %s: status %d, want 401; body %s", ep.method, ep.path, r.status, r.body)
				}
				wantErrorBody(t, r.header, r.body, apperr.Unauthorized, c.msg)
			}
		})
	}
	// Nothing changed hands.
	got, err := s.db.FindDevice(context.Background(), pending.id)
	if err != nil || got.Status != fleet.StatusPending {
		t.Fatalf("pending device after refused accepts: %+v, %v", got, err)
	}
	if st, err := s.blobs.Stat(context.Background(), sha256hex(blob)); !apperr.Is(err, apperr.NotFound) {
		t.Fatalf("blob stored by an unauthenticated upload: %+v, %v", st, err)
	}
	// The operator token works.
	if r := call(t, srv, http.MethodGet, "/api/v1/devices", nil, bearer(s.admin)); r.status != http.StatusOK || len(decodeJSON[[]wire.Device](t, r.body)) != 2 {
		t.Fatalf("list with the operator token: %d %s", r.status, r.body)
	}
}

func TestBlobHashMismatch(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	content := []byte("firmware image 1.0.0")
	claimed := sha256hex([]byte("another image"))
	r := call(t, srv, http.MethodPut, "/api/v1/blobs/"+claimed, content, bearer(s.admin))
	wantError(t, r, http.StatusUnprocessableEntity, apperr.Verification, "expected "+claimed)
	for _, h := range []string{claimed, sha256hex(content)} {
		if b, err := s.blobs.Stat(context.Background(), h); !apperr.Is(err, apperr.NotFound) {
			t.Fatalf("blob %s stored after a mismatch: %+v, %v", h, b, err)
		}
	}
	if f := s.blobFiles(); len(f) != 0 {
		t.Fatalf("files left in the blob store: %v", f)
	}

	t.Run("upper-case name of the right hash", func(t *testing.T) {
		r := call(t, srv, http.MethodPut, "/api/v1/blobs/"+strings.ToUpper(sha256hex(content)), content, bearer(s.admin))
		if r.status != http.StatusCreated {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
	})
	t.Run("name not a sha256", func(t *testing.T) {
		for _, name := range []string{"abc", strings.Repeat("g", 64), sha256hex(content) + "00", "x"} {
			r := call(t, srv, http.MethodPut, "/api/v1/blobs/"+name, content, bearer(s.admin))
			wantError(t, r, http.StatusBadRequest, apperr.Invalid, "64-hex-character sha256")
		}
	})
	t.Run("too large", func(t *testing.T) {
		big := bytes.Repeat([]byte("z"), maxArtifact+1)
		r := call(t, srv, http.MethodPut, "/api/v1/blobs/"+sha256hex(big), big, bearer(s.admin))
		wantError(t, r, http.StatusRequestEntityTooLarge, apperr.TooLarge, "limit")
		if b, err := s.blobs.Stat(context.Background(), sha256hex(big)); !apperr.Is(err, apperr.NotFound) {
			t.Fatalf("oversized blob stored: %+v, %v", b, err)
		}
	})
}

func TestPathTricks(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	_, tok := s.enrolled(srv)
	// A file the tricks would reach if a name were joined onto a folder unchecked.
	secret := []byte("root:x:0:0:secret\n")
	for _, p := range []string{filepath.Join(s.root, "passwd"), filepath.Join(s.root, "data", "passwd"), filepath.Join(s.root, "data", "artifacts", "passwd")} {
		if err := os.WriteFile(p, secret, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	before := files(t, s.root)
	content := []byte("payload that must not land outside the blob store")
	for _, c := range []struct {
		method, path string
		hdr          map[string]string
		body         []byte
	}{
		{http.MethodGet, "/device/v1/targets/..%2f..%2fetc/passwd", bearer(tok), nil},
		{http.MethodGet, "/device/v1/targets/..%2f..%2f..%2fpasswd", bearer(tok), nil},
		{http.MethodGet, "/device/v1/targets/%2e%2e/%2e%2e/passwd", bearer(tok), nil},
		{http.MethodGet, "/device/v1/targets/a/../../x", bearer(tok), nil},
		{http.MethodGet, "/device/v1/targets/..%5c..%5cpasswd", bearer(tok), nil},
		{http.MethodGet, "/device/v1/targets/%2fetc%2fpasswd", bearer(tok), nil},
		{http.MethodGet, "/device/v1/targets/thermostat%00/fw.img", bearer(tok), nil},
		{http.MethodGet, "/device/v1/director/..%2f..%2fpasswd", bearer(tok), nil},
		{http.MethodGet, "/repo/image/..%2f..%2fpasswd", nil, nil},
		{http.MethodGet, "/repo/image/1.root.json%2f..%2f..%2fpasswd", nil, nil},
		{http.MethodPut, "/api/v1/blobs/../../x", bearer(s.admin), content},
		{http.MethodPut, "/api/v1/blobs/..%2f..%2fx", bearer(s.admin), content},
		{http.MethodPut, "/api/v1/blobs/%2e%2e%2f%2e%2e%2fx", bearer(s.admin), content},
		{http.MethodPut, "/api/v1/blobs/..%2f..%2f..%2f" + sha256hex(content)[:58], bearer(s.admin), content},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			r := call(t, srv, c.method, c.path, c.body, c.hdr)
			t.Logf("status %d after redirects %v", r.status, r.redirects)
			for _, st := range r.redirects {
				if st < 300 || st > 399 {
					t.Fatalf("redirect chain status %d", st)
				}
			}
			if r.status < 400 || r.status > 499 {
				t.Fatalf("status %d (redirects %v), want 4xx; body %q", r.status, r.redirects, r.body)
			}
			if bytes.Contains(r.body, secret) {
				t.Fatal("the answer holds a file from outside the blob store")
			}
			// The mux answers 404 in plain text for paths it cleaned; every handler answer is JSON.
			if ct, _, _ := mime.ParseMediaType(r.header.Get("Content-Type")); ct != "text/plain" || r.status != http.StatusNotFound {
				var e wire.Error
				if err := json.Unmarshal(r.body, &e); err != nil || e.Code == "" || e.Message == "" {
					t.Fatalf("status %d body %q is not a JSON error", r.status, r.body)
				}
			}
		})
	}
	after := files(t, s.root)
	if strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Fatalf("files changed:\nbefore %v\nafter  %v", before, after)
	}
	for _, p := range []string{filepath.Join(s.root, "x"), filepath.Join(s.root, "data", "x"), filepath.Join(filepath.Dir(s.root), "x")} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s was written", p)
		}
	}
}

func TestArtifactServed(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	d, tok := s.enrolled(srv)
	_, otherTok := s.enrolled(srv)
	content := []byte("firmware 1.0.0 for the thermostat")
	name, targets := s.uploadAndSign(srv, "1.0.0", content, s.targetsKey)
	if r := s.publish(srv, name, targets); r.status != http.StatusCreated {
		t.Fatalf("publish: %d %s", r.status, r.body)
	}
	// Published but assigned to no device: no device's director view names it yet.
	wantError(t, call(t, srv, http.MethodGet, "/device/v1/targets/"+name, nil, bearer(tok)), http.StatusForbidden, apperr.Forbidden, "not assigned to this device")
	if r := call(t, srv, http.MethodPost, "/api/v1/deployments", mustJSON(t, wire.DeployRequest{Release: "thermostat@1.0.0", DeviceIDs: []string{d.id}}), bearer(s.admin)); r.status != http.StatusOK {
		t.Fatalf("deploy: %d %s", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodGet, "/device/v1/targets/"+name, nil, bearer(otherTok)), http.StatusForbidden, apperr.Forbidden, "not assigned to this device")
	r := call(t, srv, http.MethodGet, "/device/v1/targets/"+name, nil, bearer(tok))
	if r.status != http.StatusOK || !bytes.Equal(r.body, content) {
		t.Fatalf("artifact: %d %q", r.status, r.body)
	}
	wantError(t, call(t, srv, http.MethodGet, "/device/v1/targets/thermostat/9.9.9/fw.img", nil, bearer(tok)), http.StatusForbidden, apperr.Forbidden, "not assigned")
	wantError(t, call(t, srv, http.MethodGet, "/device/v1/targets/thermostat/1.0.0/fw%20.img", nil, bearer(tok)), http.StatusBadRequest, apperr.Invalid, "invalid target name")
}

func TestPublishUnsignedTargets(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	content := []byte("firmware 2.0.0")
	name, unsigned := s.uploadAndSign(srv, "2.0.0", content)
	_, byOther := s.uploadAndSign(srv, "2.0.0", content, mustKey(t))
	_, signed := s.uploadAndSign(srv, "2.0.0", content, s.targetsKey)
	tampered := bytes.Replace(signed, []byte(`"security_version":2`), []byte(`"security_version":7`), 1)
	if bytes.Equal(tampered, signed) {
		t.Fatal("tampering did not change the targets")
	}
	rootKeySigned := func() []byte {
		// Signed by the image root's own key, which is not a targets key.
		dir := filepath.Join(s.root, "keys")
		k, err := tuf.LoadKey(filepath.Join(dir, tuf.RootKeyFile(1)))
		if err != nil {
			t.Fatal(err)
		}
		_, b := s.uploadAndSign(srv, "2.0.0", content, k)
		return b
	}()
	for name2, targets := range map[string][]byte{
		"no signatures":         unsigned,
		"signed by another key": byOther,
		"signed by a root key":  rootKeySigned,
		"changed after signing": tampered,
	} {
		t.Run(name2, func(t *testing.T) {
			r := s.publish(srv, name, targets)
			wantError(t, r, http.StatusUnprocessableEntity, apperr.Verification, "targets metadata refused")
		})
	}
	t.Run("targets not json", func(t *testing.T) {
		r := call(t, srv, http.MethodPost, "/api/v1/releases", []byte(`{"target":"`+name+`","targets":"not metadata"}`), bearer(s.admin))
		wantError(t, r, http.StatusUnprocessableEntity, apperr.Verification, "targets metadata refused")
	})
	list := call(t, srv, http.MethodGet, "/api/v1/releases", nil, bearer(s.admin))
	if list.status != http.StatusOK || len(decodeJSON[[]wire.Release](t, list.body)) != 0 {
		t.Fatalf("releases after refused publishes: %d %s", list.status, list.body)
	}
	cur := call(t, srv, http.MethodGet, "/repo/image/2.targets.json", nil, nil)
	wantError(t, cur, http.StatusNotFound, apperr.NotFound, "")
	// The properly signed one goes through.
	r := s.publish(srv, name, signed)
	if r.status != http.StatusCreated {
		t.Fatalf("publish signed: %d %s", r.status, r.body)
	}
	if rel := decodeJSON[wire.Release](t, r.body); rel.Target != name || rel.SHA256 != sha256hex(content) {
		t.Fatalf("release %+v", rel)
	}
}

func mustKey(t testing.TB) *tuf.Key {
	t.Helper()
	k, err := tuf.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestOperationsEndpoints(t *testing.T) {
	s := newStack(t)
	// As cmd/upkeep wires it: the device store timed, the rollout gauges read from the store.
	s.fleet.Store = fleet.TimedStore{Store: s.db, Observe: s.api.Metrics.ObserveDB}
	s.api.Metrics.Rollouts = s.db.RolloutCounts
	srv := s.serve()
	http.Get(srv.URL + "/healthz") // so that the request counter has a sample
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": "upkeep_http_requests_total"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %d %.200s, want 200 with %q", path, resp.StatusCode, b, want)
		}
	}

	// Device traffic: enrolment, a token, a check-in, a report of failures (one in a step the
	// protocol does not name).
	d, tok := s.enrolled(srv)
	if r := call(t, srv, http.MethodPost, "/device/v1/token", d.tokenBody(t), nil); r.status != http.StatusOK {
		t.Fatalf("token: %d %s", r.status, r.body)
	}
	if r := call(t, srv, http.MethodPost, "/device/v1/checkin", mustJSON(t, wire.Checkin{}), bearer(tok)); r.status != http.StatusOK {
		t.Fatalf("checkin: %d %s", r.status, r.body)
	}
	rep := wire.Report{State: "idle", Events: []wire.Event{
		{Time: time.Now(), Step: wire.StepDownload, Status: wire.StatusFailed, Message: "timeout"},
		{Time: time.Now(), Step: "made-up-step-1", Status: wire.StatusFailed, Fatal: true, Message: "x"},
	}}
	if r := call(t, srv, http.MethodPost, "/device/v1/report", mustJSON(t, rep), bearer(tok)); r.status != http.StatusNoContent {
		t.Fatalf("report: %d %s", r.status, r.body)
	}
	body := string(call(t, srv, http.MethodGet, "/metrics", nil, nil).body)
	for _, want := range []string{
		"upkeep_http_requests_total{", "upkeep_http_request_seconds_bucket{", "upkeep_checkins_total ",
		"upkeep_checkins_shed_total ", "upkeep_token_requests_shed_total ",
		`upkeep_device_failures_total{fatal="false",step="download"} 1`,
		`upkeep_device_failures_total{fatal="true",step="other"} 1`,
		`upkeep_db_seconds_count{op="find_device"}`, `upkeep_db_seconds_count{op="record_report"}`,
		`upkeep_rollout_campaigns{state="running"} 0`, `upkeep_rollout_members{status="assigned"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "made-up-step") {
		t.Error("/metrics names a step that a device made up")
	}
}

// A well-signed token is not enough on the routes past the check-in: the device must exist and
// be accepted. A refusal is not remembered, so a device accepted later gets in.
func TestKnownDevicesOnly(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	d := newDevice(t)
	if r := call(t, srv, http.MethodPost, "/device/v1/enroll", d.enrollBody(t), nil); r.status != http.StatusAccepted {
		t.Fatalf("enrol without token: %d %s", r.status, r.body)
	}
	pending, _ := s.fleet.Tokens.Issue(d.id, time.Now())
	ghost, _ := s.fleet.Tokens.Issue(newDevice(t).id, time.Now())
	report := mustJSON(t, wire.Report{State: "idle"})
	for _, tok := range []string{pending, ghost} {
		wantError(t, call(t, srv, http.MethodPost, "/device/v1/report", report, bearer(tok)), http.StatusUnauthorized, apperr.Unauthorized, "unknown or not accepted")
		wantError(t, call(t, srv, http.MethodGet, "/device/v1/director/timestamp.json", nil, bearer(tok)), http.StatusUnauthorized, apperr.Unauthorized, "unknown or not accepted")
	}
	if err := s.fleet.Accept(context.Background(), d.id, false); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second answer comes from the replica's memory
		if r := call(t, srv, http.MethodPost, "/device/v1/report", report, bearer(pending)); r.status != http.StatusNoContent && r.status != http.StatusOK {
			t.Fatalf("report after accept: %d %s", r.status, r.body)
		}
	}
}

// TestUnknownDeviceRoutes: an operator asking for the events or failure logs of a device that
// does not exist gets 404 naming it, not an empty list that reads as "nothing happened".
func TestUnknownDeviceRoutes(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	known, _ := s.enrolled(srv)
	for _, sub := range []string{"events", "logs"} {
		wantError(t, call(t, srv, http.MethodGet, "/api/v1/devices/nosuch/"+sub, nil, bearer(s.admin)), http.StatusNotFound, apperr.NotFound, "device nosuch not found")
		if r := call(t, srv, http.MethodGet, "/api/v1/devices/"+known.id+"/"+sub, nil, bearer(s.admin)); r.status != http.StatusOK {
			t.Errorf("%s of a known device: %d %s", sub, r.status, r.body)
		}
	}
}

// AssignMany assigns every device it can in one batch and names each one it cannot: a device
// that is not accepted does not stop the others.
func TestAssignManyBatch(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	ctx := context.Background()
	name, targets := s.uploadAndSign(srv, "1.0.0", []byte("firmware 1.0.0"), s.targetsKey)
	if r := s.publish(srv, name, targets); r.status != http.StatusCreated {
		t.Fatalf("publish: %d %s", r.status, r.body)
	}
	rels, err := s.db.FindReleases(ctx, release.Filter{Target: name})
	if err != nil || len(rels) != 1 {
		t.Fatalf("release: %v %v", rels, err)
	}
	pending := newDevice(t)
	if r := call(t, srv, http.MethodPost, "/device/v1/enroll", pending.enrollBody(t), nil); r.status != http.StatusAccepted {
		t.Fatalf("enrol without token: %d %s", r.status, r.body)
	}
	ids := []string{pending.id}
	for range 3 {
		d, _ := s.enrolled(srv)
		ids = append(ids, d.id)
	}
	ds, err := s.db.FindDevices(ctx, fleet.DeviceFilter{IDs: ids})
	if err != nil || len(ds) != 4 {
		t.Fatalf("devices: %d %v", len(ds), err)
	}
	i := slices.IndexFunc(ds, func(d *fleet.Device) bool { return d.ID == pending.id })
	ds[0], ds[i] = ds[i], ds[0] // the refused device comes first
	failed := s.director.AssignMany(ctx, ds, rels[0], &installpolicy.Policy{Campaign: "c1"})
	if len(failed) != 1 || failed[pending.id] == nil {
		t.Fatalf("failed = %v, want only the pending device", failed)
	}
	for _, id := range ids[1:] {
		d, err := s.db.FindDevice(ctx, id)
		if err != nil || d.Assigned != name || d.DirectorVersion != 1 || !strings.Contains(d.AssignPolicy, `"c1"`) {
			t.Errorf("device %s after the batch: %+v %v", id, d, err)
		}
	}
}

// TestCheckinBodyRemembered: the server answers a device's unchanged check-in body from memory,
// but any changed byte is decoded and checked again.
func TestCheckinBodyRemembered(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	_, tok := s.enrolled(srv)
	_, tok2 := s.enrolled(srv)
	checkin := func(tok, body string) wire.CheckinResponse {
		t.Helper()
		r := call(t, srv, http.MethodPost, "/device/v1/checkin", []byte(body), bearer(tok))
		if r.status != http.StatusOK {
			t.Fatalf("check-in %s: %d %s", body, r.status, r.body)
		}
		return decodeJSON[wire.CheckinResponse](t, r.body)
	}
	const seven = `{"installed":{"target":"thermostat/1.0.0/fw.img","security_version":1},"director_version":7}`
	for range 2 {
		if resp := checkin(tok, seven); !resp.Changed || resp.DirectorVersion == 7 {
			t.Fatalf("a device stating version 7 was told %+v", resp)
		}
	}
	now := checkin(tok2, `{"director_version":0}`).DirectorVersion
	same := fmt.Sprintf(`{"director_version":%d}`, now)
	if resp := checkin(tok, same); resp.Changed {
		t.Fatalf("the body of the version it holds: %+v", resp)
	}
	if resp := checkin(tok, seven); !resp.Changed {
		t.Fatalf("back to version 7: %+v", resp)
	}
	for _, bad := range []string{seven + " {}", seven[:len(seven)-1], strings.Replace(seven, `"installed"`, `"instaled"`, 1), ""} {
		if r := call(t, srv, http.MethodPost, "/device/v1/checkin", []byte(bad), bearer(tok)); r.status != http.StatusBadRequest {
			t.Errorf("body %q after a good one: %d %s, want 400", bad, r.status, r.body)
		}
	}
	big := `{"state":"` + strings.Repeat("x", wire.MaxCheckinBody) + `"}`
	if r := call(t, srv, http.MethodPost, "/device/v1/checkin", []byte(big), bearer(tok)); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d, want 413", r.status)
	}
}

// TestCheckinJitterHint: the 200 and the 304 answer of a check-in suggest a poll jitter in a
// header, and the 200 also in its body (a field older agents ignore).
func TestCheckinJitterHint(t *testing.T) {
	s := newStack(t)
	srv := s.serve()
	_, tok := s.enrolled(srv)
	r := call(t, srv, http.MethodPost, "/device/v1/checkin", mustJSON(t, wire.Checkin{}), bearer(tok))
	if r.status != http.StatusOK {
		t.Fatalf("checkin: %d %s", r.status, r.body)
	}
	resp := decodeJSON[wire.CheckinResponse](t, r.body)
	if got, want := resp.PollJitterSeconds, 12; got != want { // a fifth of the stack's 60 s
		t.Errorf("body poll_jitter_seconds %d, want %d", got, want)
	}
	if got := r.header.Get(wire.HeaderPollJitter); got != "12" {
		t.Errorf("200: %s %q, want 12", wire.HeaderPollJitter, got)
	}
	hdr := bearer(tok)
	hdr["If-None-Match"] = r.header.Get("Etag")
	r = call(t, srv, http.MethodPost, "/device/v1/checkin", mustJSON(t, wire.Checkin{DirectorVersion: resp.DirectorVersion}), hdr)
	if r.status != http.StatusNotModified {
		t.Fatalf("second checkin: %d, want 304", r.status)
	}
	if got := r.header.Get(wire.HeaderPollJitter); got != "12" {
		t.Errorf("304: %s %q, want 12", wire.HeaderPollJitter, got)
	}
}

// TestReadyzDatabaseClosed: /readyz answers 503 once the database is gone, without the
// database's error (hosts, ports, paths) in the body.
func TestReadyzDatabaseClosed(t *testing.T) {
	s := newStack(t)
	s.api.Ready = func(ctx context.Context) error { return s.db.SQL().PingContext(ctx) }
	srv := s.serve()
	if r := call(t, srv, http.MethodGet, "/readyz", nil, nil); r.status != http.StatusOK {
		t.Fatalf("open database: %d %s", r.status, r.body)
	}
	s.db.Close()
	r := call(t, srv, http.MethodGet, "/readyz", nil, nil)
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("closed database: %d %s, want 503", r.status, r.body)
	}
	if got, want := strings.TrimSpace(string(r.body)), "not ready: database unavailable"; got != want {
		t.Errorf("body %q, want %q", got, want)
	}
}

// writeCounter is a fleet.Store that counts its writes.
type writeCounter struct {
	fleet.Store
	writes atomic.Int64
}

func (c *writeCounter) CreateDevice(ctx context.Context, d *fleet.Device) error {
	c.writes.Add(1)
	return c.Store.CreateDevice(ctx, d)
}

func (c *writeCounter) UpdateDevice(ctx context.Context, id string, u fleet.DeviceUpdate) error {
	c.writes.Add(1)
	return c.Store.UpdateDevice(ctx, id, u)
}

func (c *writeCounter) TouchDevices(ctx context.Context, seen map[string]time.Time) error {
	c.writes.Add(1)
	return c.Store.TouchDevices(ctx, seen)
}

func (c *writeCounter) AddEvents(ctx context.Context, events []fleet.Event) error {
	c.writes.Add(1)
	return c.Store.AddEvents(ctx, events)
}

func (c *writeCounter) RecordReport(ctx context.Context, id string, u fleet.DeviceUpdate, events []fleet.Event) error {
	c.writes.Add(1)
	return c.Store.RecordReport(ctx, id, u, events)
}

func (c *writeCounter) CreateEnrollToken(ctx context.Context, t *fleet.EnrollToken) error {
	c.writes.Add(1)
	return c.Store.CreateEnrollToken(ctx, t)
}

func (c *writeCounter) UseEnrollToken(ctx context.Context, hash []byte, product string, now time.Time) (*fleet.EnrollToken, error) {
	c.writes.Add(1)
	return c.Store.UseEnrollToken(ctx, hash, product, now)
}

// TestNotModifiedCheckinWritesNothing: check-ins answered 304 write nothing to the store (their
// last-seen times wait for the batched flush).
func TestNotModifiedCheckinWritesNothing(t *testing.T) {
	s := newStack(t)
	wc := &writeCounter{Store: s.db}
	s.fleet.Store = wc
	srv := s.serve()
	_, tok := s.enrolled(srv)
	r := call(t, srv, http.MethodPost, "/device/v1/checkin", mustJSON(t, wire.Checkin{}), bearer(tok))
	if r.status != http.StatusOK {
		t.Fatalf("checkin: %d %s", r.status, r.body)
	}
	v := decodeJSON[wire.CheckinResponse](t, r.body).DirectorVersion
	wc.writes.Store(0) // enrolment wrote
	hdr := bearer(tok)
	hdr["If-None-Match"] = r.header.Get("Etag")
	for range 20 {
		if r := call(t, srv, http.MethodPost, "/device/v1/checkin", mustJSON(t, wire.Checkin{DirectorVersion: v}), hdr); r.status != http.StatusNotModified {
			t.Fatalf("checkin: %d, want 304", r.status)
		}
	}
	if n := wc.writes.Load(); n != 0 {
		t.Errorf("%d store writes for 20 check-ins answered 304, want 0", n)
	}
}
