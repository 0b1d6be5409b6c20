// Package audit keeps the hash-chained audit trail. server/apply.go appends
// one record per state change in the same transaction as the change; each
// record's hash covers its content and the previous record's hash, keyed
// with an HMAC when the cluster has an audit key, so any edit, removal or
// reordering of stored records is detected by [Verify].
//
// Imports: the standard library and internal/jsonw only.
package audit

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/internal/jsonw"
)

// Bucket holds records keyed by big-endian sequence number; HeadBucket
// keeps the last record's sequence number and hash under one key, so an
// append reads a few bytes instead of decoding the newest record.
var (
	Bucket     = []byte("audit")
	HeadBucket = []byte("audit_head")
	headKey    = []byte("head")
	anchorKey  = []byte("anchor")
)

// Buckets lists the buckets the package writes.
func Buckets() [][]byte { return [][]byte{Bucket, HeadBucket} }

// Record is one audited change.
type Record struct {
	Seq      uint64    `json:"seq"`
	Revision uint64    `json:"revision"`
	Time     time.Time `json:"time"`
	Actor    string    `json:"actor"`
	Reason   string    `json:"reason,omitempty"`
	Action   string    `json:"action"`
	Target   string    `json:"target"`
	Before   string    `json:"before,omitempty"`
	After    string    `json:"after,omitempty"`
	PrevHash string    `json:"prev_hash"`
	Hash     string    `json:"hash"`
}

// ErrBadPageToken is returned for a page token this package did not issue.
var ErrBadPageToken = errors.New("audit: malformed page token")

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func digestOf(key []byte, r Record) string {
	sum, _ := digest(key, r)
	return sum
}

// digest returns r's hash and r's encoding with Hash filled in. The hash
// covers the encoding of r with an empty Hash: the bytes json.Marshal
// writes for it (encode; TestEncodeMatchesEncodingJSON), so records written
// before encode existed verify alike.
func digest(key []byte, r Record) (string, []byte) {
	r.Hash = ""
	body := encode(r)
	var h hash.Hash
	if len(key) > 0 {
		h = hmac.New(sha256.New, key)
	} else {
		h = sha256.New()
	}
	h.Write(body)
	var sum [sha256.Size]byte
	hexSum := hex.EncodeToString(h.Sum(sum[:0]))
	enc := make([]byte, 0, len(body)+len(hexSum))
	enc = append(enc, body[:len(body)-2]...) // drop `"}`
	enc = append(enc, hexSum...)
	return hexSum, append(enc, '"', '}')
}

// encode writes r as json.Marshal does, without reflection; Hash comes
// last.
func encode(r Record) []byte {
	b := make([]byte, 0, 256+len(r.Before)+len(r.After)+len(r.Reason))
	b = append(b, '{')
	b = jsonw.UintField(b, "seq", r.Seq)
	b = jsonw.UintField(b, "revision", r.Revision)
	b = jsonw.TimeField(b, "time", r.Time)
	b = jsonw.StringField(b, "actor", r.Actor, false)
	b = jsonw.StringField(b, "reason", r.Reason, true)
	b = jsonw.StringField(b, "action", r.Action, false)
	b = jsonw.StringField(b, "target", r.Target, false)
	b = jsonw.StringField(b, "before", r.Before, true)
	b = jsonw.StringField(b, "after", r.After, true)
	b = jsonw.StringField(b, "prev_hash", r.PrevHash, false)
	b = jsonw.String(jsonw.Key(b, "hash"), r.Hash)
	return append(b, '}')
}

// head returns the last record's sequence number and hash (zero for an
// empty trail): from HeadBucket, or, for a trail written before it
// existed, from the newest record.
func head(kv fsm.KV) (seq uint64, hash string) {
	if v := kv.Get(HeadBucket, headKey); len(v) > 8 {
		return binary.BigEndian.Uint64(v), string(v[8:])
	}
	var h struct {
		Seq  uint64 `json:"seq"`
		Hash string `json:"hash"`
	}
	kv.Scan(Bucket, nil, true, func(_, v []byte) bool {
		_ = json.Unmarshal(v, &h) // an undecodable head is Verify's to report
		return false
	})
	return h.Seq, h.Hash
}

// Head is the last record's sequence number (0 for an empty trail).
func Head(kv fsm.KV) uint64 {
	seq, _ := head(kv)
	return seq
}

func decode(v []byte) Record {
	var r Record
	if err := json.Unmarshal(v, &r); err != nil {
		// A record that does not decode is reported by Verify; readers get
		// an empty one rather than a crash.
		return Record{}
	}
	return r
}

