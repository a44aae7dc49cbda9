// Package audit is the tamper-evident audit trail of the management API: every state-changing
// call (and every login) is one Record, appended to a single hash chain. Each record holds the
// previous record's hash and its own, the SHA-256 of a canonical encoding of its fields and that
// previous hash (Hash), so that changing, removing or reordering a stored record breaks the chain
// at that record's sequence number (Verifier). Pruning keeps the hash of the last removed record
// as the chain's checkpoint, from which verification starts.
//
// The package is pure: the chain is stored by an audit.Store (internal/store/sqlstore) and
// recorded by the HTTP layer (internal/httpapi).
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Actor types: who made a call.
const (
	ActorUser      = "user"      // a login session (or, for a login, the user name given)
	ActorToken     = "token"     // an operator token
	ActorAnonymous = "anonymous" // no valid credential: the call was refused
)

// Field bounds: longer values are cut (at a character boundary) before they are hashed and
// stored, so that no client can make a record larger than about 2 KiB.
const (
	MaxActor     = 128
	MaxActorID   = 64
	MaxAction    = 64
	MaxTarget    = 512
	MaxDetail    = 1024
	MaxIP        = 64
	MaxUserAgent = 256
)

// Record is one recorded call.
type Record struct {
	Seq       int64     // position in the chain, from 1, without gaps
	Time      time.Time // when the call was answered, UTC, microsecond precision
	ActorType string    // ActorUser, ActorToken or ActorAnonymous
	Actor     string    // user or token name
	ActorID   string    // the token's or login session's id
	Action    string    // e.g. "device.accept" (httpapi's table of route patterns)
	Target    string    // what the call acted on: path values, or what the handler named
	Detail    string    // what the handler added ("key=value" pairs)
	IP        string    // the connection's source address
	UserAgent string    // cut at MaxUserAgent
	Outcome   int       // the HTTP status answered
	PrevHash  string    // hex SHA-256 of the previous record; the checkpoint's for the first kept
	Hash      string    // hex SHA-256 of Canonical(this record)
}

// Normalize makes r storable and its hash stable: the time in UTC to the microsecond (what both
// databases keep), every text valid UTF-8 without control characters (PostgreSQL refuses NUL;
// terminals and spreadsheets should not see the others) and within its bound.
func (r *Record) Normalize() {
	r.Time = r.Time.UTC().Truncate(time.Microsecond)
	r.ActorType = clean(r.ActorType, 16)
	r.Actor = clean(r.Actor, MaxActor)
	r.ActorID = clean(r.ActorID, MaxActorID)
	r.Action = clean(r.Action, MaxAction)
	r.Target = clean(r.Target, MaxTarget)
	r.Detail = clean(r.Detail, MaxDetail)
	r.IP = clean(r.IP, MaxIP)
	r.UserAgent = clean(r.UserAgent, MaxUserAgent)
}

