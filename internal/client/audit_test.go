package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/wire"
)

func exportOf(t testing.TB, n int, tamper func([]wire.AuditRecord)) []byte {
	var rs []wire.AuditRecord
	seq, hash := int64(0), ""
	for i := range n {
		r := &audit.Record{Time: time.Date(2026, 12, 1, 0, 0, i, 0, time.UTC), ActorType: audit.ActorToken, Actor: "ci", Action: "deploy", Outcome: 200}
		audit.Seal(r, seq, hash)
		seq, hash = r.Seq, r.Hash
		rs = append(rs, wire.AuditRecord{Seq: r.Seq, Time: r.Time, ActorType: r.ActorType, Actor: r.Actor, Action: r.Action, Outcome: r.Outcome, PrevHash: r.PrevHash, Hash: r.Hash})
	}
	if tamper != nil {
		tamper(rs)
	}
	b, err := json.Marshal(wire.AuditExport{Chain: wire.AuditChain{HeadSeq: seq, HeadHash: hash}, Records: rs})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestVerifyAuditExport(t *testing.T) {
	if _, n, err := VerifyAuditExport(bytes.NewReader(exportOf(t, 5, nil))); err != nil || n != 5 {
		t.Fatalf("intact export: %d %v", n, err)
	}
	_, _, err := VerifyAuditExport(bytes.NewReader(exportOf(t, 5, func(rs []wire.AuditRecord) { rs[3].Actor = "mallory" })))
	var be *audit.BrokenError
	if !errors.As(err, &be) || be.Seq != 4 {
		t.Fatalf("edited export: %v", err)
	}
	for _, bad := range []string{``, `[]`, `{"records":[]}`, `{"chain":{},"records":[]} x`, `{"chain":{},"records":[{"seq":"x"}]}`} {
		if _, _, err := VerifyAuditExport(strings.NewReader(bad)); err == nil || errors.As(err, &be) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// FuzzVerifyAuditExport: whatever a server sends as an export, verification ends with an
// answer and never accepts records that do not chain.
func FuzzVerifyAuditExport(f *testing.F) {
	f.Add(exportOf(f, 3, nil))
	f.Add(exportOf(f, 2, func(rs []wire.AuditRecord) { rs[1].Seq = 7 }))
	f.Add([]byte(`{"chain":{"head_seq":1},"records":[{}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, n, err := VerifyAuditExport(bytes.NewReader(b))
		if err == nil && n != c.HeadSeq-c.CheckpointSeq {
			t.Fatalf("accepted %d records for a chain %+v", n, c)
		}
	})
}

func TestVerifyAuditExportAnchors(t *testing.T) {
	var exp wire.AuditExport
	if err := json.Unmarshal(exportOf(t, 4, nil), &exp); err != nil {
		t.Fatal(err)
	}
	good := Anchor{Seq: 2, Hash: exp.Records[1].Hash}
	if _, _, err := VerifyAuditExport(bytes.NewReader(exportOf(t, 4, nil)), good); err != nil {
		t.Fatalf("anchor on a kept record: %v", err)
	}
	var be *audit.BrokenError
	if _, _, err := VerifyAuditExport(bytes.NewReader(exportOf(t, 4, nil)), Anchor{Seq: 2, Hash: exp.Records[0].Hash}); !errors.As(err, &be) || be.Seq != 2 {
		t.Fatalf("wrong anchor: %v", err)
	}
	if _, _, err := VerifyAuditExport(bytes.NewReader(exportOf(t, 4, nil)), Anchor{Seq: 9, Hash: exp.Records[0].Hash}); !errors.As(err, &be) || be.Seq != 5 {
		t.Fatalf("anchor past the head: %v", err)
	}
	if _, err := ParseAnchor("2:" + exp.Records[1].Hash); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "2", "x:" + exp.Records[1].Hash, "0:" + exp.Records[1].Hash, "2:abc"} {
		if _, err := ParseAnchor(bad); err == nil {
			t.Errorf("ParseAnchor(%q) accepted", bad)
		}
	}
}