// Append links r to the current head, hashes it and stores it. The caller
// fills Revision, Time, Actor, Reason, Action, Target, Before and After.
func Append(kv fsm.KV, key []byte, r Record) Record {
	seq, prev := head(kv)
	r.Seq, r.PrevHash = seq+1, prev
	var b []byte
	r.Hash, b = digest(key, r)
	kv.Put(Bucket, seqKey(r.Seq), b)
	kv.Put(HeadBucket, headKey, append(seqKey(r.Seq), r.Hash...))
	return r
}

// Filter selects records; empty fields match everything.
type Filter struct {
	Action string
	Actor  string
	Target string
}

func (f Filter) match(r Record) bool {
	return (f.Action == "" || f.Action == r.Action) && (f.Actor == "" || f.Actor == r.Actor) && (f.Target == "" || f.Target == r.Target)
}

// PageToken is the List page token that continues after seq.
func PageToken(seq uint64) string {
	if seq == 0 {
		return ""
	}
	return hex.EncodeToString(seqKey(seq))
}

// List returns up to pageSize matching records after the page token, oldest
// first, and the token for the next page ("" at the end).
func List(kv fsm.KV, f Filter, pageSize int, pageToken string) ([]Record, string, error) {
	var after uint64
	if pageToken != "" {
		raw, err := hex.DecodeString(pageToken)
		if err != nil || len(raw) != 8 {
			return nil, "", ErrBadPageToken
		}
		after = binary.BigEndian.Uint64(raw)
	}
	var out []Record
	more := false
	kv.Scan(Bucket, seqKey(after+1), false, func(_, v []byte) bool {
		r := decode(v)
		if !f.match(r) {
			return true
		}
		if len(out) == pageSize {
			more = true
			return false
		}
		out = append(out, r)
		return true
	})
	next := ""
	if more {
		next = hex.EncodeToString(seqKey(out[len(out)-1].Seq))
	}
	return out, next, nil
}

// VerifyResult reports the outcome of Verify.
type VerifyResult struct {
	OK          bool
	Records     uint64
	FirstBroken uint64
	Problem     string
	HeadHash    string
	// AnchorSeq is the last record retention removed (the chain is
	// verified from there).
	AnchorSeq uint64
}

// Anchor stands for the records retention moved out of the trail: the
// last one's sequence number and hash, which the first record kept links
// to, signed with the audit key so that it cannot be moved or rewritten
// without the key.
type Anchor struct {
	Seq  uint64    `json:"seq"`
	Hash string    `json:"hash"`
	Time time.Time `json:"time"` // the last removed record's time
	// Removed counts every record retention has removed so far.
	Removed uint64 `json:"removed"`
	Sig     string `json:"sig"`
}