// clean replaces invalid UTF-8 and control characters with U+FFFD and cuts s to at most max
// bytes at a character boundary.
func clean(s string, max int) string {
	ok := utf8.ValidString(s) && len(s) <= max
	if ok {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] == 0x7f {
				ok = false
				break
			}
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for _, c := range strings.ToValidUTF8(s, "\uFFFD") {
		if c < 0x20 || (c >= 0x7f && c < 0xa0) {
			c = utf8.RuneError
		}
		if b.Len()+utf8.RuneLen(c) > max {
			break
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Canonical is the byte string a record's hash covers: a version tag, then every field but Hash
// as a netstring (length, colon, bytes, comma), in a fixed order; the time as Unix microseconds.
// Two different records never share an encoding.
func Canonical(r *Record) []byte {
	fields := []string{
		strconv.FormatInt(r.Seq, 10), strconv.FormatInt(r.Time.UnixMicro(), 10),
		r.ActorType, r.Actor, r.ActorID, r.Action, r.Target, r.Detail, r.IP, r.UserAgent,
		strconv.Itoa(r.Outcome), r.PrevHash,
	}
	b := []byte("upkeep-audit-v1\n")
	for _, f := range fields {
		b = strconv.AppendInt(b, int64(len(f)), 10)
		b = append(b, ':')
		b = append(b, f...)
		b = append(b, ',')
	}
	return b
}

// Hash returns the hex SHA-256 of Canonical(r).
func Hash(r *Record) string {
	sum := sha256.Sum256(Canonical(r))
	return hex.EncodeToString(sum[:])
}

// Seal sets r's sequence number, previous hash and hash to follow the record (seq, hash) before it.
func Seal(r *Record, prevSeq int64, prevHash string) {
	r.Seq, r.PrevHash = prevSeq+1, prevHash
	r.Hash = Hash(r)
}

// Chain is the state of the chain: the checkpoint (the last pruned record; 0 and "" before any
// pruning) and the head (the last appended record; equal to the checkpoint when none is kept).
type Chain struct {
	CheckpointSeq  int64
	CheckpointHash string
	HeadSeq        int64
	HeadHash       string
}

// BrokenError says where a chain stops being valid: the first sequence number that does not
// verify, and why.
type BrokenError struct {
	Seq    int64
	Reason string
}

func (e *BrokenError) Error() string {
	return fmt.Sprintf("audit chain broken at sequence %d: %s", e.Seq, e.Reason)
}

// Verifier checks records handed to it in order against the chain they claim to form. It reads
// each record once, so a whole export is verified in constant memory. Not safe for concurrent use.
type Verifier struct {
	chain Chain
	seq   int64  // last record's sequence number
	hash  string // last record's hash
	n     int64
	err   error
}

// NewVerifier starts verifying at the chain's checkpoint.
func NewVerifier(c Chain) *Verifier {
	return &Verifier{chain: c, seq: c.CheckpointSeq, hash: c.CheckpointHash}
}

// Add checks the next record: its sequence number follows the last one's, its previous hash is
// the last one's hash, and its hash is its own. The first failure is a *BrokenError, returned
// again by every later call.
func (v *Verifier) Add(r *Record) error {
	if v.err != nil {
		return v.err
	}
	switch {
	case r.Seq <= v.seq:
		v.err = &BrokenError{Seq: v.seq + 1, Reason: fmt.Sprintf("sequence %d after %d: records out of order or repeated", r.Seq, v.seq)}
	case r.Seq != v.seq+1:
		v.err = &BrokenError{Seq: v.seq + 1, Reason: fmt.Sprintf("missing: the next record kept is %d", r.Seq)}
	case r.PrevHash != v.hash:
		v.err = &BrokenError{Seq: r.Seq, Reason: fmt.Sprintf("its previous hash is not the hash of record %d: one of the two was changed", v.seq)}
	case Hash(r) != r.Hash:
		v.err = &BrokenError{Seq: r.Seq, Reason: "its fields do not match its hash: the record was changed"}
	default:
		v.seq, v.hash = r.Seq, r.Hash
		v.n++
	}
	return v.err
}

// Finish checks that the records ended at the chain's head, so that none was removed from the
// end, and returns how many records verified.
func (v *Verifier) Finish() (int64, error) {
	if v.err != nil {
		return v.n, v.err
	}
	if v.seq < v.chain.HeadSeq {
		v.err = &BrokenError{Seq: v.seq + 1, Reason: fmt.Sprintf("missing: the records end at %d but the chain's head is %d", v.seq, v.chain.HeadSeq)}
	} else if v.seq != v.chain.HeadSeq || v.hash != v.chain.HeadHash {
		v.err = &BrokenError{Seq: v.chain.HeadSeq, Reason: "the chain's head does not match its last record"}
	}
	return v.n, v.err
}

// Filter selects records for FindRecords. Zero fields select everything.
type Filter struct {
	Actor   string    // exactly
	Action  string    // exactly, or every action under it ("device" selects "device.accept")
	Target  string    // exactly
	Outcome string    // OutcomeOK, OutcomeFailed, OutcomeDenied, or a status code ("403")
	Since   time.Time // at or after
	Until   time.Time // before
	Before  int64     // sequence numbers below (keyset pagination, newest first); 0: from the newest
	Limit   int       // at most; 0 or more than MaxLimit: MaxLimit
}

// Outcome classes for Filter.Outcome.
const (
	OutcomeOK     = "ok"     // status below 400
	OutcomeFailed = "failed" // 400 and above
	OutcomeDenied = "denied" // 401 or 403
)

// MaxLimit bounds a page of FindRecords.
const MaxLimit = 1000

// Store keeps the chain. Implementations are safe for concurrent use, also from several server
// processes on one database: appends serialize on the chain's head.
type Store interface {
	// AppendRecord normalizes r, seals it after the chain's head (setting Seq, PrevHash, Hash)
	// and stores it with the new head, in one transaction.
	AppendRecord(ctx context.Context, r *Record) error
	// FindRecords lists the records f selects, newest first.
	FindRecords(ctx context.Context, f Filter) ([]*Record, error)
	// ExportRecords calls start with the chain's state and then each with every kept record up
	// to that head, in order, all read from one snapshot. An error from a callback stops it and
	// is returned.
	ExportRecords(ctx context.Context, start func(Chain) error, each func(*Record) error) error
	// PruneRecords removes the oldest records made before before (at most max, 0: no bound),
	// records the last one's hash as the checkpoint, and returns how many it removed.
	PruneRecords(ctx context.Context, before time.Time, max int) (int64, error)
}

// VerifyStore recomputes the whole kept chain of st; a broken chain is a *BrokenError.
func VerifyStore(ctx context.Context, st Store) (Chain, int64, error) {
	var v *Verifier
	var c Chain
	err := st.ExportRecords(ctx, func(ch Chain) error { c, v = ch, NewVerifier(ch); return nil }, func(r *Record) error {
		v.Add(r) //nolint:errcheck // the first break is kept and returned by Finish
		return nil
	})
	if err != nil {
		return c, 0, err
	}
	n, err := v.Finish()
	return c, n, err
}

// Note is what a handler adds to the record of its call: a target when the path does not name
// it (a release published, a token created), and details. The HTTP layer puts one in the
// context of every recorded call.
type Note struct {
	target    string
	detail    []string
	actorType string
	actor     string
	actorID   string
}

type noteKey struct{}

// WithNote returns a context carrying a fresh Note, and the note.
func WithNote(ctx context.Context) (context.Context, *Note) {
	n := &Note{}
	return context.WithValue(ctx, noteKey{}, n), n
}

func noteOf(ctx context.Context) *Note {
	n, _ := ctx.Value(noteKey{}).(*Note)
	return n
}

// SetTarget names what the call acted on; a call that is not recorded ignores it.
func SetTarget(ctx context.Context, target string) {
	if n := noteOf(ctx); n != nil {
		n.target = target
	}
}

// AddDetail adds key=value to the record's detail; a call that is not recorded ignores it.
func AddDetail(ctx context.Context, key, value string) {
	if n := noteOf(ctx); n != nil {
		n.detail = append(n.detail, key+"="+value)
	}
}

// SetActor names who made the call: the authenticated principal (set by the HTTP layer), or
// for a login the user name it gave and, once it succeeded, the new session's id.
func SetActor(ctx context.Context, actorType, actor, id string) {
	if n := noteOf(ctx); n != nil {
		n.actorType, n.actor, n.actorID = actorType, actor, id
	}
}

// Target is the target a handler set, if any.
func (n *Note) Target() string { return n.target }

// Detail is the details a handler added, space-separated.
func (n *Note) Detail() string { return strings.Join(n.detail, " ") }

// Actor is who made the call, as SetActor named it; actorType is empty if nobody did.
func (n *Note) Actor() (actorType, actor, id string) { return n.actorType, n.actor, n.actorID }
