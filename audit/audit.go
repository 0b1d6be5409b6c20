// Package audit keeps the hash-chained audit trail. server/apply.go appends
// one record per state change in the same transaction as the change; each
// record's hash covers its content and the previous record's hash, keyed
// with an HMAC when the cluster has an audit key, so any edit, removal or
// reordering of stored records is detected by [Verify].
//
// Imports: the standard library and internal/jsonw only.
package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
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
}

// Verify walks the whole trail and names the first record whose sequence,
// link or hash does not check out.
func Verify(kv fsm.KV, key []byte) VerifyResult {
	res := VerifyResult{OK: true}
	var prev Record
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

// HashOf is the hash Append gives r under key (for tools and tests that
// rebuild a record).
func HashOf(key []byte, r Record) string { return digestOf(key, r) }
