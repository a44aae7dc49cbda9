package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/internal/auth"
	"upkeep.dev/upkeep/internal/client"
	"upkeep.dev/upkeep/internal/server"
	"upkeep.dev/upkeep/internal/store/storetest"
	"upkeep.dev/upkeep/wire"
)

// TestCLIAudit: a publish, an accept, a deploy, a token and a user created are each recorded
// with the acting token and the source address, and `audit list` shows them; a refused (403)
// state change is recorded with its outcome. `audit verify` checks the exported chain on the
// client and asks the server; the audit-prune job keeps it green; a record edited or deleted in
// the database makes it fail naming that record's sequence number, while an export kept earlier
// still verifies offline.
func TestCLIAudit(t *testing.T) {
	// Every record is past a retention of 1 ns: the prune below removes all there are.
	e := newEnvWith(t, func(c *server.Config) { c.AuditRetention = time.Nanosecond })
	ctx := context.Background()
	g := []string{"--server", e.srv.URL, "--token", e.srv.AdminToken}

	rel := e.publish("1.0.0", 1, image("1.0.0", 4<<10))
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	enroll := signed(t, key, wire.EnrollPayload{PublicKey: hex.EncodeToString(pub), Time: time.Now().UTC(), Identity: wire.Identity{Serial: "SN-A", Product: testProduct, HardwareID: testHardware}})
	if st, body := post(t, e.srv.URL+"/device/v1/enroll", enroll, nil); st != http.StatusAccepted {
		t.Fatalf("pending enrolment: %d %s", st, body)
	}
	devID := auth.DeviceID(pub)
	cli(t, append(g, "devices", "accept", devID)...)
	e.deploy(rel, devID)
	viewer := strings.TrimSpace(strings.SplitN(cli(t, append(g, "tokens", "create", "--name", "dash", "--role", "viewer")...), "\n", 2)[0])
	cli(t, append(g, "users", "add", "dana", "--role", "deployer", "--no-password")...)
	if _, err := cliErr("--server", e.srv.URL, "--token", viewer, "devices", "decommission", devID); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("viewer decommissions: %v", err)
	}

	out := cli(t, append(g, "audit", "list")...)
	for _, want := range []string{"release.publish", "device.accept", "deploy", "token.create", "user.add", "device.decommission",
		"token:admin", "token:dash", "127.0.0.1", testProduct + "@1.0.0", devID, "dana"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit list lacks %q:\n%s", want, out)
		}
	}
	denied := cli(t, append(g, "audit", "list", "--outcome", "denied")...)
	if lines := strings.Split(strings.TrimSpace(denied), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "token:dash") || !strings.Contains(lines[1], "device.decommission") || !strings.Contains(lines[1], " 403 ") {
		t.Fatalf("audit list --outcome denied:\n%s", denied)
	}
	if out := cli(t, append(g, "audit", "list", "--action", "device", "--since", "1h")...); strings.Count(out, "\n") != 3 {
		t.Fatalf("audit list --action device:\n%s", out)
	}
	if _, err := cliErr("--server", e.srv.URL, "--token", viewer, "audit", "list"); err == nil || !strings.Contains(err.Error(), "audit:read") {
		t.Fatalf("a viewer reads the audit trail: %v", err)
	}
	if out := cli(t, append(g, "audit", "verify")...); !strings.Contains(out, "verified here: 8 records") || !strings.Contains(out, "verified by the server: 8 records") {
		t.Fatalf("audit verify:\n%s", out)
	}
	kept := filepath.Join(t.TempDir(), "audit.json")
	cli(t, append(g, "audit", "export", "--format", "json", "-o", kept)...)
	csvOut := cli(t, append(g, "audit", "export", "--format", "csv")...)
	if !strings.HasPrefix(csvOut, strings.Join(wire.AuditCSVHeader, ",")+"\n") || strings.Count(csvOut, "\n") != 9 {
		t.Fatalf("csv export:\n%s", csvOut)
	}

	// The audit-prune job removes all eight (the environment's enrolment token, the blob upload and the publish among them)
	// (the retention is 1 ns) and keeps the last hash.
	if n, err := e.srv.PruneAudit(ctx); err != nil || n != 8 {
		t.Fatalf("PruneAudit = %d, %v", n, err)
	}
	cli(t, append(g, "tokens", "create", "--name", "ci", "--role", "deployer")...)
	cli(t, append(g, "users", "add", "sam", "--role", "viewer", "--no-password")...)
	cli(t, append(g, "enroll-token", "create", "--name", "line-2")...)
	if out := cli(t, append(g, "audit", "verify")...); !strings.Contains(out, "verified here: 3 records, sequence 9 to 11") || !strings.Contains(out, "verified by the server: 3 records") {
		t.Fatalf("audit verify after pruning:\n%s", out)
	}

	// An edited record: both verifications name it.
	db := e.srv.DB.SQL()
	if _, err := db.Exec(`UPDATE audit_log SET actor = 'mallory' WHERE seq = 10`); err != nil {
		t.Fatal(err)
	}
	out, err := cliErr(append(g, "audit", "verify")...)
	if err == nil || !strings.Contains(err.Error(), "broken at sequence 10") || !strings.Contains(out, "server also finds the chain broken at sequence 10") {
		t.Fatalf("verify after an edit: %v\n%s", err, out)
	}
	if _, err := db.Exec(`UPDATE audit_log SET actor = 'admin' WHERE seq = 10`); err != nil {
		t.Fatal(err)
	}
	cli(t, append(g, "audit", "verify")...)
	// A deleted record.
	if _, err := db.Exec(`DELETE FROM audit_log WHERE seq = 10`); err != nil {
		t.Fatal(err)
	}
	if _, err := cliErr(append(g, "audit", "verify")...); err == nil || !strings.Contains(err.Error(), "broken at sequence 10: missing") {
		t.Fatalf("verify after a deletion: %v", err)
	}
	// A deleted last record: the head names it.
	if _, err := db.Exec(`DELETE FROM audit_log WHERE seq = 11`); err != nil {
		t.Fatal(err)
	}
	if sv, err := e.cli.VerifyAuditOnServer(ctx); err != nil || sv.OK || sv.BrokenSeq != 10 {
		t.Fatalf("server verify after two deletions: %+v %v", sv, err)
	}
	// The export kept before still verifies offline; a copy edited by hand does not.
	if out := cli(t, "audit", "verify", "--file", kept); !strings.Contains(out, "8 records verified here") {
		t.Fatalf("offline verify:\n%s", out)
	}
	b, err := os.ReadFile(kept)
	if err != nil {
		t.Fatal(err)
	}
	forged := filepath.Join(t.TempDir(), "forged.json")
	if err := os.WriteFile(forged, []byte(strings.Replace(string(b), `"outcome":403`, `"outcome":204`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cliErr("audit", "verify", "--file", forged); err == nil || !strings.Contains(err.Error(), "broken at sequence 8") {
		t.Fatalf("offline verify of a forged export: %v", err)
	}
	// A rewrite from record 6 on, with every hash after it and the head recomputed, verifies
	// alone; the head noted earlier (--anchor) catches it.
	var exp wire.AuditExport
	if err := json.Unmarshal(b, &exp); err != nil {
		t.Fatal(err)
	}
	head := fmt.Sprintf("%d:%s", exp.Chain.HeadSeq, exp.Chain.HeadHash)
	prev := exp.Records[4].Hash
	for i := 5; i < len(exp.Records); i++ {
		r := client.RecordFromWire(exp.Records[i])
		if i == 5 {
			r.Actor = "someone-else"
		}
		audit.Seal(r, r.Seq-1, prev)
		exp.Records[i].Actor, exp.Records[i].PrevHash, exp.Records[i].Hash, prev = r.Actor, r.PrevHash, r.Hash, r.Hash
	}
	exp.Chain.HeadHash = prev
	rewritten, _ := json.Marshal(exp)
	if err := os.WriteFile(forged, rewritten, 0o600); err != nil {
		t.Fatal(err)
	}
	cli(t, "audit", "verify", "--file", forged)
	if _, err := cliErr("audit", "verify", "--file", forged, "--anchor", head); err == nil || !strings.Contains(err.Error(), "noted earlier") {
		t.Fatalf("offline verify of a rewritten export against its old head: %v", err)
	}
	if out := cli(t, "audit", "verify", "--file", kept, "--anchor", head); !strings.Contains(out, "head "+head) {
		t.Fatalf("verify --anchor on the kept export:\n%s", out)
	}
}

// TestAuditReplicasAppendOneChain: two replicas on one database, each taking calls from its
// own goroutine at once, append one valid chain without gaps (SQLite, and PostgreSQL when
// UPKEEP_TEST_POSTGRES is set: the head row is locked FOR UPDATE).
func TestAuditReplicasAppendOneChain(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			var dsn string
			if backend == "postgres" {
				dsn = storetest.PostgresDSN(t)
			}
			e := newEnvWith(t, func(c *server.Config) { c.Database = dsn })
			b, err := server.Open(context.Background(), e.srv.Config)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			const each = 15
			var wg sync.WaitGroup
			errs := make(chan error, 2*each)
			for i, base := range []string{e.srv.URL, b.URL} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := &client.Client{Base: base, Token: e.srv.AdminToken}
					for j := range each {
						_, err := c.CreateEnrollToken(context.Background(), wire.EnrollTokenRequest{Name: fmt.Sprintf("r%d-%d", i, j)})
						errs <- err
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			g := []string{"--server", b.URL, "--token", e.srv.AdminToken}
			want := strconv.Itoa(2*each + 1) // and the environment's own enrolment token
			if out := cli(t, append(g, "audit", "verify")...); !strings.Contains(out, "verified here: "+want+" records") || !strings.Contains(out, "verified by the server: "+want) {
				t.Fatalf("audit verify:\n%s", out)
			}
			rs, err := e.srv.DB.FindRecords(context.Background(), audit.Filter{Action: "enroll-token.create"})
			if err != nil || len(rs) != 2*each+1 {
				t.Fatalf("records: %d %v", len(rs), err)
			}
		})
	}
}
