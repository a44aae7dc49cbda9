package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/blob/blobtest"
	blobfs "upkeep.dev/upkeep/internal/blob/fs"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/sim"
	"upkeep.dev/upkeep/internal/store/storetest"
	"upkeep.dev/upkeep/internal/tuf"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

const (
	testProduct  = "thermostat"
	testHardware = "tstat-v2"
)

// env is a real server on :0 with a fresh key set, and helpers to publish and run devices.
type env struct {
	t            testing.TB
	dir, keys    string
	srv          *server.Server
	cli          *client.Client
	targetsKey   *tuf.Key
	imageRoot    []byte
	directorRoot []byte
	enrollToken  string
	now          time.Time // zero: real time
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newEnv(t *testing.T) *env { return newEnvWith(t, nil) }

// newEnvWith is newEnv, letting the test adjust the server configuration before it starts.
func newEnvWith(t testing.TB, configure func(*server.Config)) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.keys = filepath.Join(e.dir, "keys")
	if _, err := tuf.InitKeySet(e.keys, 1, 1, tuf.DefaultLifetimes(), time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := server.DefaultConfig()
	cfg.Addr, cfg.DataDir, cfg.KeysDir, cfg.Logger = "127.0.0.1:0", filepath.Join(e.dir, "data"), e.keys, quietLogger()
	cfg.Wrap = checkContract(t)
	if configure != nil {
		configure(&cfg)
	}
	srv, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	e.srv = srv
	e.cli = &client.Client{Base: srv.URL, Token: srv.AdminToken}
	if e.targetsKey, err = tuf.LoadKey(filepath.Join(e.keys, tuf.FileTargetsKey)); err != nil {
		t.Fatal(err)
	}
	e.imageRoot = e.read(tuf.FileImageRoot)
	e.directorRoot = e.read(tuf.FileDirectorRoot)
	tok, err := e.cli.CreateEnrollToken(context.Background(), wire.EnrollTokenRequest{Name: "factory"})
	if err != nil {
		t.Fatal(err)
	}
	e.enrollToken = tok.Token
	return e
}

func (e *env) read(name string) []byte {
	b, err := os.ReadFile(filepath.Join(e.keys, name))
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// image makes the bytes of a release image.
func image(version string, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7) ^ version[len(version)-1]
	}
	copy(b, "UPKEEP-IMAGE "+version)
	return b
}

func (e *env) publish(version string, secVer int64, content []byte) *wire.Release {
	e.t.Helper()
	rel, err := e.tryPublish(version, secVer, []string{testHardware}, content)
	if err != nil {
		e.t.Fatalf("publish %s: %v", version, err)
	}
	return rel
}

func (e *env) tryPublish(version string, secVer int64, hw []string, content []byte) (*wire.Release, error) {
	return e.tryPublishWith(version, secVer, hw, uptane.ClassSecurity, content)
}

