package audit

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func chainOf(n int) (Chain, []*Record) {
	var rs []*Record
	seq, hash := int64(0), ""
	for i := range n {
		r := &Record{Time: time.Date(2026, 12, 1, 0, 0, i, 0, time.UTC), ActorType: ActorToken, Actor: "ci", Action: "deploy", Outcome: 200}
		Seal(r, seq, hash)
		seq, hash = r.Seq, r.Hash
		rs = append(rs, r)
	}
	return Chain{HeadSeq: seq, HeadHash: hash}, rs
}

func verify(c Chain, rs []*Record) (int64, error) {
	v := NewVerifier(c)
	for _, r := range rs {
		v.Add(r) //nolint:errcheck // Finish returns the first break
	}
	return v.Finish()
}

// TestVerifier: each way of tampering with a chain names the first sequence number that breaks.
func TestVerifier(t *testing.T) {
	for _, c := range []struct {
		name   string
		tamper func(c *Chain, rs []*Record) []*Record
		seq    int64 // 0: valid
		reason string
	}{
		{"intact", func(c *Chain, rs []*Record) []*Record { return rs }, 0, ""},
		{"field changed", func(c *Chain, rs []*Record) []*Record { rs[2].Outcome = 403; return rs }, 3, "was changed"},
		{"record rehashed", func(c *Chain, rs []*Record) []*Record { rs[2].Actor = "x"; rs[2].Hash = Hash(rs[2]); return rs }, 4, "previous hash"},
		{"record removed", func(c *Chain, rs []*Record) []*Record { return append(rs[:2], rs[3:]...) }, 3, "missing"},
		{"tail removed", func(c *Chain, rs []*Record) []*Record { return rs[:4] }, 5, "missing"},
		{"swapped", func(c *Chain, rs []*Record) []*Record { rs[1], rs[2] = rs[2], rs[1]; return rs }, 2, "missing"},
		{"repeated", func(c *Chain, rs []*Record) []*Record { return append(rs[:2], rs[1:]...) }, 3, "out of order"},
		{"pruned with checkpoint", func(c *Chain, rs []*Record) []*Record {
			c.CheckpointSeq, c.CheckpointHash = 2, rs[1].Hash
			return rs[2:]
		}, 0, ""},
		{"pruned, wrong checkpoint", func(c *Chain, rs []*Record) []*Record {
			c.CheckpointSeq, c.CheckpointHash = 2, rs[0].Hash
			return rs[2:]
		}, 3, "previous hash"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ch, rs := chainOf(6)
			rs = c.tamper(&ch, rs)
			_, err := verify(ch, rs)
			var be *BrokenError
			if c.seq == 0 {
				if err != nil {
					t.Fatalf("valid chain: %v", err)
				}
				return
			}
			if !errors.As(err, &be) || be.Seq != c.seq || !strings.Contains(be.Reason, c.reason) {
				t.Fatalf("got %v, want a break at %d (%s)", err, c.seq, c.reason)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	r := &Record{Time: time.Date(2026, 12, 1, 0, 0, 0, 1999, time.FixedZone("x", 3600)), Actor: "a\x00b\tc\u0085d\xffe", UserAgent: strings.Repeat("é", 200)}
	r.Normalize()
	if r.Actor != "a\uFFFDb\uFFFDc\uFFFDd\uFFFDe" || len(r.UserAgent) > MaxUserAgent || !utf8.ValidString(r.UserAgent) || r.Time.Nanosecond() != 1000 || r.Time.Location() != time.UTC {
		t.Fatalf("normalized: %+v", r)
	}
	// Canonical encodings of different records differ even when fields' concatenations agree.
	a, b := &Record{Actor: "ab", Action: "c"}, &Record{Actor: "a", Action: "bc"}
	if Hash(a) == Hash(b) {
		t.Fatal("field boundaries are not in the encoding")
	}
}
