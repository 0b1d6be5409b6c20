package postgres

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrations are applied in order, each once, recorded in
// baldur_schema_migrations.
var migrations = []string{
	`CREATE TABLE IF NOT EXISTS baldur_dlq (
		id                 text PRIMARY KEY,
		domain             text NOT NULL,
		status             text NOT NULL,
		created_at         timestamptz NOT NULL,
		updated_at         timestamptz NOT NULL,
		expires_at         timestamptz,
		resolved_at        timestamptz,
		replay_lease_until timestamptz,
		replayable         boolean NOT NULL DEFAULT true,
		doc                jsonb NOT NULL
	);
	CREATE INDEX IF NOT EXISTS baldur_dlq_created ON baldur_dlq (created_at, id);
	CREATE INDEX IF NOT EXISTS baldur_dlq_domain ON baldur_dlq (domain, created_at, id);
	CREATE INDEX IF NOT EXISTS baldur_dlq_status_domain ON baldur_dlq (status, domain, created_at, id);`,
	// Counters for the capacity checks, kept by a trigger: a store reads a
	// few rows instead of counting the table. Each transaction updates the
	// shard of its backend, so concurrent stores do not queue on one row,
	// and always "total" before the domain's, so they cannot deadlock.
	`LOCK TABLE baldur_dlq IN SHARE ROW EXCLUSIVE MODE;
	CREATE TABLE IF NOT EXISTS baldur_dlq_counts (
		key   text NOT NULL,
		shard int NOT NULL,
		n     bigint NOT NULL,
		PRIMARY KEY (key, shard)
	);
	CREATE OR REPLACE FUNCTION baldur_dlq_count() RETURNS trigger LANGUAGE plpgsql AS $$
	DECLARE
		s int := pg_backend_pid() % 16;
		d int := 1;
		dom text;
	BEGIN
		IF TG_OP = 'INSERT' THEN dom := NEW.domain; ELSE d := -1; dom := OLD.domain; END IF;
		INSERT INTO baldur_dlq_counts AS c (key, shard, n) VALUES ('total', s, d)
			ON CONFLICT (key, shard) DO UPDATE SET n = c.n + d;
		INSERT INTO baldur_dlq_counts AS c (key, shard, n) VALUES ('d/' || dom, s, d)
			ON CONFLICT (key, shard) DO UPDATE SET n = c.n + d;
		RETURN NULL;
	END $$;
	CREATE TRIGGER baldur_dlq_count AFTER INSERT OR DELETE ON baldur_dlq FOR EACH ROW EXECUTE FUNCTION baldur_dlq_count();
	INSERT INTO baldur_dlq_counts (key, shard, n) SELECT 'total', 0, count(*) FROM baldur_dlq;
	INSERT INTO baldur_dlq_counts (key, shard, n) SELECT 'd/' || domain, 0, count(*) FROM baldur_dlq GROUP BY domain;`,
	// 3: the audit trail's export (audit.go): each record's exact bytes,
	// so its hash still verifies.
	`CREATE TABLE IF NOT EXISTS baldur_audit (
		seq bigint PRIMARY KEY,
		time timestamptz NOT NULL,
		actor text NOT NULL,
		action text NOT NULL,
		target text NOT NULL,
		record text NOT NULL
	);
	CREATE INDEX IF NOT EXISTS baldur_audit_time ON baldur_audit (time);`,
	// 4: the idempotency gate (idempotency.go).
	`CREATE TABLE IF NOT EXISTS baldur_idempotency (
		key        text PRIMARY KEY,
		expires_at timestamptz NOT NULL,
		request_id text NOT NULL DEFAULT '',
		doc        jsonb NOT NULL
	);
	CREATE INDEX IF NOT EXISTS baldur_idempotency_expiry ON baldur_idempotency (expires_at);
	CREATE SEQUENCE IF NOT EXISTS baldur_idempotency_token;`,
}

// defaultMaxConns is the connection pool size unless the DSN sets
// pool_max_conns.
const defaultMaxConns = 16

// DLQ is the PostgreSQL store.
type DLQ struct {
	pool *pgxpool.Pool
}

// Open connects and applies migrations.
func Open(ctx context.Context, dsn string) (*DLQ, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		// pgx's default (the number of CPUs, at least 4) leaves stores
		// queueing for a connection while PostgreSQL could commit them
		// together; the DSN's pool_max_conns overrides this.
		cfg.MaxConns = defaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	d := &DLQ{pool: pool}
	if err := d.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return d, nil
}

// Close closes the pool.
func (d *DLQ) Close() { d.pool.Close() }

