package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/ddi"
	"upkeep.dev/upkeep/internal/rollout"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/testenv"
	"upkeep.dev/upkeep/internal/uptane"
	"upkeep.dev/upkeep/wire"
)

// swuKit builds SWUpdate bundles: sw-description signed with CMS by openssl, a cpio -H crc
// archive, one rawfile image.
type swuKit struct {
	t               *testing.T
	dir, cert, key  string
	openssl, cpio   string
	swupdate, board string
}

func newSWUKit(t *testing.T) *swuKit {
	k := &swuKit{t: t, dir: t.TempDir(), board: "board:1.0"}
	k.swupdate = testenv.Tool(t, "swupdate", "swupdate")
	k.cpio = testenv.Tool(t, "cpio", "cpio")
	k.openssl = testenv.Tool(t, "openssl", "openssl")
	k.cert, k.key = filepath.Join(k.dir, "cert.pem"), filepath.Join(k.dir, "key.pem")
	k.run(k.dir, nil, k.openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", k.key, "-out", k.cert, "-subj", "/CN=upkeep-ddi-test", "-days", "2")
	return k
}

func (k *swuKit) run(dir string, stdin []byte, name string, args ...string) []byte {
	k.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		k.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// build returns a .swu whose rawfile image writes payload to dest. tamper changes the payload
// after sw-description (with its sha256) was signed.
func (k *swuKit) build(name, version string, payload []byte, dest string, tamper bool) string {
	k.t.Helper()
	dir := filepath.Join(k.dir, name)
	os.MkdirAll(dir, 0o755)
	sum := sha256.Sum256(payload)
	desc := fmt.Sprintf(`software =
{
	version = %q;
	hardware-compatibility: [ "1.0" ];
	files: (
		{
			filename = "payload.bin";
			path = %q;
			sha256 = %q;
		}
	);
}
`, version, dest, hex.EncodeToString(sum[:]))
	os.WriteFile(filepath.Join(dir, "sw-description"), []byte(desc), 0o644)
	k.run(dir, nil, k.openssl, "cms", "-sign", "-in", "sw-description", "-out", "sw-description.sig", "-signer", k.cert, "-inkey", k.key, "-outform", "DER", "-nosmimecap", "-binary")
	if tamper {
		payload = bytes.Clone(payload)
		payload[0] ^= 0xff
	}
	os.WriteFile(filepath.Join(dir, "payload.bin"), payload, 0o644)
	swu := k.run(dir, []byte("sw-description\nsw-description.sig\npayload.bin\n"), k.cpio, "-o", "-H", "crc", "--quiet")
	out := filepath.Join(k.dir, name+".swu")
	os.WriteFile(out, swu, 0o644)
	return out
}

// suricatta is a running `swupdate -u` (SWUpdate's hawkBit client).
type suricatta struct {
	t      *testing.T
	cmd    *exec.Cmd
	log    string
	tmp    string
	cfg    string
	kit    *swuKit
	exited chan struct{}
}

// startSuricatta writes the client's configuration and starts it; cArg is "" or "-c 2"/"-c 3"
// (the result of the previous install after a restart).
func (k *swuKit) startSuricatta(e *env, id, auth, cArg string) *suricatta {
	k.t.Helper()
	// SWUpdate's IPC sockets live under TMPDIR, which must be short (108-byte socket paths).
	tmp, err := os.MkdirTemp("/tmp", "swu")
	if err != nil {
		k.t.Fatal(err)
	}
	k.t.Cleanup(func() { os.RemoveAll(tmp) })
	cfg := filepath.Join(tmp, "swupdate.cfg")
	conf := fmt.Sprintf(`globals :
{
	verbose = true;
	loglevel = 6;
	bootloader = "none";
	postupdatecmd = "/bin/true";
};
suricatta :
{
	tenant = "DEFAULT";
	id = %q;
	url = %q;
	polldelay = 1;
	retry = 100;
	retrywait = 1;
	%s
};
identify : (
	{ name = "board"; value = "ddi-test"; },
	{ name = "hwRevision"; value = "1.0"; }
);
`, id, e.srv.URL, auth)
	os.WriteFile(cfg, []byte(conf), 0o600)
	s := &suricatta{t: k.t, log: filepath.Join(tmp, "swupdate.log"), tmp: tmp, cfg: cfg, kit: k}
	s.start(cArg)
	return s
}

func (s *suricatta) start(cArg string) {
	s.t.Helper()
	logf, err := os.Create(s.log)
	if err != nil {
		s.t.Fatal(err)
	}
	s.cmd = exec.Command(s.kit.swupdate, "-f", s.cfg, "-H", s.kit.board, "-k", s.kit.cert, "-p", "/bin/true", "-v", "-u", cArg)
	s.cmd.Env = append(os.Environ(), "TMPDIR="+s.tmp)
	s.cmd.Dir = s.tmp
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // SWUpdate forks; stop kills the group
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() { s.cmd.Wait(); logf.Close(); close(s.exited) }()
	s.t.Cleanup(s.stop)
}

func (s *suricatta) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// restart stops the client and starts it again as after a reboot, with the install's result.
func (s *suricatta) restart(cArg string) {
	s.stop()
	s.start(cArg)
}

func (s *suricatta) output() string {
	b, _ := os.ReadFile(s.log)
	return string(b)
}

// waitFor polls cond until it holds, failing with the client's log otherwise.
func (s *suricatta) waitFor(within time.Duration, what string, cond func() bool) {
	s.t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if cond() {
			return
		}
	}
	out := s.output()
	if len(out) > 6000 {
		out = out[len(out)-6000:]
	}
	s.t.Fatalf("%s did not happen within %s; swupdate's log ends:\n%s", what, within, out)
}

// ddiEnv starts a server for DDI tests: 1 s polls, a fast rollout engine, a clock the test can
// move forward.
func ddiEnv(t *testing.T) (*env, *atomic.Int64) {
	var offset atomic.Int64
	e := newEnvWith(t, func(c *server.Config) {
		c.PollSeconds, c.RolloutEvery = 1, 200*time.Millisecond
		c.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
		c.DDI.CacheFor = 500 * time.Millisecond
	})
	return e, &offset
}

// publishSWU publishes a bundle as a release of the test product.
func (e *env) publishSWU(version string, secVer int64, file string) *wire.Release {
	e.t.Helper()
	rel, err := e.cli.Publish(context.Background(), client.PublishOptions{
		File: file, TargetsKey: e.targetsKey, TrustedRoot: e.imageRoot, Expires: 30 * 24 * time.Hour,
		Custom: uptane.TargetCustom{Product: testProduct, HardwareIDs: []string{testHardware}, Version: version, SecurityVersion: secVer,
			Class: uptane.ClassSecurity, ArtifactType: uptane.ArtifactSWU},
	})
	if err != nil {
		e.t.Fatalf("publish %s: %v", version, err)
	}
	return rel
}

// ddiDevice creates a DDI device with the CLI and returns its target token.
func (e *env) ddiDevice(id string) string {
	e.t.Helper()
	out := cli(e.t, "--server", e.srv.URL, "--token", e.srv.AdminToken, "devices", "create", "--ddi", id, "--product", testProduct, "--hardware", testHardware)
	return strings.TrimSpace(strings.SplitN(out, "\n", 2)[0])
}

func (e *env) campaignFor(rel *wire.Release, spec wire.CampaignSpec) *wire.Campaign {
	e.t.Helper()
	spec.Release, spec.Start = rel.Product+"@"+rel.Version, true
	if spec.HealthGate == "" {
		spec.HealthGate = "0s"
	}
	c, err := e.cli.CreateRollout(context.Background(), spec)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) lastAction(id string) *ddi.Action {
	e.t.Helper()
	as, err := e.srv.DB.FindActions(context.Background(), id, 1)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(as) == 0 {
		return nil
	}
	return as[0]
}

// TestDDISWUpdateSuccess: the real SWUpdate client installs a campaign's bundle through the
// DDI API and, restarted with the success flag, reports it; the campaign completes.
func TestDDISWUpdateSuccess(t *testing.T) {
	k := newSWUKit(t)
	e, _ := ddiEnv(t)
	dest := filepath.Join(k.dir, "installed.bin")
	payload := image("1.1.0", 8<<10)
	rel := e.publishSWU("1.1.0", 1, k.build("ok", "1.1.0", payload, dest, false))
	if !strings.HasSuffix(rel.Target, ".swu") {
		t.Fatalf("target %s", rel.Target)
	}
	tok := e.ddiDevice("swu-ok")
	s := k.startSuricatta(e, "swu-ok", fmt.Sprintf("targettoken = %q;", tok), "")
	// configData: the identify section becomes the device's attributes.
	s.waitFor(20*time.Second, "configData", func() bool {
		d, err := e.cli.Device(context.Background(), "swu-ok")
		return err == nil && d.Attributes["board"] == "ddi-test" && d.Kind == "ddi"
	})
	camp := e.campaignFor(rel, wire.CampaignSpec{Devices: []string{"swu-ok"}, Mode: "forced"})
	s.waitFor(30*time.Second, "the bundle installed", func() bool {
		b, err := os.ReadFile(dest)
		return err == nil && bytes.Equal(b, payload)
	})
	// SWUpdate waits to be restarted, as after a reboot, with the install's result.
	time.Sleep(1500 * time.Millisecond)
	if a := e.lastAction("swu-ok"); a.Status != ddi.ActionOpen {
		t.Fatalf("before the restart with the result the action must stay open: %+v", a)
	}
	s.restart("-c 2")
	st := e.waitCampaign(camp.ID, 2*time.Minute, "completion", func(s *wire.CampaignStatus) bool { return s.Campaign.State == rollout.StateCompleted })
	if st.Waves[0][rollout.MemberHealthy] != 1 {
		t.Fatalf("waves %+v", st.Waves)
	}
	if a := e.lastAction("swu-ok"); a.Status != ddi.ActionClosed || a.Result != ddi.ResultSuccess {
		t.Fatalf("action %+v", a)
	}
	list := cli(t, "--server", e.srv.URL, "--token", e.srv.AdminToken, "devices", "list")
	if !strings.Contains(list, "swu-ok") || !strings.Contains(list, "ddi (bundle signature only, no Uptane)") || !strings.Contains(list, "1.1.0") {
		t.Fatalf("devices list:\n%s", list)
	}
}

// TestDDISWUpdateFailureAutoPauses: an install that fails on the device is reported as a
// failure, counts against the campaign, and pauses it; a tampered bundle is refused by the
// client (its signed sw-description names another sha256) and reported with the reason.
func TestDDISWUpdateFailureAutoPauses(t *testing.T) {
	k := newSWUKit(t)
	e, _ := ddiEnv(t)
	bad := e.publishSWU("1.2.0", 1, k.build("bad", "1.2.0", image("1.2.0", 4<<10), "/nonexistent-dir/upkeep/out.bin", false))
	gw := e.ddiDevice("swu-fail")
	s := k.startSuricatta(e, "swu-fail", fmt.Sprintf("targettoken = %q;", gw), "")
	zero := 0.0
	camp := e.campaignFor(bad, wire.CampaignSpec{Devices: []string{"swu-fail"}, Mode: "forced", FailureThreshold: &zero})
	e.waitCampaign(camp.ID, 2*time.Minute, "automatic pause", func(st *wire.CampaignStatus) bool {
		return st.Campaign.State == rollout.StatePaused && len(st.Failed) == 1
	})
	if a := e.lastAction("swu-fail"); a.Status != ddi.ActionClosed || a.Result != ddi.ResultFailure {
		t.Fatalf("action %+v", a)
	}
	s.stop()

	dest := filepath.Join(k.dir, "tampered.bin")
	tampered := e.publishSWU("1.3.0", 2, k.build("tampered", "1.3.0", image("1.3.0", 4<<10), dest, true))
	tok := e.ddiDevice("swu-tampered")
	s = k.startSuricatta(e, "swu-tampered", fmt.Sprintf("targettoken = %q;", tok), "")
	camp = e.campaignFor(tampered, wire.CampaignSpec{Devices: []string{"swu-tampered"}, Mode: "forced", FailureThreshold: &zero})
	st := e.waitCampaign(camp.ID, 2*time.Minute, "the tampered bundle failed", func(st *wire.CampaignStatus) bool { return len(st.Failed) == 1 })
	if _, err := os.Stat(dest); err == nil {
		t.Fatal("the tampered payload was installed")
	}
	evs, err := e.cli.Events(context.Background(), "swu-tampered")
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&all, "%s %s %v %s\n", ev.Step, ev.Status, ev.Fatal, ev.Message)
	}
	if !strings.Contains(strings.ToLower(all.String()), "hash") {
		t.Errorf("the events do not say why the bundle was refused:\n%s", all.String())
	}
	_ = st
}