func (e *env) tryPublishWith(version string, secVer int64, hw []string, class string, content []byte) (*wire.Release, error) {
	f := filepath.Join(e.t.TempDir(), "firmware-"+version+".img")
	if err := os.WriteFile(f, content, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return e.cli.Publish(context.Background(), client.PublishOptions{
		File: f, TargetsKey: e.targetsKey, TrustedRoot: e.imageRoot, Expires: 30 * 24 * time.Hour,
		NoIndex: true, // the full-image path; delta_test.go publishes indexes and patches
		Custom:  uptane.TargetCustom{Product: testProduct, HardwareIDs: hw, Version: version, SecurityVersion: secVer, Class: class},
	})
}

// device enrols a simulated device running factory (target name, version, security version).
func (e *env) device(serial string, factory []byte, rel *wire.Release) *sim.Device {
	e.t.Helper()
	d, err := sim.NewDevice(context.Background(), filepath.Join(e.dir, "devices", serial), sim.Options{
		Server: e.srv.URL, EnrollToken: e.enrollToken, ImageRoot: e.imageRoot, DirectorRoot: e.directorRoot,
		Identity: wire.Identity{Serial: serial, Product: testProduct, HardwareID: testHardware},
		Factory:  factory, FactoryTarget: rel.Target, FactoryVersion: rel.Version, FactorySecVer: rel.SecurityVersion,
		Logger: quietLogger(),
	})
	if err != nil {
		e.t.Fatalf("device %s: %v", serial, err)
	}
	return d
}

func (e *env) deploy(rel *wire.Release, ids ...string) {
	e.t.Helper()
	resp, err := e.cli.Deploy(context.Background(), wire.DeployRequest{Release: rel.Product + "@" + rel.Version, DeviceIDs: ids})
	if err != nil {
		e.t.Fatal(err)
	}
	if resp.Assigned != len(ids) {
		e.t.Fatalf("deploy assigned %d of %d: %v", resp.Assigned, len(ids), resp.Skipped)
	}
}

func TestUpdateEndToEnd(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v100 := image("1.0.0", 64<<10)
	r100 := e.publish("1.0.0", 1, v100)
	d := e.device("SN-1", v100, r100)
	v101 := image("1.0.1", 80<<10)
	r101 := e.publish("1.0.1", 2, v101)
	e.deploy(r101, d.Agent.State().DeviceID)

	if err := d.Agent.Cycle(ctx); err != nil {
		t.Fatalf("cycle: %v", err)
	}
	st := d.Agent.State()
	if st.Installed.Version != "1.0.1" || st.Phase != "idle" {
		t.Fatalf("installed %+v phase %s, want 1.0.1 idle (last error %q)", st.Installed, st.Phase, st.LastError)
	}
	got, err := d.ActiveImageSHA256(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got != r101.SHA256 {
		t.Fatalf("active slot holds %s, want %s", got, r101.SHA256)
	}
	devs, err := e.cli.Devices(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 1 || devs[0].Installed.Version != "1.0.1" || devs[0].State != "idle" {
		t.Fatalf("server sees %+v", devs)
	}
	// A second cycle is a cheap no-op.
	if err := d.Agent.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestUpdateEndToEndPostgres runs the secure update path on the PostgreSQL store.
func TestUpdateEndToEndPostgres(t *testing.T) {
	dsn := storetest.PostgresDSN(t)
	e := newEnvWith(t, func(c *server.Config) { c.Database = dsn })
	ctx := context.Background()
	v100 := image("1.0.0", 64<<10)
	r100 := e.publish("1.0.0", 1, v100)
	d := e.device("SN-PG", v100, r100)
	r101 := e.publish("1.0.1", 2, image("1.0.1", 70<<10))
	e.deploy(r101, d.Agent.State().DeviceID)
	if err := d.Agent.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.ActiveImageSHA256(ctx); got != r101.SHA256 || d.Agent.State().Installed.Version != "1.0.1" {
		t.Fatalf("device did not install 1.0.1 on PostgreSQL: %+v", d.Agent.State())
	}
}

// blobPath is where the local artifact store keeps a blob (tests tamper with it).
func (e *env) blobPath(sha string) string { return e.srv.Blobs.(*blobfs.Store).Path(sha) }

// TestUpdateEndToEndS3 stores artifacts in a real S3-compatible server: the device is redirected
// to a pre-signed URL and verifies the bytes against the TUF hashes as usual.
func TestUpdateEndToEndS3(t *testing.T) {
	raw := blobtest.S3URL(t)
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = fmt.Sprintf("%s-e2e-%d", u.Host, time.Now().UnixNano())
	e := newEnvWith(t, func(c *server.Config) {
		c.Blobs, c.S3AccessKey, c.S3SecretKey = u.String(), os.Getenv("UPKEEP_TEST_S3_ACCESS_KEY"), os.Getenv("UPKEEP_TEST_S3_SECRET_KEY")
	})
	ctx := context.Background()
	v100 := image("1.0.0", 64<<10)
	r100 := e.publish("1.0.0", 1, v100)
	d := e.device("SN-S3", v100, r100)
	r101 := e.publish("1.0.1", 2, image("1.0.1", 300<<10))
	e.deploy(r101, d.Agent.State().DeviceID)

	// The artifact route answers with a redirect, not with bytes.
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/device/v1/targets/"+r101.Target, nil)
	req.Header.Set("Authorization", "Bearer "+d.Agent.State().Token)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(resp.Header.Get("Location"), "X-Amz-Signature") {
		t.Fatalf("artifact route: %d %q, want a redirect to a pre-signed URL", resp.StatusCode, resp.Header.Get("Location"))
	}
	if err := d.Agent.Cycle(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.ActiveImageSHA256(ctx); got != r101.SHA256 {
		t.Fatalf("device did not install 1.0.1 from S3: %+v", d.Agent.State())
	}
}

// TestDeployAll assigns a release to every accepted device of the product in batches; devices
// of the product on other hardware are skipped with the reason.
func TestDeployAll(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	v100 := image("1.0.0", 64<<10)
	r100 := e.publish("1.0.0", 1, v100)
	var devs []*sim.Device
	for i := range 3 {
		devs = append(devs, e.device(fmt.Sprintf("SN-%d", i), v100, r100))
	}
	other, err := sim.NewDevice(ctx, filepath.Join(e.dir, "devices", "SN-other"), sim.Options{
		Server: e.srv.URL, EnrollToken: e.enrollToken, ImageRoot: e.imageRoot, DirectorRoot: e.directorRoot,
		Identity: wire.Identity{Serial: "SN-other", Product: testProduct, HardwareID: "tstat-v9"},
		Factory:  v100, FactoryTarget: r100.Target, FactoryVersion: r100.Version, FactorySecVer: r100.SecurityVersion, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	r101 := e.publish("1.0.1", 2, image("1.0.1", 70<<10))
	resp, err := e.cli.Deploy(ctx, wire.DeployRequest{Release: "thermostat@1.0.1", All: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Assigned != 3 || len(resp.Skipped) != 1 || resp.Skipped[other.Agent.State().DeviceID] == "" {
		t.Fatalf("deploy --all: %+v, want 3 assigned and the other hardware skipped", resp)
	}
	for _, d := range devs {
		if err := d.Agent.Cycle(ctx); err != nil || d.Agent.State().Installed.Version != "1.0.1" {
			t.Fatalf("device after deploy --all: %v, %+v", err, d.Agent.State().Installed)
		}
	}
	if got, _ := devs[0].ActiveImageSHA256(ctx); got != r101.SHA256 {
		t.Fatalf("active slot holds %s, want 1.0.1", got)
	}
}