func (d *DLQ) migrate(ctx context.Context) error {
	return pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		// One node migrates at a time.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7400001)`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS baldur_schema_migrations (version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("postgres: migrations table: %w", err)
		}
		for i, m := range migrations {
			var done bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM baldur_schema_migrations WHERE version = $1)`, i+1).Scan(&done); err != nil {
				return err
			}
			if done {
				continue
			}
			if _, err := tx.Exec(ctx, m); err != nil {
				return fmt.Errorf("postgres: migration %d: %w", i+1, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO baldur_schema_migrations (version) VALUES ($1)`, i+1); err != nil {
				return err
			}
		}
		return nil
	})
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

func write(ctx context.Context, tx pgx.Tx, e dlq.Entry, insert bool, truncateBlocks bool) error {
	doc, err := json.Marshal(e)
	if err != nil {
		return err
	}
	replayable := !(e.Truncated && truncateBlocks)
	if insert {
		_, err = tx.Exec(ctx, `INSERT INTO baldur_dlq (id, domain, status, created_at, updated_at, expires_at, resolved_at, replay_lease_until, replayable, doc)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)`, e.ID, e.Domain, string(e.Status), e.CreatedAt, e.UpdatedAt, nullTime(e.ExpiresAt),
			nullTime(e.ResolvedAt), nullTime(e.ReplayLeaseUntil), replayable, doc)
	} else {
		_, err = tx.Exec(ctx, `UPDATE baldur_dlq SET status=$2, updated_at=$3, expires_at=$4, resolved_at=$5, replay_lease_until=$6, doc=$7 WHERE id=$1`,
			e.ID, string(e.Status), e.UpdatedAt, nullTime(e.ExpiresAt), nullTime(e.ResolvedAt), nullTime(e.ReplayLeaseUntil), doc)
	}
	return err
}

func scanEntry(row pgx.Row) (dlq.Entry, error) {
	var raw []byte
	if err := row.Scan(&raw); err != nil {
		return dlq.Entry{}, err
	}
	var e dlq.Entry
	err := json.Unmarshal(raw, &e)
	return e, err
}

// Store inserts a prepared entry (or returns the existing one with that
// id), enforcing the capacity limits. Stores under the limits are not
// serialised; a store that finds a limit reached takes a transaction
// advisory lock on it (the DLQ's, then the domain's, always in that order)
// and counts again under it, so that concurrent stores at capacity evict
// one entry each instead of racing each other below the limit.
func (d *DLQ) Store(ctx context.Context, e dlq.Entry, lim dlq.Limits, now time.Time) (dlq.Result, error) {
	var res dlq.Result
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		// One round trip for the usual case: no entry with this id, both
		// counts under their limits.
		var doc []byte
		var total, inDomain int64
		err := tx.QueryRow(ctx, `SELECT (SELECT doc FROM baldur_dlq WHERE id = $1),
			(SELECT coalesce(sum(n), 0) FROM baldur_dlq_counts WHERE key = 'total'),
			(SELECT coalesce(sum(n), 0) FROM baldur_dlq_counts WHERE key = $2)`, e.ID, "d/"+e.Domain).Scan(&doc, &total, &inDomain)
		if err != nil {
			return err
		}
		if doc != nil {
			var existing dlq.Entry
			if err := json.Unmarshal(doc, &existing); err != nil {
				return err
			}
			res = dlq.Result{Entry: existing}
			return nil
		}
		if inDomain == 0 && lim.MaxDomains > 0 {
			var domains int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT key FROM baldur_dlq_counts WHERE key LIKE 'd/%' GROUP BY key HAVING sum(n) > 0) d`).Scan(&domains); err != nil {
				return err
			}
			if domains >= lim.MaxDomains {
				return lim.DomainLimitError(e.Domain, domains)
			}
		}
		for _, l := range []struct {
			key    string
			n      int64
			where  string
			args   []any
			max    int64
			reason string
		}{{"total", total, "", nil, lim.MaxSize, "the DLQ"}, {"d/" + e.Domain, inDomain, "AND domain = $1", []any{e.Domain}, lim.MaxPerDomain, "domain " + e.Domain}} {
			contended := 0
			if l.max > 0 && l.n >= l.max {
				if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, advisoryKey(l.key)); err != nil {
					return err
				}
			}
			// Under the lock the count is read again (counted: true).
			for counted := l.max > 0 && l.n >= l.max; ; counted = true {
				n := l.n
				if counted { // after an eviction
					if err := tx.QueryRow(ctx, `SELECT coalesce(sum(n), 0) FROM baldur_dlq_counts WHERE key = $1`, l.key).Scan(&n); err != nil {
						return err
					}
				}
				if l.max <= 0 || n < l.max {
					break
				}
				if lim.OverflowStrategy == "reject" {
					return fmt.Errorf("%w: %s holds %d entries (limit %d)", dlq.ErrCapacityExceeded, l.reason, n, l.max)
				}
				var victim string
				err := tx.QueryRow(ctx, `DELETE FROM baldur_dlq WHERE id = (SELECT id FROM baldur_dlq WHERE status NOT IN ('REPLAYING','REVIEWING') `+
					l.where+` ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id`, l.args...).Scan(&victim)
				if errors.Is(err, pgx.ErrNoRows) {
					// Nothing this statement could lock: every evictable entry
					// is being replayed, or concurrent stores hold the
					// candidates (then count again and retry).
					var evictable bool
					if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM baldur_dlq WHERE status NOT IN ('REPLAYING','REVIEWING') `+
						l.where+`)`, l.args...).Scan(&evictable); err != nil {
						return err
					}
					if !evictable || contended >= 100 {
						return fmt.Errorf("%w: %s is full of entries being replayed", dlq.ErrCapacityExceeded, l.reason)
					}
					contended++
					continue
				}
				if err != nil {
					return err
				}
				res.Evicted = append(res.Evicted, victim)
			}
		}
		e = dlq.Stored(e, now, e.Revision)
		if err := write(ctx, tx, e, true, lim.TruncateBlocks); err != nil {
			var pgErr interface{ SQLState() string }
			if errors.As(err, &pgErr) && pgErr.SQLState() == "23505" {
				// A concurrent store of the same id won: return its entry.
				return errRetryAsExisting
			}
			return err
		}
		res.Changed, res.Action, res.Entry = true, "stored", e
		return nil
	})
	if errors.Is(err, errRetryAsExisting) {
		existing, ok, gerr := d.Get(ctx, e.ID)
		if gerr != nil || !ok {
			return dlq.Result{}, fmt.Errorf("postgres: store %q: %v", e.ID, gerr)
		}
		return dlq.Result{Entry: existing}, nil
	}
	return res, err
}