func anchorSig(key []byte, a Anchor) string {
	a.Sig = ""
	b, _ := json.Marshal(a)
	var h hash.Hash
	if len(key) > 0 {
		h = hmac.New(sha256.New, key)
	} else {
		h = sha256.New()
	}
	h.Write([]byte("baldurd audit anchor\n"))
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

// GetAnchor returns the trail's anchor (ok false while nothing was removed).
func GetAnchor(kv fsm.KV) (Anchor, bool) {
	v := kv.Get(HeadBucket, anchorKey)
	if v == nil {
		return Anchor{}, false
	}
	var a Anchor
	if err := json.Unmarshal(v, &a); err != nil {
		return Anchor{Sig: "undecodable"}, true // Verify reports it
	}
	return a, true
}

// First is the sequence number of the oldest record kept (0 if none).
func First(kv fsm.KV) uint64 {
	var first uint64
	kv.Scan(Bucket, nil, false, func(k, _ []byte) bool {
		first = binary.BigEndian.Uint64(k)
		return false
	})
	return first
}

// RetentionDue is the last sequence number retention may remove at now:
// records older than retention, at most limit of them, and never past
// through (the records an export has taken, when one is configured; 0: no
// bound). 0 when none is due.
func RetentionDue(kv fsm.KV, now time.Time, retention time.Duration, limit int, through uint64) uint64 {
	if retention <= 0 {
		return 0
	}
	cutoff := now.Add(-retention)
	var last uint64
	n := 0
	kv.Scan(Bucket, nil, false, func(k, v []byte) bool {
		seq := binary.BigEndian.Uint64(k)
		if n == limit || (through > 0 && seq > through) || !decode(v).Time.Before(cutoff) {
			return false
		}
		last, n = seq, n+1
		return true
	})
	return last
}

// Remove deletes the records up to and including through and moves the
// anchor to the last of them. It is applied by every replica (a replicated
// command), so each computes the same anchor.
func Remove(kv fsm.KV, key []byte, through uint64) (Anchor, uint64) {
	a, _ := GetAnchor(kv)
	var last Record
	var n uint64
	var keys [][]byte
	kv.Scan(Bucket, nil, false, func(k, v []byte) bool {
		if binary.BigEndian.Uint64(k) > through {
			return false
		}
		keys = append(keys, append([]byte(nil), k...))
		last = decode(v)
		n++
		return true
	})
	if n == 0 {
		return a, 0
	}
	for _, k := range keys {
		kv.Delete(Bucket, k)
	}
	a = Anchor{Seq: last.Seq, Hash: last.Hash, Time: last.Time, Removed: a.Removed + n}
	a.Sig = anchorSig(key, a)
	b, _ := json.Marshal(a)
	kv.Put(HeadBucket, anchorKey, b)
	return a, n
}

// Verify walks the whole trail and names the first record whose sequence,
// link or hash does not check out. A trail that retention shortened starts
// at its anchor, whose signature is checked first.
func Verify(kv fsm.KV, key []byte) VerifyResult {
	res := VerifyResult{OK: true}
	var prev Record
	if a, ok := GetAnchor(kv); ok {
		if a.Sig != anchorSig(key, a) {
			return VerifyResult{FirstBroken: a.Seq, Problem: fmt.Sprintf("the anchor of the records removed by retention (through %d) does not match its signature (modified, or a different audit key)", a.Seq)}
		}
		prev = Record{Seq: a.Seq, Hash: a.Hash}
		res.HeadHash, res.AnchorSeq = a.Hash, a.Seq
	}
	kv.Scan(Bucket, nil, false, func(k, v []byte) bool {
		seq := binary.BigEndian.Uint64(k)
		var r Record
		fail := func(problem string) bool {
			res.OK, res.FirstBroken, res.Problem = false, seq, problem
			return false
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return fail(fmt.Sprintf("record %d does not decode: %v", seq, err))
		}
		res.Records++
		switch {
		case r.Seq != seq:
			return fail(fmt.Sprintf("record stored under %d claims sequence %d", seq, r.Seq))
		case r.Seq != prev.Seq+1:
			if prev.Seq == res.AnchorSeq && res.AnchorSeq > 0 {
				return fail(fmt.Sprintf("record %d follows the anchor at %d: records are missing", r.Seq, prev.Seq))
			}
			return fail(fmt.Sprintf("record %d follows %d: records are missing", r.Seq, prev.Seq))
		case r.PrevHash != prev.Hash:
			return fail(fmt.Sprintf("record %d does not link to record %d's hash", r.Seq, prev.Seq))
		case digestOf(key, r) != r.Hash:
			return fail(fmt.Sprintf("record %d's content does not match its hash (modified, or a different audit key)", r.Seq))
		}
		prev = r
		res.HeadHash = r.Hash
		return true
	})
	if !res.OK {
		return res
	}
	// The stored head names the last record written: records cut from
	// the end of the trail (or a last record rewritten with a recomputed
	// hash) no longer end where it says.
	if v := kv.Get(HeadBucket, headKey); len(v) > 8 {
		seq, hash := binary.BigEndian.Uint64(v[:8]), string(v[8:])
		switch {
		case seq != prev.Seq:
			res.OK, res.FirstBroken = false, prev.Seq+1
			res.Problem = fmt.Sprintf("the trail ends at record %d but its head says %d: records were cut from the end", prev.Seq, seq)
		case hash != prev.Hash:
			res.OK, res.FirstBroken = false, seq
			res.Problem = fmt.Sprintf("record %d's hash differs from the head's: the last record was rewritten", seq)
		}
	}
	return res
}

// VerifyLines checks a trail exported as JSON lines (baldurctl audit
// export): consecutive sequence numbers, each record linked to the one
// before and hashed under key. The first record's link is taken as the
// starting point (AnchorSeq is the record before it).
func VerifyLines(r io.Reader, key []byte) (VerifyResult, error) {
	res := VerifyResult{OK: true}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	var prev Record
	first := true
	for line := 1; sc.Scan(); line++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var rec Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return res, fmt.Errorf("line %d: %v", line, err)
		}
		if first {
			prev, first = Record{Seq: rec.Seq - 1, Hash: rec.PrevHash}, false
			res.AnchorSeq = prev.Seq
		}
		problem := ""
		switch {
		case rec.Seq != prev.Seq+1:
			problem = fmt.Sprintf("record %d follows %d: records are missing", rec.Seq, prev.Seq)
		case rec.PrevHash != prev.Hash:
			problem = fmt.Sprintf("record %d does not link to record %d's hash", rec.Seq, prev.Seq)
		case digestOf(key, rec) != rec.Hash:
			problem = fmt.Sprintf("record %d's content does not match its hash (modified, or a different audit key)", rec.Seq)
		}
		if problem != "" {
			res.OK, res.FirstBroken, res.Problem = false, rec.Seq, problem
			return res, nil
		}
		res.Records++
		res.HeadHash = rec.Hash
		prev = rec
	}
	return res, sc.Err()
}

// HashOf is the hash Append gives r under key (for tools and tests that
// rebuild a record).
func HashOf(key []byte, r Record) string { return digestOf(key, r) }
