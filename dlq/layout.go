package dlq

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Buckets.
var (
	BucketEntries  = []byte("dlq_entries")   // id → entry JSON
	BucketByTime   = []byte("dlq_by_time")   // created(8) + id
	BucketByDomain = []byte("dlq_by_domain") // domain + 0 + created(8) + id
	BucketByStatus = []byte("dlq_by_status") // status + 0 + created(8) + id
	BucketCounts   = []byte("dlq_counts")    // "total", "d/<domain>", "s/<status>" → 8 bytes
)

// Buckets lists this package's buckets for the schema.
func Buckets() [][]byte {
	return [][]byte{BucketEntries, BucketByTime, BucketByDomain, BucketByStatus, BucketCounts}
}

// Result describes what a change did.
type Result struct {
	// Change.Actor is who asked for a store of a batch (audited as such).
	fsm.Change
	Entry   Entry
	Evicted []string
	// Batch holds a STORE_BATCH's outcomes, in the order of its stores.
	Batch []BatchItem

	stored []byte // a store's encoded entry, when Entry was not decoded
}

// BatchItem is the outcome of one store of a batch: an error refuses that
// store only.
type BatchItem struct {
	Result Result
	Err    error
}

// Applied is r in the dispatcher's vocabulary: the action qualified with
// the domain; a batch's stores are audited one by one, each for its caller.
func (r Result) Applied() fsm.Applied {
	c := r.Change
	c.Action = "dlq." + c.Action
	a := fsm.Applied{Change: c, Value: r}
	for _, it := range r.Batch {
		b := it.Result.Change
		b.Action = "dlq." + b.Action
		a.Batch = append(a.Batch, b)
	}
	return a
}

func timeKey(t time.Time, id string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, uint64(t.UnixNano())), id...)
}

func prefixed(prefix string, t time.Time, id string) []byte {
	return append(append([]byte(prefix), 0), timeKey(t, id)...)
}

func count(kv fsm.KV, key string) int64 {
	if c, ok := kv.(*countingKV); ok {
		return c.count(key)
	}
	if v := kv.Get(BucketCounts, []byte(key)); len(v) == 8 {
		return int64(binary.BigEndian.Uint64(v))
	}
	return 0
}

func bump(kv fsm.KV, key string, by int64) {
	if c, ok := kv.(*countingKV); ok {
		c.n[key] = c.count(key) + by
		return
	}
	writeCount(kv, key, count(kv, key)+by)
}

func writeCount(kv fsm.KV, key string, n int64) {
	if n <= 0 {
		kv.Delete(BucketCounts, []byte(key))
		return
	}
	kv.Put(BucketCounts, []byte(key), binary.BigEndian.AppendUint64(nil, uint64(n)))
}

// countingKV keeps counters in memory through a batch of stores (each
// store reads and writes three) and writes the changed ones once.
type countingKV struct {
	fsm.KV
	n, was map[string]int64
}

func newCountingKV(kv fsm.KV) *countingKV {
	return &countingKV{KV: kv, n: map[string]int64{}, was: map[string]int64{}}
}

func (c *countingKV) count(key string) int64 {
	if v, ok := c.n[key]; ok {
		return v
	}
	v := count(c.KV, key)
	c.n[key], c.was[key] = v, v
	return v
}

