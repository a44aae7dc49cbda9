package wire

import "time"

// AuditRecord is one record of the management API's audit trail (GET /api/v1/audit, and each
// element of "records" in the JSON export). Hash is the hex SHA-256 of the record's canonical
// encoding (internal/audit.Canonical), which covers every other field and PrevHash.
type AuditRecord struct {
	Seq       int64     `json:"seq"`
	Time      time.Time `json:"time"`
	ActorType string    `json:"actor_type"` // user, token or anonymous
	Actor     string    `json:"actor"`
	ActorID   string    `json:"actor_id"` // the token's or login session's id
	Action    string    `json:"action"`
	Target    string    `json:"target"`
	Detail    string    `json:"detail"`
	IP        string    `json:"ip"`
	UserAgent string    `json:"user_agent"`
	Outcome   int       `json:"outcome"` // the HTTP status answered
	PrevHash  string    `json:"prev_hash"`
	Hash      string    `json:"hash"`
}

// AuditPage is a page of GET /api/v1/audit, newest first. Next, when not 0, is the "before"
// value of the next page.
type AuditPage struct {
	Records []AuditRecord `json:"records"`
	Next    int64         `json:"next,omitempty"`
}

// AuditChain is the state of the chain: the checkpoint (the last pruned record, 0 and "" before
// any pruning) and the head (the last record appended).
type AuditChain struct {
	CheckpointSeq  int64  `json:"checkpoint_seq"`
	CheckpointHash string `json:"checkpoint_hash"`
	HeadSeq        int64  `json:"head_seq"`
	HeadHash       string `json:"head_hash"`
}

// AuditExport is the JSON document of GET /api/v1/audit/export?format=json, streamed with
// "chain" first and then every kept record in order, up to the chain's head.
type AuditExport struct {
	Chain   AuditChain    `json:"chain"`
	Records []AuditRecord `json:"records"`
}

// AuditVerification is the answer of GET /api/v1/audit/verify: the server recomputed the kept
// chain from its checkpoint. When OK is false, BrokenSeq is the first sequence number that does
// not verify and Reason says why.
type AuditVerification struct {
	OK        bool       `json:"ok"`
	Records   int64      `json:"records"`
	Chain     AuditChain `json:"chain"`
	BrokenSeq int64      `json:"broken_seq,omitempty"`
	Reason    string     `json:"reason,omitempty"`
}

// AuditCSVHeader is the first line of GET /api/v1/audit/export?format=csv.
var AuditCSVHeader = []string{"seq", "time", "actor_type", "actor", "actor_id", "action", "target", "detail", "ip", "user_agent", "outcome", "prev_hash", "hash"}
