package dlq_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

type machine struct {
	t     *testing.T
	db    *bolt.DB
	index uint64
	now   time.Time
}

func newMachine(t *testing.T) *machine {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.Update(func(tx *bolt.Tx) error {
		for _, b := range dlq.Buckets() {
			tx.CreateBucket(b)
		}
		return nil
	})
	return &machine{t: t, db: db, now: t0}
}

func (m *machine) apply(c *raftv1.DLQCommand) (dlq.Result, error) {
	m.index++
	m.now = m.now.Add(time.Millisecond)
	var r dlq.Result
	var err error
	m.db.Update(func(tx *bolt.Tx) error {
		r, err = dlq.Apply(raftstore.NewKV(tx), fsm.Meta{Index: m.index, Time: m.now, Actor: "op", Reason: "r"}, c)
		return nil
	})
	return r, err
}

func (m *machine) store(id, domain string, max, perDomain int64, strategy string) (dlq.Result, error) {
	e, err := dlq.Prepare(dlq.Entry{ID: id, Domain: domain, FailureType: "MAX_RETRIES_TIMEOUT", MaxRetries: 2, ExpiresAt: m.now.Add(72 * time.Hour)}, dlq.DefaultLimits())
	if err != nil {
		return dlq.Result{}, err
	}
	raw, _ := json.Marshal(e)
	return m.apply(&raftv1.DLQCommand{Op: raftv1.DLQCommand_STORE, EntryJson: raw, MaxSize: max, MaxPerDomain: perDomain, OverflowStrategy: strategy})
}

func (m *machine) get(id string) dlq.Entry {
	var e dlq.Entry
	m.db.View(func(tx *bolt.Tx) error { e, _ = dlq.Get(raftstore.NewKV(tx), id); return nil })
	return e
}

func (m *machine) stats() dlq.Stats {
	var s dlq.Stats
	m.db.View(func(tx *bolt.Tx) error { s = dlq.GetStats(raftstore.NewKV(tx)); return nil })
	return s
}

func op(o raftv1.DLQCommand_Op, id string) *raftv1.DLQCommand {
	return &raftv1.DLQCommand{Op: o, Id: id}
}

func acquire(id, worker string) *raftv1.DLQCommand {
	return &raftv1.DLQCommand{Op: raftv1.DLQCommand_ACQUIRE, Id: id, Worker: worker, LeaseNanos: int64(30 * time.Second)}
}

func complete(id, worker string, ok bool) *raftv1.DLQCommand {
	return &raftv1.DLQCommand{Op: raftv1.DLQCommand_COMPLETE, Id: id, Worker: worker, Success: ok, Note: "handler said no"}
}

func TestLifecycle(t *testing.T) {
	m := newMachine(t)
	if _, err := m.store("e1", "payment", 0, 0, ""); err != nil {
		t.Fatal(err)
	}
	if r, _ := m.store("e1", "payment", 0, 0, ""); r.Changed {
		t.Fatal("a retried store created a second entry")
	}
	steps := []struct {
		name   string
		cmd    *raftv1.DLQCommand
		status dlq.Status
		err    bool
	}{
		{"acquire", acquire("e1", "w1"), dlq.Replaying, false},
		{"second worker cannot acquire", acquire("e1", "w2"), dlq.Replaying, true},
		{"complete by another worker refused", complete("e1", "w2", true), dlq.Replaying, true},
		{"failure returns to PENDING", complete("e1", "w1", false), dlq.Pending, false},
		{"acquire again", acquire("e1", "w1"), dlq.Replaying, false},
		{"second failure exhausts the budget", complete("e1", "w1", false), dlq.RequiresReview, false},
		{"no third attempt", acquire("e1", "w1"), dlq.RequiresReview, true},
		{"force-redrive resets the budget", op(raftv1.DLQCommand_REDRIVE, "e1"), dlq.Pending, false},
		{"acquire after redrive", acquire("e1", "w3"), dlq.Replaying, false},
		{"resolve while replaying refused", op(raftv1.DLQCommand_RESOLVE, "e1"), dlq.Replaying, true},
		{"success resolves", complete("e1", "w3", true), dlq.Resolved, false},
		{"resolve twice refused", op(raftv1.DLQCommand_RESOLVE, "e1"), dlq.Resolved, true},
		{"redrive of a resolved entry refused", op(raftv1.DLQCommand_REDRIVE, "e1"), dlq.Resolved, true},
	}
	for _, s := range steps {
		_, err := m.apply(s.cmd)
		if (err != nil) != s.err || m.get("e1").Status != s.status {
			t.Fatalf("%s: err %v, status %s; want err=%v status %s", s.name, err, m.get("e1").Status, s.err, s.status)
		}
		var ce *dlq.ConflictError
		if err != nil && (!errors.As(err, &ce) || ce.Current != s.status) {
			t.Fatalf("%s: error %v should be a conflict naming %s", s.name, err, s.status)
		}
	}
	e := m.get("e1")
	if e.Metadata["previous_total_retries"] != "2" || e.Metadata["force_redrive_count"] != "1" || e.ResolutionType != "manual_replay" {
		t.Fatalf("forensics: %+v", e)
	}
	if _, err := m.apply(acquire("nope", "w")); !errors.Is(err, dlq.ErrNotFound) {
		t.Fatalf("unknown id: %v", err)
	}
}