// flush writes the changed counters, in key order.
func (c *countingKV) flush() {
	keys := make([]string, 0, len(c.n))
	for k, v := range c.n {
		if v != c.was[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		writeCount(c.KV, k, c.n[k])
	}
}

// Get returns an entry.
func Get(kv fsm.KV, id string) (Entry, bool) {
	v := kv.Get(BucketEntries, []byte(id))
	if v == nil {
		return Entry{}, false
	}
	var e Entry
	if err := json.Unmarshal(v, &e); err != nil {
		panic(fmt.Sprintf("dlq: decode %q: %v", id, err))
	}
	return e, true
}

func insert(kv fsm.KV, e Entry) {
	insertEncoded(kv, e.ID, e.Domain, e.Status, e.CreatedAt, encodeEntry(e))
}

func insertEncoded(kv fsm.KV, id, domain string, status Status, created time.Time, value []byte) {
	kv.Put(BucketEntries, []byte(id), value)
	kv.Put(BucketByTime, timeKey(created, id), nil)
	kv.Put(BucketByDomain, prefixed(domain, created, id), nil)
	kv.Put(BucketByStatus, prefixed(string(status), created, id), nil)
	bump(kv, "total", 1)
	bump(kv, "d/"+domain, 1)
	bump(kv, "s/"+string(status), 1)
}

func remove(kv fsm.KV, e Entry) {
	kv.Delete(BucketEntries, []byte(e.ID))
	kv.Delete(BucketByTime, timeKey(e.CreatedAt, e.ID))
	kv.Delete(BucketByDomain, prefixed(e.Domain, e.CreatedAt, e.ID))
	kv.Delete(BucketByStatus, prefixed(string(e.Status), e.CreatedAt, e.ID))
	bump(kv, "total", -1)
	bump(kv, "d/"+e.Domain, -1)
	bump(kv, "s/"+string(e.Status), -1)
}

// update writes e, moving its status index entry if the status changed.
func update(kv fsm.KV, before, e Entry) {
	if before.Status != e.Status {
		kv.Delete(BucketByStatus, prefixed(string(before.Status), e.CreatedAt, e.ID))
		kv.Put(BucketByStatus, prefixed(string(e.Status), e.CreatedAt, e.ID), nil)
		bump(kv, "s/"+string(before.Status), -1)
		bump(kv, "s/"+string(e.Status), 1)
	}
	kv.Put(BucketEntries, []byte(e.ID), encodeEntry(e))
}

func idFromIndex(k []byte) string { return string(k[8:]) }

func evictable(s Status) bool { return s != Replaying && s != Reviewing }

// indexed is what an entry's index keys are made of; decoding only these
// fields spares allocating the entry's documents.
type indexed struct {
	ID        string    `json:"id"`
	Domain    string    `json:"domain"`
	Status    Status    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
}

func getIndexed(kv fsm.KV, id string) (Entry, bool) {
	v := kv.Get(BucketEntries, []byte(id))
	if v == nil {
		return Entry{}, false
	}
	var x indexed
	if err := json.Unmarshal(v, &x); err != nil {
		panic(fmt.Sprintf("dlq: decode %q: %v", id, err))
	}
	return Entry{ID: x.ID, Domain: x.Domain, Status: x.Status, CreatedAt: x.CreatedAt}, true
}

// evictOldest removes the oldest evictable entry, of one domain when domain
// is set. It returns the evicted id, or "".
func evictOldest(kv fsm.KV, domain string) string {
	var victim Entry
	bucket, prefix := BucketByTime, []byte(nil)
	if domain != "" {
		bucket, prefix = BucketByDomain, append([]byte(domain), 0)
	}
	kv.Scan(bucket, prefix, false, func(k, _ []byte) bool {
		if !bytes.HasPrefix(k, prefix) {
			return false
		}
		if e, ok := getIndexed(kv, idFromIndex(k[len(prefix):])); ok && evictable(e.Status) {
			victim = e
			return false
		}
		return true
	})
	if victim.ID == "" {
		return ""
	}
	remove(kv, victim)
	return victim.ID
}

// Apply runs one DLQ command.
func Apply(kv fsm.KV, m fsm.Meta, c *raftv1.DLQCommand) (Result, error) {
	switch c.GetOp() {
	case raftv1.DLQCommand_STORE:
		return store(kv, m, c)
	case raftv1.DLQCommand_STORE_BATCH:
		return batch(kv, m, c, true), nil
	case raftv1.DLQCommand_BATCH:
		return batch(kv, m, c, false), nil
	case raftv1.DLQCommand_PURGE:
		return purge(kv, m, c)
	}
	return transition(kv, m, c)
}

// transition applies a lifecycle command to one entry.
func transition(kv fsm.KV, m fsm.Meta, c *raftv1.DLQCommand) (Result, error) {
	e, ok := Get(kv, c.GetId())
	if !ok {
		if c.GetOp() == raftv1.DLQCommand_RELEASE_STALE || c.GetOp() == raftv1.DLQCommand_EXPIRE || c.GetOp() == raftv1.DLQCommand_ARCHIVE {
			return Result{}, nil // gone since the leader looked
		}
		return Result{}, fmt.Errorf("%w: %q", ErrNotFound, c.GetId())
	}
	next, action, err := Transition(e, m, c)
	if err != nil || action == "" {
		return Result{}, err
	}
	update(kv, e, next)
	return Result{Change: fsm.Change{Changed: true, Action: action, Target: "dlq/" + e.ID, Before: summary(e), After: summary(next)}, Entry: next}, nil
}

// revisionTail ends an entry encoded by json.Marshal with Revision 0
// (Revision is Entry's last field).
var revisionTail = []byte(`,"revision":0}`)

// StoreCommand is the STORE command for e at now (the command's time, the
// leader's clock): the entry encoded as stored — PENDING, no attempts,
// created and updated at now, revision 0 — with its id, domain and failure
// type beside it. Replicas apply it without decoding the payloads: they
// store the bytes with the revision filled in. A STORE without the
// header fields (or not ending in revision 0) is decoded and normalised.
func StoreCommand(e Entry, now time.Time, lim Limits) *raftv1.DLQCommand {
	e = Stored(e, now, 0)
	return &raftv1.DLQCommand{Op: raftv1.DLQCommand_STORE, EntryJson: encodeEntry(e), Id: e.ID, Domain: e.Domain, FailureType: e.FailureType,
		MaxSize: lim.MaxSize, MaxPerDomain: lim.MaxPerDomain, OverflowStrategy: lim.OverflowStrategy}
}

// Stored is e as a store at time now and revision rev leaves it: PENDING,
// no attempts, created and updated at now.
func Stored(e Entry, now time.Time, rev uint64) Entry {
	e.Status, e.RetryCount, e.CreatedAt, e.UpdatedAt, e.Revision = Pending, 0, now, now, rev
	return e
}

// StoredEntry is the entry a store command left: r.Entry, or decoded from
// the stored bytes when the apply skipped decoding it.
func (r Result) StoredEntry() (Entry, error) {
	if r.stored == nil {
		return r.Entry, nil
	}
	var e Entry
	err := json.Unmarshal(r.stored, &e)
	return e, err
}

func store(kv fsm.KV, m fsm.Meta, c *raftv1.DLQCommand) (Result, error) {
	raw := c.GetEntryJson()
	if c.GetId() == "" || c.GetDomain() == "" || !bytes.HasSuffix(raw, revisionTail) {
		return storeDecoded(kv, m, c)
	}
	id, domain := c.GetId(), c.GetDomain()
	if err := CheckID(id); err != nil {
		return Result{}, err
	}
	if existing, ok := Get(kv, id); ok {
		return Result{Entry: existing}, nil // a retried store: the first one stands
	}
	evicted, err := makeRoom(kv, c, domain)
	if err != nil {
		return Result{}, err
	}
	value := make([]byte, 0, len(raw)+20)
	value = append(value, raw[:len(raw)-2]...) // drop "0}"
	value = strconv.AppendUint(value, m.Index, 10)
	value = append(value, '}')
	insertEncoded(kv, id, domain, Pending, m.Time, value)
	sum := Summary{ID: id, Domain: domain, FailureType: c.GetFailureType(), Status: Pending}
	return Result{Change: fsm.Change{Changed: true, Action: "stored", Target: "dlq/" + id, After: sum}, stored: value, Evicted: evicted}, nil
}

// storeBatch applies a batch's stores in order, each at its own time and
// for its own caller; one store's error does not stop the others.
// batch applies the commands of a STORE_BATCH (stores only) or a BATCH
// (stores and lifecycle commands) in order, each at its own time, for its
// own caller and reason; an error refuses that command only.
func batch(kv fsm.KV, m fsm.Meta, c *raftv1.DLQCommand, storesOnly bool) Result {
	ckv := newCountingKV(kv)
	defer ckv.flush()
	kv = ckv
	items := make([]BatchItem, len(c.GetStores()))
	for i, sc := range c.GetStores() {
		switch op := sc.GetOp(); {
		case op == raftv1.DLQCommand_STORE:
		case storesOnly:
			items[i].Err = &fsm.ArgumentError{Domain: "dlq", FieldName: "stores", Code: "INVALID_ARGUMENT", Msg: fmt.Sprintf("op %v in a batch of stores", op)}
			continue
		case op == raftv1.DLQCommand_BATCH || op == raftv1.DLQCommand_STORE_BATCH || op == raftv1.DLQCommand_PURGE || op == raftv1.DLQCommand_OP_UNSPECIFIED:
			items[i].Err = &fsm.ArgumentError{Domain: "dlq", FieldName: "stores", Code: "INVALID_ARGUMENT", Msg: fmt.Sprintf("op %v cannot be batched", op)}
			continue
		}
		sm := m
		if t := sc.GetTimeUnixNano(); t != 0 {
			sm.Time = time.Unix(0, t).UTC()
		}
		if a := sc.GetActor(); a != "" {
			sm.Actor = a
		}
		if r := sc.GetReason(); r != "" && !storesOnly {
			sm.Reason = r
		}
		if sc.GetOp() == raftv1.DLQCommand_STORE {
			items[i].Result, items[i].Err = store(kv, sm, sc)
		} else {
			items[i].Result, items[i].Err = transition(kv, sm, sc)
		}
		items[i].Result.Actor = sc.GetActor()
		if !storesOnly {
			items[i].Result.Reason = sc.GetReason()
		}
	}
	return Result{Change: fsm.Change{Action: "stored"}, Batch: items}
}

// storeDecoded stores an entry from a STORE not built by StoreCommand.
func storeDecoded(kv fsm.KV, m fsm.Meta, c *raftv1.DLQCommand) (Result, error) {
	var e Entry
	if err := json.Unmarshal(c.GetEntryJson(), &e); err != nil {
		return Result{}, &fsm.ArgumentError{Domain: "dlq", FieldName: "entry", Code: "INVALID_ARGUMENT", Msg: err.Error()}
	}
	if err := CheckID(e.ID); err != nil {
		return Result{}, err
	}
	if existing, ok := Get(kv, e.ID); ok {
		return Result{Entry: existing}, nil
	}
	evicted, err := makeRoom(kv, c, e.Domain)
	if err != nil {
		return Result{}, err
	}
	e = Stored(e, m.Time, m.Index)
	insert(kv, e)
	return Result{Change: fsm.Change{Changed: true, Action: "stored", Target: "dlq/" + e.ID, After: summary(e)}, Entry: e, Evicted: evicted}, nil
}

// makeRoom applies the capacity limits before a store into domain: it
// refuses (reject) or evicts the oldest evictable entries (drop_oldest).
func makeRoom(kv fsm.KV, c *raftv1.DLQCommand, domain string) ([]string, error) {
	var evicted []string
	for _, lim := range []struct {
		key, domain string
		max         int64
		reason      string
	}{{"total", "", c.GetMaxSize(), "the DLQ"}, {"d/" + domain, domain, c.GetMaxPerDomain(), "domain " + domain}} {
		for lim.max > 0 && count(kv, lim.key) >= lim.max {
			if c.GetOverflowStrategy() == "reject" {
				return nil, fmt.Errorf("%w: %s holds %d entries (limit %d)", ErrCapacityExceeded, lim.reason, count(kv, lim.key), lim.max)
			}
			v := evictOldest(kv, lim.domain)
			if v == "" {
				return nil, fmt.Errorf("%w: %s is full of entries being replayed", ErrCapacityExceeded, lim.reason)
			}
			evicted = append(evicted, v)
		}
	}
	return evicted, nil
}

func purge(kv fsm.KV, m fsm.Meta, c *raftv1.DLQCommand) (Result, error) {
	var ids []string
	if len(c.GetIds()) > 0 {
		ids = c.GetIds()
	} else {
		cutoff := m.Time.Add(-time.Duration(c.GetOlderThanNanos()))
		prefix := append([]byte(Archived), 0)
		kv.Scan(BucketByStatus, prefix, false, func(k, _ []byte) bool {
			if !bytes.HasPrefix(k, prefix) {
				return false
			}
			if e, ok := Get(kv, idFromIndex(k[len(prefix):])); ok && !e.UpdatedAt.After(cutoff) {
				ids = append(ids, e.ID)
			}
			return len(ids) < 10000
		})
	}
	var purged []string
	for _, id := range ids {
		if e, ok := Get(kv, id); ok && e.Status == Archived {
			remove(kv, e)
			purged = append(purged, id)
		}
	}
	if len(purged) == 0 {
		return Result{}, nil
	}
	return Result{Change: fsm.Change{Changed: true, Action: "purged", Target: "dlq", After: map[string]any{"purged": len(purged)}}}, nil
}

// Filter selects entries for List.
type Filter struct {
	Domain string
	Status Status
}

// List returns up to pageSize entries matching f, oldest first, after the
// page token, and the next token.
func List(kv fsm.KV, f Filter, pageSize int, token string) ([]Entry, string, error) {
	var start []byte
	if token != "" {
		raw, err := hex.DecodeString(token)
		if err != nil || len(raw) < 9 {
			return nil, "", ErrBadPageToken
		}
		start = append(raw, 0) // strictly after
	}
	bucket, prefix := BucketByTime, []byte(nil)
	switch {
	case f.Status != "":
		bucket, prefix = BucketByStatus, append([]byte(f.Status), 0)
	case f.Domain != "":
		bucket, prefix = BucketByDomain, append([]byte(f.Domain), 0)
	}
	if start == nil {
		start = prefix
	} else if !bytes.HasPrefix(start, prefix) {
		return nil, "", ErrBadPageToken
	}
	var out []Entry
	next := ""
	kv.Scan(bucket, start, false, func(k, _ []byte) bool {
		if !bytes.HasPrefix(k, prefix) {
			return false
		}
		e, ok := Get(kv, idFromIndex(k[len(prefix):]))
		if !ok || (f.Domain != "" && e.Domain != f.Domain) {
			return true
		}
		if len(out) == pageSize {
			next = hex.EncodeToString(append([]byte(nil), lastKey(bucket, prefix, out[len(out)-1])...))
			return false
		}
		out = append(out, e)
		return true
	})
	return out, next, nil
}

func lastKey(bucket, prefix []byte, e Entry) []byte {
	if bytes.Equal(bucket, BucketByTime) {
		return timeKey(e.CreatedAt, e.ID)
	}
	return append(append([]byte(nil), prefix...), timeKey(e.CreatedAt, e.ID)...)
}

// Stats are the counters.
type Stats struct {
	Total    int64
	ByStatus map[string]int64
	ByDomain map[string]int64
}

// GetStats reads the counters.
func GetStats(kv fsm.KV) Stats {
	s := Stats{ByStatus: map[string]int64{}, ByDomain: map[string]int64{}}
	kv.Scan(BucketCounts, nil, false, func(k, v []byte) bool {
		n := int64(binary.BigEndian.Uint64(v))
		switch key := string(k); {
		case key == "total":
			s.Total = n
		case len(key) > 2 && key[:2] == "d/":
			s.ByDomain[key[2:]] = n
		case len(key) > 2 && key[:2] == "s/":
			s.ByStatus[key[2:]] = n
		}
		return true
	})
	return s
}

// Due lists the leader's time-driven DLQ work at now: expired replay
// leases, PENDING entries past expiry, RESOLVED entries past retention.
type Due struct {
	ID         string
	Op         raftv1.DLQCommand_Op
	LeaseUntil uint64
}

// DueWork scans the status indexes (bounded by limit).
func DueWork(kv fsm.KV, now time.Time, retention time.Duration, limit int) []Due {
	var out []Due
	// fn returns false to stop the scan of that status early.
	scan := func(st Status, fn func(e Entry) bool) {
		prefix := append([]byte(st), 0)
		kv.Scan(BucketByStatus, prefix, false, func(k, _ []byte) bool {
			if !bytes.HasPrefix(k, prefix) || len(out) >= limit {
				return false
			}
			if e, ok := Get(kv, idFromIndex(k[len(prefix):])); ok {
				return fn(e)
			}
			return true
		})
	}
	scan(Replaying, func(e Entry) bool {
		if !now.Before(e.ReplayLeaseUntil) {
			out = append(out, Due{ID: e.ID, Op: raftv1.DLQCommand_RELEASE_STALE, LeaseUntil: uint64(e.ReplayLeaseUntil.UnixNano())})
		}
		return true
	})
	scan(Pending, func(e Entry) bool {
		if e.ExpiresAt.IsZero() || now.Before(e.ExpiresAt) {
			return false // oldest first: the rest expire later
		}
		out = append(out, Due{ID: e.ID, Op: raftv1.DLQCommand_EXPIRE})
		return true
	})
	scan(Resolved, func(e Entry) bool {
		if retention > 0 && now.Sub(e.ResolvedAt) >= retention {
			out = append(out, Due{ID: e.ID, Op: raftv1.DLQCommand_ARCHIVE})
		}
		return true
	})
	return out
}
