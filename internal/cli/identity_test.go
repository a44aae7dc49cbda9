package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/store/storetest"
	"upkeep.dev/upkeep/wire"
)

// replicaPair starts two servers sharing one database (the SQLite file in one data folder, or
// the PostgreSQL at dsn) and one keys folder, as replicas behind a load balancer would.
func replicaPair(t *testing.T, dsn string) (a, b *server.Server) {
	t.Helper()
	e := newEnvWith(t, func(c *server.Config) { c.Database = dsn })
	cfg := e.srv.Config
	if dsn != "" {
		cfg.DataDir = filepath.Join(e.dir, "data-b") // artifacts: each its own folder here
	}
	b, err := server.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	b.AdminToken = e.srv.AdminToken
	return e.srv, b
}

// post sends body to url and returns the status and the answer's body.
func post(t *testing.T, url string, body []byte, hdr map[string]string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// signed is a device's signed request body as the agent sends it.
func signed(t *testing.T, key ed25519.PrivateKey, payload any) []byte {
	t.Helper()
	p, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(wire.SignedRequest{Payload: p, Signature: hex.EncodeToString(ed25519.Sign(key, p))})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// within polls ok every 20 ms until it is true or d has passed, and returns how long it took.
func within(t *testing.T, d time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// TestReplicasRefuseReplayAndFollowRevocations runs two servers on one database (SQLite, and
// PostgreSQL when UPKEEP_TEST_POSTGRES is set): a captured enrolment or token request that got a
// token from one is refused by both when replayed (409); an operator token revoked on one stops
// working on the other within a second; so does the device token of a device decommissioned on
// one, on every device route.
func TestReplicasRefuseReplayAndFollowRevocations(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := ""
			if backend == "postgres" {
				dsn = storetest.PostgresDSN(t)
			}
			a, b := replicaPair(t, dsn)
			ctx := context.Background()
			ca := &client.Client{Base: a.URL, Token: a.AdminToken}
			enrollTok, err := ca.CreateEnrollToken(ctx, wire.EnrollTokenRequest{Name: "line"})
			if err != nil {
				t.Fatal(err)
			}

			// Replay.
			pub, key, _ := ed25519.GenerateKey(rand.Reader)
			id := auth.DeviceID(pub)
			enroll := signed(t, key, wire.EnrollPayload{PublicKey: hex.EncodeToString(pub), Time: time.Now().UTC(),
				Identity: wire.Identity{Serial: "SN-R", Product: testProduct, HardwareID: testHardware}})
			hdr := map[string]string{wire.HeaderEnrollToken: enrollTok.Token}
			if st, body := post(t, a.URL+"/device/v1/enroll", enroll, hdr); st != http.StatusOK {
				t.Fatalf("enrol: %d %s", st, body)
			}
			for _, srv := range []*server.Server{a, b} {
				if st, body := post(t, srv.URL+"/device/v1/enroll", enroll, hdr); st != http.StatusConflict || !strings.Contains(string(body), "already used") {
					t.Fatalf("replayed enrolment: %d %s, want 409", st, body)
				}
			}
			tokenReq := signed(t, key, wire.TokenPayload{DeviceID: id, Time: time.Now().UTC()})
			st, body := post(t, b.URL+"/device/v1/token", tokenReq, nil)
			if st != http.StatusOK {
				t.Fatalf("token: %d %s", st, body)
			}
			var issued wire.EnrollResponse
			json.Unmarshal(body, &issued)
			for _, srv := range []*server.Server{a, b} {
				if st, body := post(t, srv.URL+"/device/v1/token", tokenReq, nil); st != http.StatusConflict {
					t.Fatalf("replayed token request: %d %s, want 409", st, body)
				}
			}

			// Operator token revocation.
			viewer, err := ca.CreateToken(ctx, wire.OperatorTokenRequest{Name: "dashboard", Role: auth.RoleViewer})
			if err != nil {
				t.Fatal(err)
			}
			cb := &client.Client{Base: b.URL, Token: viewer.Token}
			if _, err := cb.Devices(ctx, ""); err != nil { // cached on b from now on
				t.Fatal(err)
			}
			if err := ca.RevokeToken(ctx, viewer.ID); err != nil {
				t.Fatal(err)
			}
			took := within(t, time.Second, "revoked operator token refused by the other replica", func() bool {
				_, err := cb.Devices(ctx, "")
				return err != nil && strings.Contains(err.Error(), "revoked")
			})
			t.Logf("operator token refused by the other replica %s after its revocation", took)

			// Decommissioning.
			checkin := func(srv *server.Server) int {
				st, _ := post(t, srv.URL+"/device/v1/checkin", []byte(`{"director_version":0}`), map[string]string{"Authorization": "Bearer " + issued.Token})
				return st
			}
			if st := checkin(b); st != http.StatusOK {
				t.Fatalf("check-in before: %d", st)
			}
			if err := ca.Decommission(ctx, id); err != nil {
				t.Fatal(err)
			}
			took = within(t, time.Second, "decommissioned device's token refused by the other replica", func() bool { return checkin(b) == http.StatusUnauthorized })
			t.Logf("device token refused by the other replica %s after the decommission", took)
			req, _ := http.NewRequest(http.MethodGet, b.URL+"/device/v1/director/1.root.json", nil)
			req.Header.Set("Authorization", "Bearer "+issued.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("director of a decommissioned device: %d", resp.StatusCode)
			}
			fresh := signed(t, key, wire.TokenPayload{DeviceID: id, Time: time.Now().UTC()})
			if st, body := post(t, b.URL+"/device/v1/token", fresh, nil); st != http.StatusForbidden {
				t.Fatalf("token of a decommissioned device: %d %s", st, body)
			}
		})
	}
}

