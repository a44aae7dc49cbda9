package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"upkeep.dev/upkeep/internal/apperr"
	"upkeep.dev/upkeep/internal/audit"
	"upkeep.dev/upkeep/wire"
)

// AuditRecords lists audit records, newest first; q holds the filters of GET /api/v1/audit
// (actor, action, target, outcome, since, until, before, limit).
func (c *Client) AuditRecords(ctx context.Context, q url.Values) (*wire.AuditPage, error) {
	var out wire.AuditPage
	err := c.Do(ctx, http.MethodGet, "/api/v1/audit?"+q.Encode(), nil, &out)
	return &out, err
}

// VerifyAuditOnServer asks the server to recompute its chain.
func (c *Client) VerifyAuditOnServer(ctx context.Context) (*wire.AuditVerification, error) {
	var out wire.AuditVerification
	err := c.Do(ctx, http.MethodGet, "/api/v1/audit/verify", nil, &out)
	return &out, err
}

// ExportAudit streams the whole audit trail in format ("json" or "csv") to w.
func (c *Client) ExportAudit(ctx context.Context, format string, w io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.Base, "/")+"/api/v1/audit/export?format="+url.QueryEscape(format), nil)
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return apperr.Wrap(apperr.Unavailable, err, fmt.Sprintf("cannot reach the server at %s", c.Base))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var we wire.Error
		if json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&we) != nil || we.Message == "" {
			return apperr.E(apperr.FromHTTPStatus(resp.StatusCode), "server answered %s", resp.Status)
		}
		return &apperr.Error{Code: apperr.Code(we.Code), Msg: we.Message}
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return fmt.Errorf("audit export cut short: %w", err)
	}
	return nil
}

// RecordFromWire is the audit record a wire record describes.
func RecordFromWire(r wire.AuditRecord) *audit.Record {
	return &audit.Record{Seq: r.Seq, Time: r.Time, ActorType: r.ActorType, Actor: r.Actor, ActorID: r.ActorID, Action: r.Action, Target: r.Target,
		Detail: r.Detail, IP: r.IP, UserAgent: r.UserAgent, Outcome: r.Outcome, PrevHash: r.PrevHash, Hash: r.Hash}
}

// errExport is a JSON export that is not the document wire.AuditExport describes.
var errExport = errors.New("not an audit export: want {\"chain\": {...}, \"records\": [...]}")

// Anchor is a record's hash noted earlier, outside the server (the head that `audit verify`
// printed, or any record of an export kept elsewhere). Since each hash covers the previous one,
// a chain that verifies and still holds an anchor's record with its hash holds every record
// before it unchanged too: a rewrite of the chain with its head is caught.
type Anchor struct {
	Seq  int64
	Hash string
}

// ParseAnchor reads an anchor written SEQ:HASH.
func ParseAnchor(s string) (Anchor, error) {
	seq, hash, ok := strings.Cut(s, ":")
	n, err := strconv.ParseInt(seq, 10, 64)
	if !ok || err != nil || n < 1 || len(hash) != 64 {
		return Anchor{}, fmt.Errorf("anchor %q: want SEQ:HASH (a sequence number and a 64-digit hex SHA-256)", s)
	}
	return Anchor{Seq: n, Hash: strings.ToLower(hash)}, nil
}

// VerifyAuditExport reads a JSON export (wire.AuditExport, "chain" first) from rd and verifies
// its records one by one from the checkpoint to the head, in constant memory, without trusting
// the server that made it: a broken chain is an *audit.BrokenError naming the first sequence
// number that does not verify. Each anchor's record must be there with the anchor's hash (one
// at the checkpoint is compared with it; one pruned before it cannot be checked and is passed
// over). It returns the chain and how many records verified.
func VerifyAuditExport(rd io.Reader, anchors ...Anchor) (wire.AuditChain, int64, error) {
	dec := json.NewDecoder(rd)
	var chain wire.AuditChain
	expect := func(want json.Delim) error {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %w", errExport, err)
		}
		if d, ok := tok.(json.Delim); !ok || d != want {
			return errExport
		}
		return nil
	}
	key := func(want string) error {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %w", errExport, err)
		}
		if k, ok := tok.(string); !ok || k != want {
			return errExport
		}
		return nil
	}
	if err := expect('{'); err != nil {
		return chain, 0, err
	}
	if err := key("chain"); err != nil {
		return chain, 0, err
	}
	if err := dec.Decode(&chain); err != nil {
		return chain, 0, fmt.Errorf("%w: %w", errExport, err)
	}
	v := audit.NewVerifier(audit.Chain{CheckpointSeq: chain.CheckpointSeq, CheckpointHash: chain.CheckpointHash, HeadSeq: chain.HeadSeq, HeadHash: chain.HeadHash})
	if err := key("records"); err != nil {
		return chain, 0, err
	}
	if err := expect('['); err != nil {
		return chain, 0, err
	}
	for dec.More() {
		var r wire.AuditRecord
		if err := dec.Decode(&r); err != nil {
			return chain, 0, fmt.Errorf("%w: %w", errExport, err)
		}
		if err := v.Add(RecordFromWire(r)); err != nil {
			n, _ := v.Finish()
			return chain, n, err
		}
		for _, a := range anchors {
			if a.Seq == r.Seq && a.Hash != r.Hash {
				return chain, 0, &audit.BrokenError{Seq: r.Seq, Reason: "its hash is not the one noted earlier (the anchor): the chain was rewritten from here or before"}
			}
		}
	}
	if err := expect(']'); err != nil {
		return chain, 0, err
	}
	if err := expect('}'); err != nil {
		return chain, 0, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return chain, 0, fmt.Errorf("%w: trailing data", errExport)
	}
	n, err := v.Finish()
	if err != nil {
		return chain, n, err
	}
	for _, a := range anchors {
		switch {
		case a.Seq == chain.CheckpointSeq && a.Hash != chain.CheckpointHash:
			return chain, n, &audit.BrokenError{Seq: a.Seq, Reason: "the checkpoint's hash is not the one noted earlier (the anchor): the chain was rewritten"}
		case a.Seq > chain.HeadSeq:
			return chain, n, &audit.BrokenError{Seq: chain.HeadSeq + 1, Reason: fmt.Sprintf("the chain ends at %d, before the anchor's record %d: records were removed from its end", chain.HeadSeq, a.Seq)}
		}
	}
	return chain, n, nil
}