func TestStaleLeaseExpiryArchiveAndPurge(t *testing.T) {
	m := newMachine(t)
	m.store("a", "payment", 0, 0, "")
	m.store("b", "payment", 0, 0, "")
	m.apply(acquire("a", "dead-worker"))
	lease := m.get("a").ReplayLeaseUntil
	rel := &raftv1.DLQCommand{Op: raftv1.DLQCommand_RELEASE_STALE, Id: "a", ReplayLeaseUntilUnixNano: uint64(lease.UnixNano())}
	if r, _ := m.apply(rel); r.Changed {
		t.Fatal("lease released before it expired")
	}
	m.now = lease
	if r, _ := m.apply(rel); !r.Changed || m.get("a").Status != dlq.Pending {
		t.Fatalf("stale lease not released: %+v", m.get("a"))
	}
	if r, _ := m.apply(rel); r.Changed {
		t.Fatal("released twice")
	}
	m.now = t0.Add(73 * time.Hour)
	var due []dlq.Due
	m.db.View(func(tx *bolt.Tx) error {
		due = dlq.DueWork(raftstore.NewKV(tx), m.now, 30*24*time.Hour, 100)
		return nil
	})
	if len(due) != 2 || due[0].Op != raftv1.DLQCommand_EXPIRE {
		t.Fatalf("due: %+v", due)
	}
	m.apply(op(raftv1.DLQCommand_EXPIRE, "b"))
	if m.get("b").Status != dlq.Expired {
		t.Fatal("not expired")
	}
	m.apply(op(raftv1.DLQCommand_RESOLVE, "a"))
	arch := &raftv1.DLQCommand{Op: raftv1.DLQCommand_ARCHIVE, Id: "a", OlderThanNanos: int64(24 * time.Hour)}
	if r, _ := m.apply(arch); r.Changed {
		t.Fatal("archived a fresh resolution")
	}
	m.now = m.now.Add(25 * time.Hour)
	m.apply(arch)
	if m.get("a").Status != dlq.Archived {
		t.Fatal("not archived")
	}
	if r, _ := m.apply(&raftv1.DLQCommand{Op: raftv1.DLQCommand_PURGE, Ids: []string{"a", "b"}}); !r.Changed {
		t.Fatal("purge did nothing")
	}
	if s := m.stats(); s.Total != 1 || s.ByStatus["EXPIRED"] != 1 || s.ByStatus["ARCHIVED"] != 0 {
		t.Fatalf("stats after purge (only ARCHIVED goes): %+v", s)
	}
}

func TestOverflowStrategies(t *testing.T) {
	m := newMachine(t)
	for i := 0; i < 3; i++ {
		if _, err := m.store(fmt.Sprintf("p%d", i), "payment", 5, 3, "drop_oldest"); err != nil {
			t.Fatal(err)
		}
	}
	m.apply(acquire("p0", "w")) // the oldest is being replayed: never evicted
	r, err := m.store("p3", "payment", 5, 3, "drop_oldest")
	if err != nil || len(r.Evicted) != 1 || r.Evicted[0] != "p1" {
		t.Fatalf("per-domain overflow: %v %+v", err, r.Evicted)
	}
	m.store("o1", "orders", 5, 3, "drop_oldest")
	m.store("o2", "orders", 5, 3, "drop_oldest")
	r, _ = m.store("o3", "orders", 5, 3, "drop_oldest") // total 6 > 5
	if len(r.Evicted) != 1 || r.Evicted[0] != "p2" {
		t.Fatalf("total overflow evicted %v, want the oldest evictable (p2)", r.Evicted)
	}
	if _, err := m.store("o4", "orders", 5, 3, "reject"); !errors.Is(err, dlq.ErrCapacityExceeded) {
		t.Fatalf("reject strategy: %v", err)
	}
	if s := m.stats(); s.Total != 5 || s.ByDomain["orders"] != 3 || s.ByDomain["payment"] != 2 {
		t.Fatalf("stats: %+v", s)
	}
}