// TestDDISWUpdateCancelAndWindow: a campaign whose window is closed holds the update (the
// deployment says update: skip) until the window opens; a cancelled campaign becomes
// cancelAction, which the client confirms.
func TestDDISWUpdateCancelAndWindow(t *testing.T) {
	k := newSWUKit(t)
	e, offset := ddiEnv(t)
	dest := filepath.Join(k.dir, "window.bin")
	payload := image("2.0.0", 4<<10)
	rel := e.publishSWU("2.0.0", 1, k.build("window", "2.0.0", payload, dest, false))
	tok := e.ddiDevice("swu-window")
	s := k.startSuricatta(e, "swu-window", fmt.Sprintf("targettoken = %q;", tok), "")
	now := time.Now().UTC()
	closed := now.Add(3*time.Hour).Format("15:04") + "-" + now.Add(4*time.Hour).Format("15:04")
	e.campaignFor(rel, wire.CampaignSpec{Devices: []string{"swu-window"}, Mode: "forced", Window: closed})
	s.waitFor(20*time.Second, "an action for the device", func() bool { return e.lastAction("swu-window") != nil })
	time.Sleep(4 * time.Second) // several polls: nothing may be installed outside the window
	if a := e.lastAction("swu-window"); a.Status != ddi.ActionOpen {
		t.Fatalf("outside its window the action must stay open: %+v", a)
	}
	if _, err := os.Stat(dest); err == nil {
		t.Fatalf("installed outside the maintenance window:\n%s", s.output())
	}
	offset.Store(int64(3*time.Hour + 10*time.Minute)) // the window opens
	s.waitFor(30*time.Second, "the install once the window opened", func() bool {
		b, err := os.ReadFile(dest)
		return err == nil && bytes.Equal(b, payload)
	})
	s.stop()

	// Cancel: a consent campaign holds (this SWUpdate has no confirmation support), then the
	// operator cancels it.
	rel2 := e.publishSWU("2.1.0", 2, k.build("cancel", "2.1.0", image("2.1.0", 4<<10), filepath.Join(k.dir, "cancel.bin"), false))
	tok2 := e.ddiDevice("swu-cancel")
	s = k.startSuricatta(e, "swu-cancel", fmt.Sprintf("targettoken = %q;", tok2), "")
	camp := e.campaignFor(rel2, wire.CampaignSpec{Devices: []string{"swu-cancel"}, Mode: "soft"})
	s.waitFor(20*time.Second, "an action for the device", func() bool { return e.lastAction("swu-cancel") != nil })
	if _, err := e.cli.RolloutAction(context.Background(), camp.ID, "cancel"); err != nil {
		t.Fatal(err)
	}
	s.waitFor(30*time.Second, "the cancel confirmed by the client", func() bool {
		a := e.lastAction("swu-cancel")
		return a.Status == ddi.ActionClosed && a.Result == ddi.ResultCanceled
	})
	if _, err := os.Stat(filepath.Join(k.dir, "cancel.bin")); err == nil {
		t.Fatal("a cancelled update was installed")
	}
}
