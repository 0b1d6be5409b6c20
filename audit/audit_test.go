package audit_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/audit"
	"github.com/baldurhq/baldurd/raftstore"
	bolt "go.etcd.io/bbolt"
)

func openDB(t *testing.T) *bolt.DB {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "a.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.Update(func(tx *bolt.Tx) error {
		for _, b := range audit.Buckets() {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	})
	return db
}

func fill(t *testing.T, db *bolt.DB, key []byte, n int) {
	db.Update(func(tx *bolt.Tx) error {
		kv := raftstore.NewKV(tx)
		for i := 1; i <= n; i++ {
			audit.Append(kv, key, audit.Record{Revision: uint64(10 + i), Time: time.Unix(int64(i), 0).UTC(), Actor: []string{"alice", "bob"}[i%2],
				Action: []string{"emergency.trigger", "emergency.release"}[i%2], Target: "emergency/global", After: `{"n":1}`})
		}
		return nil
	})
}

func verify(db *bolt.DB, key []byte) audit.VerifyResult {
	var r audit.VerifyResult
	db.View(func(tx *bolt.Tx) error { r = audit.Verify(raftstore.NewKV(tx), key); return nil })
	return r
}

func edit(t *testing.T, db *bolt.DB, fn func(b *bolt.Bucket)) {
	if err := db.Update(func(tx *bolt.Tx) error { fn(tx.Bucket(audit.Bucket)); return nil }); err != nil {
		t.Fatal(err)
	}
}

func key(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func TestVerifyNamesTheFirstBrokenRecord(t *testing.T) {
	hmacKey := []byte("0123456789abcdef0123")
	cases := []struct {
		name    string
		tamper  func(b *bolt.Bucket)
		key     []byte
		broken  uint64
		problem string
	}{
		{"edited field", func(b *bolt.Bucket) {
			var r map[string]any
			json.Unmarshal(b.Get(key(4)), &r)
			r["actor"] = "mallory"
			raw, _ := json.Marshal(r)
			b.Put(key(4), raw)
		}, nil, 4, "does not match its hash"},
		{"deleted record", func(b *bolt.Bucket) { b.Delete(key(3)) }, nil, 4, "missing"},
		{"rehashed edit without the key", func(b *bolt.Bucket) {
			var r audit.Record
			json.Unmarshal(b.Get(key(2)), &r)
			r.Reason = "forged"
			raw, _ := json.Marshal(r)
			b.Put(key(2), raw)
		}, hmacKey, 2, "does not match its hash"},
		{"undecodable", func(b *bolt.Bucket) { b.Put(key(5), []byte("{")) }, nil, 5, "does not decode"},
		{"renumbered", func(b *bolt.Bucket) { v := b.Get(key(6)); b.Delete(key(6)); b.Put(key(9), v) }, nil, 9, "claims sequence"},
		{"tail cut", func(b *bolt.Bucket) { b.Delete(key(6)); b.Delete(key(5)) }, nil, 5, "cut from the end"},
		{"last record rewritten with a recomputed hash (no key)", func(b *bolt.Bucket) {
			var r audit.Record
			json.Unmarshal(b.Get(key(6)), &r)
			r.Actor = "mallory"
			r.Hash = audit.HashOf(nil, r)
			raw, _ := json.Marshal(r)
			b.Put(key(6), raw)
		}, nil, 6, "last record was rewritten"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			db := openDB(t)
			fill(t, db, tc.key, 6)
			if r := verify(db, tc.key); !r.OK || r.Records != 6 {
				t.Fatalf("intact chain: %+v", r)
			}
			edit(t, db, tc.tamper)
			r := verify(db, tc.key)
			if r.OK || r.FirstBroken != tc.broken || !strings.Contains(r.Problem, tc.problem) {
				t.Fatalf("got %+v, want broken at %d (%q)", r, tc.broken, tc.problem)
			}
		})
	}
	t.Run("wrong key", func(t *testing.T) {
		db := openDB(t)
		fill(t, db, hmacKey, 3)
		if r := verify(db, []byte("another-key-of-16+")); r.OK || r.FirstBroken != 1 {
			t.Fatalf("verify with another key: %+v", r)
		}
	})
}

func TestListFiltersAndPages(t *testing.T) {
	db := openDB(t)
	fill(t, db, nil, 25)
	var all []audit.Record
	token := ""
	for pages := 0; ; pages++ {
		var recs []audit.Record
		var next string
		db.View(func(tx *bolt.Tx) (err error) {
			recs, next, err = audit.List(raftstore.NewKV(tx), audit.Filter{Actor: "bob"}, 5, token)
			return err
		})
		all = append(all, recs...)
		if next == "" {
			break
		}
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		token = next
	}
	if len(all) != 13 {
		t.Fatalf("bob has %d records, want 13", len(all))
	}
	for i, r := range all {
		if r.Actor != "bob" || (i > 0 && r.Seq <= all[i-1].Seq) {
			t.Fatalf("record %d: %+v", i, r)
		}
	}
	db.View(func(tx *bolt.Tx) error {
		if _, _, err := audit.List(raftstore.NewKV(tx), audit.Filter{}, 5, "not-hex"); !errors.Is(err, audit.ErrBadPageToken) {
			t.Fatalf("bad token: %v", err)
		}
		return nil
	})
}