func TestPrepareMasksTruncatesAndKeepsBadDomains(t *testing.T) {
	big := `{"card_number":"4111","items":"` + strings.Repeat("x", 5000) + `"}`
	e, err := dlq.Prepare(dlq.Entry{ID: "01JABC", Domain: "Payment API!", FailureType: "X",
		RequestData: json.RawMessage(big), SnapshotData: json.RawMessage(`{"user":{"password":"hunter2","name":"a"}}`),
		Metadata: map[string]string{"Authorization": "Bearer x", "trace": "t1"}}, dlq.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	if e.Domain != dlq.FallbackDomain || e.Metadata["original_domain"] != "Payment API!" || e.Metadata["domain_reject_reason"] != "invalid_charset" {
		t.Fatalf("domain: %q %v", e.Domain, e.Metadata)
	}
	var req map[string]any
	json.Unmarshal(e.RequestData, &req)
	if req["_truncated"] != true || req["original_size"] == nil || !e.Truncated || strings.Contains(string(e.RequestData), "4111") {
		t.Fatalf("truncation (after masking): %s", e.RequestData)
	}
	if strings.Contains(string(e.SnapshotData), "hunter2") || e.Metadata["Authorization"] != "***" || e.Metadata["trace"] != "t1" {
		t.Fatalf("masking: %s %v", e.SnapshotData, e.Metadata)
	}
	// Keys spelled with other cases or with escapes are masked too; a
	// document with nothing to mask keeps its content (compacted).
	for in, want := range map[string]string{
		`{"a": {"PassWord": "x1", "n": [1, {"CVV": 123}]}}`:            `{"a":{"PassWord":"***","n":[1,{"CVV":"***"}]}}`,
		`{"p\u0061ssword": "x1"}`:                                      `{"password":"***"}`,
		`{"order": "o-1", "note": "my password is safe", "n": [1, 2]}`: `{"order":"o-1","note":"my password is safe","n":[1,2]}`,
	} {
		got, err := dlq.Prepare(dlq.Entry{ID: "m", FailureType: "X", Domain: "payment", RequestData: json.RawMessage(in)}, dlq.DefaultLimits())
		if err != nil || string(got.RequestData) != want {
			t.Errorf("masking %s = %s (%v), want %s", in, got.RequestData, err, want)
		}
	}
	if d, _, _ := dlq.NormalizeDomain("payment-api"); d != "payment_api" {
		t.Fatalf("canonicalized domain %q", d)
	}
	for _, bad := range []dlq.Entry{{ID: "", FailureType: "x"}, {ID: "a b", FailureType: "x"}, {ID: "ok"}, {ID: "ok", FailureType: "x", RequestData: json.RawMessage(`{`)}} {
		if _, err := dlq.Prepare(bad, dlq.DefaultLimits()); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

func TestListPagesInOrderWithFilters(t *testing.T) {
	m := newMachine(t)
	for i := 0; i < 25; i++ {
		m.store(fmt.Sprintf("e%02d", i), []string{"payment", "orders"}[i%2], 0, 0, "")
	}
	m.apply(acquire("e00", "w"))
	list := func(f dlq.Filter, size int) (ids []string) {
		token := ""
		for {
			var page []dlq.Entry
			var err error
			m.db.View(func(tx *bolt.Tx) error { page, token, err = dlq.List(raftstore.NewKV(tx), f, size, token); return nil })
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page {
				ids = append(ids, e.ID)
			}
			if token == "" {
				return ids
			}
		}
	}
	if all := list(dlq.Filter{}, 7); len(all) != 25 || all[0] != "e00" || all[24] != "e24" {
		t.Fatalf("all: %v", all)
	}
	if pay := list(dlq.Filter{Domain: "payment"}, 4); len(pay) != 13 {
		t.Fatalf("payment: %v", pay)
	}
	if pend := list(dlq.Filter{Domain: "payment", Status: dlq.Pending}, 5); len(pend) != 12 || pend[0] != "e02" {
		t.Fatalf("payment pending: %v", pend)
	}
	m.db.View(func(tx *bolt.Tx) error {
		if _, _, err := dlq.List(raftstore.NewKV(tx), dlq.Filter{}, 5, "zz"); !errors.Is(err, dlq.ErrBadPageToken) {
			t.Fatalf("bad token: %v", err)
		}
		return nil
	})
}

func TestAdaptiveBatchSizing(t *testing.T) {
	a := dlq.NewAdaptiveBatch(0)
	steps := []struct{ total, failed, want int }{
		{50, 10, 40}, // 20 % failed: ×0.8
		{40, 20, 32},
		{32, 0, 32}, {32, 0, 32}, {32, 0, 37}, // three perfect: +5
		{37, 1, 37}, // partial success: streak reset
		{37, 0, 37}, {37, 0, 37}, {37, 0, 42},
		{42, 42, 33}, {33, 33, 26}, {26, 26, 20}, {20, 20, 16}, {16, 16, 12}, {12, 12, 10}, {10, 10, 10}, // floor 10
	}
	for i, s := range steps {
		if got := a.Observe(s.total, s.failed); got != s.want {
			t.Fatalf("step %d (%d/%d failed): size %d, want %d", i, s.failed, s.total, got, s.want)
		}
	}
	b := dlq.NewAdaptiveBatch(0)
	for i := 0; i < 60; i++ {
		b.Observe(10, 0)
	}
	if b.Size != 100 {
		t.Fatalf("growth cap: %d, want 100", b.Size)
	}
	if c := dlq.NewAdaptiveBatch(7); c.Size != 7 {
		t.Fatalf("max items below the initial size: %d", c.Size)
	}
}

// A STORE built by StoreCommand (the server's way) is kept as sent with the
// revision filled in; any other STORE is decoded and normalised. Both must
// leave the same entry.
func TestStoreEncodingsLeaveTheSameEntry(t *testing.T) {
	m := newMachine(t)
	base, err := dlq.Prepare(dlq.Entry{ID: "x", Domain: "payment", FailureType: "MAX_RETRIES_TIMEOUT", MaxRetries: 3,
		RequestData: json.RawMessage(`{"order": "o-1", "card": "4111", "n": [1, 2]}`), Metadata: map[string]string{"origin_trace_id": "t-1"},
		ExpiresAt: t0.Add(72 * time.Hour)}, withMask(dlq.DefaultLimits(), "card"))
	if err != nil {
		t.Fatal(err)
	}
	fast, slow, retried := base, base, base
	fast.ID, slow.ID, retried.ID = "fast", "slow", "fast"
	rf, err := m.apply(dlq.StoreCommand(fast, m.now.Add(time.Millisecond), dlq.Limits{})) // at the command's time
	if err != nil || !rf.Changed {
		t.Fatal(rf, err)
	}
	if rf.Entry.ID != "" {
		t.Fatal("a STORE built by StoreCommand was decoded in the apply")
	}
	slow.Status, slow.RetryCount, slow.Revision = dlq.Resolved, 7, 99 // ignored: a store makes a fresh PENDING entry
	raw, _ := json.Marshal(slow)
	if _, err := m.apply(&raftv1.DLQCommand{Op: raftv1.DLQCommand_STORE, EntryJson: raw}); err != nil {
		t.Fatal(err)
	}
	// A retried store changes nothing.
	retried.ErrorMessage = "second attempt"
	if r, err := m.apply(dlq.StoreCommand(retried, m.now.Add(time.Millisecond), dlq.Limits{})); err != nil || r.Changed || r.Entry.Revision != 1 {
		t.Fatalf("retried store: %+v %v", r, err)
	}
	got := map[string]dlq.Entry{"fast": m.get("fast"), "slow": m.get("slow")}
	for i, id := range []string{"fast", "slow"} {
		e := got[id]
		want := base
		want.ID, want.Status, want.Revision = id, dlq.Pending, uint64(i+1)
		want.CreatedAt = t0.Add(time.Duration(i+1) * time.Millisecond)
		want.UpdatedAt = want.CreatedAt
		a, _ := json.Marshal(e)
		b, _ := json.Marshal(want)
		if string(a) != string(b) {
			t.Errorf("%s stored as\n%s\nwant\n%s", id, a, b)
		}
	}
	if rd := string(got["fast"].RequestData); !strings.Contains(rd, `"order":"o-1"`) || strings.Contains(rd, "4111") {
		t.Errorf("request_data as stored: %s", rd)
	}
	// The apply result of the undecoded path decodes to the stored entry.
	re, err := rf.StoredEntry()
	a, _ := json.Marshal(re)
	b, _ := json.Marshal(got["fast"])
	if err != nil || string(a) != string(b) {
		t.Fatalf("StoredEntry = %s (%v), stored %s", a, err, b)
	}
	// Indexes and counters agree for both paths.
	if st := m.stats(); st.Total != 2 || st.ByStatus["PENDING"] != 2 || st.ByDomain["payment"] != 2 {
		t.Fatalf("stats %+v", st)
	}
	var page []dlq.Entry
	m.db.View(func(tx *bolt.Tx) error {
		page, _, _ = dlq.List(raftstore.NewKV(tx), dlq.Filter{Domain: "payment", Status: dlq.Pending}, 10, "")
		return nil
	})
	if len(page) != 2 || page[0].ID != "fast" || page[1].ID != "slow" {
		t.Fatalf("listed %v", page)
	}
}

func withMask(l dlq.Limits, fields ...string) dlq.Limits {
	l.SensitiveFields = fields
	return l
}

// Prepare validates and compacts documents from anywhere; PrepareCompact
// takes encoding/json's output as it is unless something must be masked.
func TestPrepareCompactKeepsEncoderOutput(t *testing.T) {
	lim := withMask(dlq.DefaultLimits(), "card")
	e := dlq.Entry{ID: "x", Domain: "payment", FailureType: "X", RequestData: json.RawMessage(`{"order": "o-1"}`)}
	p, err := dlq.Prepare(e, lim)
	if err != nil || string(p.RequestData) != `{"order":"o-1"}` {
		t.Fatalf("Prepare: %s %v", p.RequestData, err)
	}
	e.RequestData = json.RawMessage(`{"order":`)
	if _, err := dlq.Prepare(e, lim); err == nil || !strings.Contains(err.Error(), "request_data") {
		t.Fatalf("Prepare of a broken document: %v", err)
	}
	sent, _ := json.Marshal(map[string]any{"order": "o-1", "n": []int{1, 2}})
	e.RequestData = sent
	p, err = dlq.PrepareCompact(e, lim)
	if err != nil || &p.RequestData[0] != &sent[0] || len(p.RequestData) != len(sent) {
		t.Fatalf("PrepareCompact copied or changed %s: %s %v", sent, p.RequestData, err)
	}
	e.RequestData, _ = json.Marshal(map[string]any{"order": "o-1", "Card": "4111"})
	p, err = dlq.PrepareCompact(e, lim)
	if err != nil || string(p.RequestData) != `{"Card":"***","order":"o-1"}` {
		t.Fatalf("PrepareCompact with a sensitive key: %s %v", p.RequestData, err)
	}
}

// A STORE_BATCH applies its stores in order, each at its own time and for
// its own caller; a refused store refuses only itself.
func TestStoreBatch(t *testing.T) {
	m := newMachine(t)
	lim := dlq.DefaultLimits()
	lim.MaxPerDomain, lim.OverflowStrategy = 100, "reject"
	for i := 0; i < 100; i++ { // fill domain "full"
		if _, err := m.store(fmt.Sprintf("f%03d", i), "full", 0, 100, "reject"); err != nil {
			t.Fatal(err)
		}
	}
	sub := func(id, domain, actor string, at time.Time) *raftv1.DLQCommand {
		e, err := dlq.PrepareCompact(dlq.Entry{ID: id, Domain: domain, FailureType: "X"}, lim)
		if err != nil {
			t.Fatal(err)
		}
		c := dlq.StoreCommand(e, at, lim)
		c.Actor, c.TimeUnixNano = actor, at.UnixNano()
		return c
	}
	t1, t2 := t0.Add(time.Hour), t0.Add(time.Hour+time.Second)
	batch := &raftv1.DLQCommand{Op: raftv1.DLQCommand_STORE_BATCH, Stores: []*raftv1.DLQCommand{
		sub("b2", "payment", "alice", t2), // later time first: the index follows each store's time
		sub("b1", "payment", "bob", t1),
		{Op: raftv1.DLQCommand_RESOLVE, Id: "f000"},
		sub("b1", "payment", "carol", t2), // the same id again: the first stands
		sub("x1", "full", "dave", t2),     // over the domain's limit
	}}
	r, err := m.apply(batch)
	if err != nil || len(r.Batch) != 5 {
		t.Fatalf("batch: %+v %v", r, err)
	}
	it := r.Batch
	if !it[0].Result.Changed || it[0].Err != nil || it[0].Result.Actor != "alice" || !it[1].Result.Changed || it[1].Result.Actor != "bob" {
		t.Fatalf("stores: %+v %+v", it[0], it[1])
	}
	var arg *fsm.ArgumentError
	if !errors.As(it[2].Err, &arg) || arg.Field() != "stores" {
		t.Fatalf("a non-store in a batch: %v", it[2].Err)
	}
	if it[3].Err != nil || it[3].Result.Changed {
		t.Fatalf("second store of b1: %+v", it[3])
	}
	if !errors.Is(it[4].Err, dlq.ErrCapacityExceeded) {
		t.Fatalf("store over the limit: %v", it[4].Err)
	}
	b1, b2 := m.get("b1"), m.get("b2")
	if !b1.CreatedAt.Equal(t1) || !b2.CreatedAt.Equal(t2) || b1.Revision != m.index || b2.Revision != m.index {
		t.Fatalf("b1 %v rev %d, b2 %v rev %d (batch index %d)", b1.CreatedAt, b1.Revision, b2.CreatedAt, b2.Revision, m.index)
	}
	if st := m.stats(); st.ByDomain["payment"] != 2 || st.ByDomain["full"] != 100 || st.Total != 102 {
		t.Fatalf("stats %+v", st)
	}
	var page []dlq.Entry
	m.db.View(func(tx *bolt.Tx) error {
		page, _, _ = dlq.List(raftstore.NewKV(tx), dlq.Filter{Domain: "payment"}, 10, "")
		return nil
	})
	if len(page) != 2 || page[0].ID != "b1" || page[1].ID != "b2" {
		t.Fatalf("listed %v, want b1 then b2 (by created time)", page)
	}
}

// CheckID accepts exactly what the documented pattern does.
func TestCheckIDMatchesThePattern(t *testing.T) {
	pattern := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)
	cases := []string{"", "a", "0", "-a", ".a", "a-b.c_d:e", "01JABCDEF", strings.Repeat("a", 64), strings.Repeat("a", 65),
		"a b", "a/b", "é", "a\x00", "018f2a3c-7d4e-7b00-8000-0123456789ab"}
	rnd := rand.New(rand.NewPCG(1, 2))
	alphabet := "aZ09._:-/ é\x00"
	for i := 0; i < 5000; i++ {
		b := make([]byte, rnd.IntN(70))
		for j := range b {
			b[j] = alphabet[rnd.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for _, id := range cases {
		if got, want := dlq.CheckID(id) == nil, pattern.MatchString(id); got != want {
			t.Fatalf("CheckID(%q) accepted = %v, pattern says %v", id, got, want)
		}
	}
}

// A replay's resolution says what started it: a worker on its own, an
// operator, or a batch replay; a failed attempt forgets the origin.
func TestReplayOriginIsRecorded(t *testing.T) {
	m := newMachine(t)
	for _, id := range []string{"auto", "man", "bat"} {
		if _, err := m.store(id, "payment", 100, 100, "drop_oldest"); err != nil {
			t.Fatal(err)
		}
	}
	run := func(id string) dlq.Entry {
		t.Helper()
		if _, err := m.apply(acquire(id, "w")); err != nil {
			t.Fatal(err)
		}
		if _, err := m.apply(complete(id, "w", true)); err != nil {
			t.Fatal(err)
		}
		return m.get(id)
	}
	if e := run("auto"); e.ReplayOrigin != dlq.OriginAutomatic || e.ResolutionType != "automatic_replay" {
		t.Fatalf("worker on its own: %s / %s", e.ReplayOrigin, e.ResolutionType)
	}
	// A failed attempt, then an operator's replay.
	if _, err := m.apply(acquire("man", "w")); err != nil {
		t.Fatal(err)
	}
	if _, err := m.apply(complete("man", "w", false)); err != nil {
		t.Fatal(err)
	}
	if e := m.get("man"); e.ReplayOrigin != "" {
		t.Fatalf("origin kept after a failed attempt: %q", e.ReplayOrigin)
	}
	if _, err := m.apply(op(raftv1.DLQCommand_REPLAY, "man")); err != nil {
		t.Fatal(err)
	}
	if e := run("man"); e.ResolutionType != "manual_replay" {
		t.Fatalf("operator's replay: %s", e.ResolutionType)
	}
	batch := op(raftv1.DLQCommand_REPLAY, "bat")
	batch.ResolutionType = dlq.OriginBatch
	if _, err := m.apply(batch); err != nil {
		t.Fatal(err)
	}
	if e := run("bat"); e.ResolutionType != "batch_replay" {
		t.Fatalf("batch replay: %s", e.ResolutionType)
	}
}