// TestCLIOperatorAndEnrolmentTokens drives `upkeep tokens`, `upkeep enroll-token` and the device
// actions as an operator would.
func TestCLIOperatorAndEnrolmentTokens(t *testing.T) {
	e := newEnv(t)
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}
	out := cli(t, append(g, "tokens", "create", "--name", "dashboard", "--role", "viewer")...)
	viewer, _, _ := strings.Cut(out, "\n") // the secret alone on the first line (stdout); a note follows on stderr
	if !strings.HasPrefix(viewer, auth.AdminPrefix) {
		t.Fatalf("tokens create printed %q", viewer)
	}
	list := cli(t, append(g, "tokens", "list")...)
	if !strings.Contains(list, "dashboard") || !strings.Contains(list, "viewer") || !strings.Contains(list, "admin") {
		t.Fatalf("tokens list:\n%s", list)
	}
	v := []string{"--server", e.srv.URL, "--token", viewer}
	cli(t, append(v, "devices", "list")...)
	if out, err := cliErr(append(v, "enroll-token", "--name", "x")...); err == nil || !strings.Contains(err.Error(), "role viewer") {
		t.Fatalf("a viewer made an enrolment token: %v\n%s", err, out)
	}
	var id string
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, "dashboard") {
			id = strings.Fields(line)[0]
		}
	}
	cli(t, append(g, "tokens", "revoke", id)...)
	if _, err := cliErr(append(v, "devices", "list")...); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a revoked token still lists devices: %v", err)
	}
	if !strings.Contains(cli(t, append(g, "tokens", "list")...), "revoked") {
		t.Fatal("tokens list does not show the revocation")
	}

	// Enrolment tokens: created as before and with create, listed, revoked.
	tok := strings.TrimSpace(cli(t, append(g, "enroll-token", "--name", "line-7", "--uses", "5")...))
	cli(t, append(g, "enroll-token", "create", "--name", "line-8")...)
	list = cli(t, append(g, "enroll-token", "list")...)
	if !strings.Contains(list, "line-7") || !strings.Contains(list, "line-8") || !strings.Contains(list, " 5 ") || !strings.Contains(list, " 1000 ") {
		t.Fatalf("enroll-token list:\n%s", list)
	}
	for _, line := range strings.Split(list, "\n") {
		if strings.Contains(line, "line-7") {
			id = strings.Fields(line)[0]
		}
	}
	cli(t, append(g, "enroll-token", "revoke", id)...)
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	enroll := signed(t, key, wire.EnrollPayload{PublicKey: hex.EncodeToString(pub), Time: time.Now().UTC(), Identity: wire.Identity{Serial: "SN-C", Product: testProduct, HardwareID: testHardware}})
	if st, body := post(t, e.srv.URL+"/device/v1/enroll", enroll, map[string]string{wire.HeaderEnrollToken: tok}); st != http.StatusUnauthorized {
		t.Fatalf("enrolment with a revoked token: %d %s", st, body)
	}

	// Devices: reject a pending one; decommission an accepted one, readmit it.
	if st, body := post(t, e.srv.URL+"/device/v1/enroll", signed(t, key, wire.EnrollPayload{PublicKey: hex.EncodeToString(pub), Time: time.Now().UTC(),
		Identity: wire.Identity{Serial: "SN-C", Product: testProduct, HardwareID: testHardware}}), nil); st != http.StatusAccepted {
		t.Fatalf("pending enrolment: %d %s", st, body)
	}
	devID := auth.DeviceID(pub)
	cli(t, append(g, "devices", "reject", devID)...)
	cli(t, append(g, "devices", "accept", devID)...)
	if out := cli(t, append(g, "devices", "decommission", devID)...); !strings.Contains(out, "decommissioned") {
		t.Fatalf("decommission: %s", out)
	}
	if !strings.Contains(cli(t, append(g, "devices", "list")...), "decommissioned") {
		t.Fatal("devices list does not show the decommissioned device")
	}
	if _, err := cliErr(append(g, "devices", "accept", devID)...); err == nil || !strings.Contains(err.Error(), "--readmit") {
		t.Fatalf("accept of a decommissioned device without --readmit: %v", err)
	}
	cli(t, append(g, "devices", "accept", "--readmit", devID)...)
}