// A trail written before the head bucket existed: the next append finds the
// head from the newest record, and the chain continues unbroken.
func TestAppendContinuesATrailWithoutAHeadKey(t *testing.T) {
	db := openDB(t)
	fill(t, db, nil, 3)
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(audit.HeadBucket).Delete([]byte("head")) }); err != nil {
		t.Fatal(err)
	}
	fill(t, db, nil, 2)
	r := verify(db, nil)
	if !r.OK || r.Records != 5 {
		t.Fatalf("verify after appending without a head key: %+v", r)
	}
	var head []byte
	db.View(func(tx *bolt.Tx) error {
		head = append(head, tx.Bucket(audit.HeadBucket).Get([]byte("head"))...)
		return nil
	})
	if len(head) < 8 || binary.BigEndian.Uint64(head) != 5 || string(head[8:]) != r.HeadHash {
		t.Fatalf("head key %q, want seq 5 and hash %s", head, r.HeadHash)
	}
}

// Retention removes old records behind a signed anchor; the rest of the
// chain verifies from it, and the anchor cannot be moved or rewritten
// without the key.
func TestRetentionAnchorsTheChain(t *testing.T) {
	hmacKey := []byte("0123456789abcdef0123")
	db := openDB(t)
	fill(t, db, hmacKey, 10) // record i at unix second i
	var due uint64
	db.View(func(tx *bolt.Tx) error {
		kv := raftstore.NewKV(tx)
		if got := audit.RetentionDue(kv, time.Unix(100, 0), 94*time.Second, 100, 0); got != 5 {
			t.Errorf("due at 100s with 94s retention: %d, want 5 (records 1..5 are older than 6s)", got)
		}
		if got := audit.RetentionDue(kv, time.Unix(100, 0), 94*time.Second, 3, 0); got != 3 {
			t.Errorf("due with a limit of 3: %d", got)
		}
		if got := audit.RetentionDue(kv, time.Unix(100, 0), 94*time.Second, 100, 2); got != 2 {
			t.Errorf("due with the export at 2: %d", got)
		}
		if got := audit.RetentionDue(kv, time.Unix(100, 0), 0, 100, 0); got != 0 {
			t.Errorf("retention 0 keeps all: %d", got)
		}
		due = audit.RetentionDue(kv, time.Unix(100, 0), 94*time.Second, 100, 0)
		return nil
	})
	db.Update(func(tx *bolt.Tx) error {
		kv := raftstore.NewKV(tx)
		a, n := audit.Remove(kv, hmacKey, due)
		if n != 5 || a.Seq != 5 || a.Removed != 5 || a.Sig == "" {
			t.Errorf("remove: %+v %d", a, n)
		}
		if audit.First(kv) != 6 || audit.Head(kv) != 10 {
			t.Errorf("first %d head %d", audit.First(kv), audit.Head(kv))
		}
		// Appending goes on from the head.
		audit.Append(kv, hmacKey, audit.Record{Time: time.Unix(11, 0).UTC(), Actor: "a", Action: "x", Target: "y"})
		return nil
	})
	if r := verify(db, hmacKey); !r.OK || r.Records != 6 || r.AnchorSeq != 5 {
		t.Fatalf("after retention: %+v", r)
	}
	if r := verify(db, []byte("another key 0123456")); r.OK || !strings.Contains(r.Problem, "anchor") {
		t.Fatalf("anchor under another key: %+v", r)
	}
	// A second removal extends the anchor and counts every removed record.
	db.Update(func(tx *bolt.Tx) error {
		a, n := audit.Remove(raftstore.NewKV(tx), hmacKey, 7)
		if n != 2 || a.Seq != 7 || a.Removed != 7 {
			t.Errorf("second remove: %+v %d", a, n)
		}
		return nil
	})
	if r := verify(db, hmacKey); !r.OK || r.AnchorSeq != 7 {
		t.Fatalf("after the second removal: %+v", r)
	}
	// Cutting records after the anchor is seen; so is moving the anchor
	// forward over them without the key.
	edit(t, db, func(b *bolt.Bucket) { b.Delete(key(8)) })
	if r := verify(db, hmacKey); r.OK || !strings.Contains(r.Problem, "follows the anchor") {
		t.Fatalf("record cut after the anchor: %+v", r)
	}
	db.Update(func(tx *bolt.Tx) error {
		h := tx.Bucket(audit.HeadBucket)
		var a audit.Anchor
		json.Unmarshal(h.Get([]byte("anchor")), &a)
		a.Seq = 8
		raw, _ := json.Marshal(a)
		return h.Put([]byte("anchor"), raw)
	})
	if r := verify(db, hmacKey); r.OK || !strings.Contains(r.Problem, "does not match its signature") {
		t.Fatalf("anchor moved without the key: %+v", r)
	}
}
