package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/internal/pgtest"
	"github.com/baldurhq/baldurd/postgres"
	"github.com/jackc/pgx/v5"
)

// open gives each test a schema of its own in the test PostgreSQL.
func open(t *testing.T) *postgres.DLQ {
	t.Helper()
	d, _ := openDSN(t)
	return d
}

// openDSN is open, also returning the DSN of the test's schema.
func openDSN(t *testing.T) (*postgres.DLQ, string) {
	t.Helper()
	ctx := context.Background()
	dsn := pgtest.Schema(t, "baldur_pg")
	d, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	// Opening again finds the migrations applied.
	d2, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("second open (migrations already applied): %v", err)
	}
	d2.Close()
	return d, dsn
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func entry(id, domain string) dlq.Entry {
	e, _ := dlq.Prepare(dlq.Entry{ID: id, Domain: domain, FailureType: "X", MaxRetries: 2, ExpiresAt: t0.Add(72 * time.Hour)}, dlq.DefaultLimits())
	return e
}

func TestPostgresOverflowNeverEvictsReplaying(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	lim := dlq.DefaultLimits()
	lim.MaxSize, lim.MaxPerDomain = 5, 3
	for i := 0; i < 3; i++ {
		if _, err := d.Store(ctx, entry(fmt.Sprintf("p%d", i), "payment"), lim, t0.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok, err := d.AcquireNext(ctx, fsm.Meta{Time: t0.Add(time.Minute)}, "payment", "w", 30*time.Second); !ok || err != nil {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	r, err := d.Store(ctx, entry("p3", "payment"), lim, t0.Add(2*time.Minute))
	if err != nil || len(r.Evicted) != 1 || r.Evicted[0] != "p1" {
		t.Fatalf("overflow: %v %+v", err, r.Evicted)
	}
	if r, _ := d.Store(ctx, entry("p3", "payment"), lim, t0.Add(3*time.Minute)); r.Changed {
		t.Fatal("a retried store created a second entry")
	}
	lim.OverflowStrategy = "reject"
	if _, err := d.Store(ctx, entry("p4", "payment"), lim, t0.Add(4*time.Minute)); !errors.Is(err, dlq.ErrCapacityExceeded) {
		t.Fatalf("reject: %v", err)
	}
}

func TestPostgresLeasesNeverDoubleAssign(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		d.Store(ctx, entry(fmt.Sprintf("e%02d", i), "payment"), dlq.DefaultLimits(), t0.Add(time.Duration(i)*time.Millisecond))
	}
	var mu sync.Mutex
	got := map[string]string{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				e, ok, err := d.AcquireNext(ctx, fsm.Meta{Time: t0.Add(time.Minute)}, "payment", fmt.Sprintf("w%d", w), 30*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					return
				}
				mu.Lock()
				if prev, dup := got[e.ID]; dup {
					t.Errorf("%s leased to %s and w%d", e.ID, prev, w)
				}
				got[e.ID] = fmt.Sprintf("w%d", w)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(got) != 20 {
		t.Fatalf("%d of 20 entries leased", len(got))
	}
	// A stale lease returns the entry to PENDING; expiry and archive follow.
	due, err := d.Due(ctx, t0.Add(2*time.Minute), 24*time.Hour, 100)
	if err != nil || len(due) != 20 || due[0].Op != raftv1.DLQCommand_RELEASE_STALE {
		t.Fatalf("due: %v %v", len(due), err)
	}
	m := fsm.Meta{Time: t0.Add(2 * time.Minute)}
	e, action, err := d.Transition(ctx, m, &raftv1.DLQCommand{Op: raftv1.DLQCommand_RELEASE_STALE, Id: due[0].ID, ReplayLeaseUntilUnixNano: due[0].LeaseUntil}, true)
	if err != nil || action != "replay_lease_expired" || e.Status != dlq.Pending {
		t.Fatalf("release: %v %s %v", e.Status, action, err)
	}
	if _, _, err := d.Transition(ctx, m, &raftv1.DLQCommand{Op: raftv1.DLQCommand_COMPLETE, Id: due[0].ID, Worker: "w0", Success: true}, true); err == nil {
		t.Fatal("a worker whose lease expired completed the entry")
	}
	st, _ := d.Stats(ctx)
	if st.Total != 20 || st.ByStatus["REPLAYING"] != 19 || st.ByStatus["PENDING"] != 1 {
		t.Fatalf("stats: %+v", st)
	}
	// Pages by the keyset token.
	var ids []string
	token := ""
	for {
		page, next, err := d.List(ctx, dlq.Filter{Domain: "payment"}, 7, token)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page {
			ids = append(ids, e.ID)
		}
		if token = next; token == "" {
			break
		}
	}
	if len(ids) != 20 || ids[0] != "e00" || ids[19] != "e19" {
		t.Fatalf("paging: %v", ids)
	}
	if _, _, err := d.List(ctx, dlq.Filter{}, 5, "%%%"); !errors.Is(err, dlq.ErrBadPageToken) {
		t.Fatalf("bad token: %v", err)
	}
}

// The capacity counters follow every insert and delete, under concurrent
// stores that evict, and are rebuilt from the table by the migration that
// introduced them.
func TestPostgresCountersFollowTheTable(t *testing.T) {
	d, dsn := openDSN(t)
	ctx := context.Background()
	lim := dlq.DefaultLimits()
	lim.MaxPerDomain = 100
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				domain := []string{"alpha", "beta"}[i%2]
				if _, err := d.Store(ctx, entry(fmt.Sprintf("c-%d-%d", w, i), domain), lim, t0.Add(time.Duration(w*100+i)*time.Millisecond)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	check := func(when string) {
		t.Helper()
		want := map[string]int64{}
		rows, _ := conn.Query(ctx, `SELECT 'total', count(*) FROM baldur_dlq UNION ALL SELECT 'd/' || domain, count(*) FROM baldur_dlq GROUP BY domain`)
		for rows.Next() {
			var k string
			var n int64
			rows.Scan(&k, &n)
			want[k] = n
		}
		got := map[string]int64{}
		rows, _ = conn.Query(ctx, `SELECT key, sum(n)::bigint FROM baldur_dlq_counts GROUP BY key HAVING sum(n) <> 0`)
		for rows.Next() {
			var k string
			var n int64
			rows.Scan(&k, &n)
			got[k] = n
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("%s: counters %v, table %v", when, got, want)
		}
		// Stores are not serialised: the limit holds within the number of
		// stores in flight, either way.
		if n := want["d/alpha"]; n > 100+16 || n < 100-16 {
			t.Fatalf("%s: domain alpha holds %d entries (limit 100, 16 stores in flight)", when, n)
		}
	}
	check("after concurrent stores")
	// A database from before the counters: the migration rebuilds them.
	for _, q := range []string{`DROP TRIGGER baldur_dlq_count ON baldur_dlq`, `DROP TABLE baldur_dlq_counts`, `DELETE FROM baldur_schema_migrations WHERE version = 2`} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	d2, err := postgres.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	d2.Close()
	check("after the migration")
}

// The PostgreSQL store holds at most --dlq-max-domains domains, as the
// replicated one does; a domain whose entries are all gone frees its place.
func TestPostgresDomainCap(t *testing.T) {
	d, dsn := openDSN(t)
	ctx := context.Background()
	lim := dlq.DefaultLimits()
	lim.MaxDomains = 3
	for i := range 3 {
		if _, err := d.Store(ctx, entry(fmt.Sprintf("e%d", i), fmt.Sprintf("domain_%d", i)), lim, t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.Store(ctx, entry("e9", "domain_0"), lim, t0); err != nil {
		t.Fatalf("a store into a domain that holds entries: %v", err)
	}
	_, err := d.Store(ctx, entry("e10", "domain_3"), lim, t0)
	if !errors.Is(err, dlq.ErrCapacityExceeded) || !strings.Contains(err.Error(), "--dlq-max-domains") {
		t.Fatalf("a fourth domain: %v", err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DELETE FROM baldur_dlq WHERE id = 'e2'`); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Store(ctx, entry("e11", "domain_3"), lim, t0); err != nil {
		t.Fatalf("a domain after another emptied: %v", err)
	}
}