var errRetryAsExisting = errors.New("postgres: entry stored concurrently")

// advisoryKey is the advisory lock of a capacity counter ("total",
// "d/<domain>").
func advisoryKey(counter string) int64 {
	h := fnv.New64a()
	h.Write([]byte("baldur_dlq:" + counter))
	return int64(h.Sum64())
}

// Get returns an entry.
func (d *DLQ) Get(ctx context.Context, id string) (dlq.Entry, bool, error) {
	e, err := scanEntry(d.pool.QueryRow(ctx, `SELECT doc FROM baldur_dlq WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return dlq.Entry{}, false, nil
	}
	return e, err == nil, err
}

func encodeToken(e dlq.Entry) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(e.CreatedAt.UnixNano(), 10) + "|" + e.ID))
}

func decodeToken(tok string) (time.Time, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return time.Time{}, "", dlq.ErrBadPageToken
	}
	ns, id, ok := strings.Cut(string(raw), "|")
	n, perr := strconv.ParseInt(ns, 10, 64)
	if !ok || perr != nil || id == "" {
		return time.Time{}, "", dlq.ErrBadPageToken
	}
	return time.Unix(0, n), id, nil
}

// List pages entries oldest first by (created_at, id).
func (d *DLQ) List(ctx context.Context, f dlq.Filter, size int, token string) ([]dlq.Entry, string, error) {
	q := `SELECT doc FROM baldur_dlq WHERE true`
	var args []any
	arg := func(v any) string { args = append(args, v); return "$" + strconv.Itoa(len(args)) }
	if f.Domain != "" {
		q += ` AND domain = ` + arg(f.Domain)
	}
	if f.Status != "" {
		q += ` AND status = ` + arg(string(f.Status))
	}
	if token != "" {
		at, id, err := decodeToken(token)
		if err != nil {
			return nil, "", err
		}
		q += ` AND (created_at, id) > (` + arg(at) + `, ` + arg(id) + `)`
	}
	q += ` ORDER BY created_at, id LIMIT ` + arg(size+1)
	rows, err := d.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var out []dlq.Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, "", err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > size {
		out = out[:size]
		next = encodeToken(out[size-1])
	}
	return out, next, nil
}

// Stats counts entries by status and domain.
func (d *DLQ) Stats(ctx context.Context) (dlq.Stats, error) {
	st := dlq.Stats{ByStatus: map[string]int64{}, ByDomain: map[string]int64{}}
	for _, q := range []struct {
		sql string
		dst map[string]int64
	}{{`SELECT status, count(*) FROM baldur_dlq GROUP BY status`, st.ByStatus}, {`SELECT domain, count(*) FROM baldur_dlq GROUP BY domain`, st.ByDomain}} {
		rows, err := d.pool.Query(ctx, q.sql)
		if err != nil {
			return st, err
		}
		for rows.Next() {
			var k string
			var n int64
			if err := rows.Scan(&k, &n); err != nil {
				rows.Close()
				return st, err
			}
			q.dst[k] = n
		}
		rows.Close()
	}
	for _, n := range st.ByStatus {
		st.Total += n
	}
	return st, nil
}

// Transition applies op to one entry under a row lock.
func (d *DLQ) Transition(ctx context.Context, m fsm.Meta, c *raftv1.DLQCommand, truncateBlocks bool) (dlq.Entry, string, error) {
	var next dlq.Entry
	var action string
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		e, err := scanEntry(tx.QueryRow(ctx, `SELECT doc FROM baldur_dlq WHERE id = $1 FOR UPDATE`, c.GetId()))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %q", dlq.ErrNotFound, c.GetId())
		}
		if err != nil {
			return err
		}
		if next, action, err = dlq.Transition(e, m, c); err != nil || action == "" {
			return err
		}
		return write(ctx, tx, next, false, truncateBlocks)
	})
	return next, action, err
}

// AcquireNext leases the oldest replayable PENDING entry of domain to a
// worker; concurrent workers skip each other's locked rows.
func (d *DLQ) AcquireNext(ctx context.Context, m fsm.Meta, domain, worker string, lease time.Duration) (dlq.Entry, bool, error) {
	var next dlq.Entry
	found := false
	err := pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error {
		e, err := scanEntry(tx.QueryRow(ctx, `SELECT doc FROM baldur_dlq WHERE status = 'PENDING' AND domain = $1 AND replayable
			AND (doc->>'retry_count')::int < (doc->>'max_retries')::int ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED`, domain))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		c := &raftv1.DLQCommand{Op: raftv1.DLQCommand_ACQUIRE, Id: e.ID, Worker: worker, LeaseNanos: int64(lease)}
		if next, _, err = dlq.Transition(e, m, c); err != nil {
			return err
		}
		found = true
		return write(ctx, tx, next, false, false)
	})
	return next, found, err
}

// Purge deletes ARCHIVED entries by id or older than a bound.
func (d *DLQ) Purge(ctx context.Context, ids []string, olderThan time.Time) (int64, error) {
	var tag interface{ RowsAffected() int64 }
	var err error
	if len(ids) > 0 {
		tag, err = d.pool.Exec(ctx, `DELETE FROM baldur_dlq WHERE status = 'ARCHIVED' AND id = ANY($1)`, ids)
	} else {
		tag, err = d.pool.Exec(ctx, `DELETE FROM baldur_dlq WHERE status = 'ARCHIVED' AND updated_at <= $1`, olderThan)
	}
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// Due lists the time-driven work at now (bounded).
func (d *DLQ) Due(ctx context.Context, now time.Time, retention time.Duration, limit int) ([]dlq.Due, error) {
	var out []dlq.Due
	for _, q := range []struct {
		sql string
		op  raftv1.DLQCommand_Op
	}{
		// The lease is read from the document: the column keeps microseconds only.
		{`SELECT doc FROM baldur_dlq WHERE status = 'REPLAYING' AND replay_lease_until <= $1 LIMIT $2`, raftv1.DLQCommand_RELEASE_STALE},
		{`SELECT doc FROM baldur_dlq WHERE status = 'PENDING' AND expires_at <= $1 LIMIT $2`, raftv1.DLQCommand_EXPIRE},
	} {
		rows, err := d.pool.Query(ctx, q.sql, now, limit)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			e, err := scanEntry(rows)
			if err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, dlq.Due{ID: e.ID, Op: q.op, LeaseUntil: uint64(e.ReplayLeaseUntil.UnixNano())})
		}
		rows.Close()
	}
	rows, err := d.pool.Query(ctx, `SELECT id FROM baldur_dlq WHERE status = 'RESOLVED' AND resolved_at <= $1 LIMIT $2`, now.Add(-retention), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, dlq.Due{ID: id, Op: raftv1.DLQCommand_ARCHIVE})
	}
	return out, rows.Err()
}
