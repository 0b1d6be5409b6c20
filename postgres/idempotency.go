package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/baldurhq/baldurd/idempotency"
	"github.com/jackc/pgx/v5"
)

// Idempotency is the gate's records in PostgreSQL (--idempotency-store=
// postgres): each decision is made by idempotency.Acquire and Finish under
// the key's row lock, tokens come from a sequence, and the leader removes
// records past their windows (Expire).
type Idempotency struct {
	DB *DLQ
	// Now is the leader's clock.
	Now func() time.Time
}

var _ idempotency.Store = (*Idempotency)(nil)

// locked reads key's record under its row lock (nil: no live record;
// present: a row exists, live or not).
func locked(ctx context.Context, tx pgx.Tx, key string, now time.Time) (cur *idempotency.Record, requestID string, present bool, err error) {
	var doc []byte
	err = tx.QueryRow(ctx, `SELECT doc, request_id FROM baldur_idempotency WHERE key = $1 FOR UPDATE`, key).Scan(&doc, &requestID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, "", false, nil
	}
	if err != nil {
		return nil, "", false, err
	}
	var r idempotency.Record
	if err := json.Unmarshal(doc, &r); err != nil {
		return nil, "", true, fmt.Errorf("postgres: idempotency record %q: %w", key, err)
	}
	if !idempotency.Live(r, now) {
		return nil, requestID, true, nil
	}
	return &r, requestID, true, nil
}

func writeRecord(ctx context.Context, tx pgx.Tx, r idempotency.Record, requestID string, insert bool) (bool, error) {
	doc, err := json.Marshal(r)
	if err != nil {
		return false, err
	}
	q := `UPDATE baldur_idempotency SET expires_at = $2, request_id = $3, doc = $4 WHERE key = $1`
	if insert {
		q = `INSERT INTO baldur_idempotency (key, expires_at, request_id, doc) VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING`
	}
	tag, err := tx.Exec(ctx, q, r.Key, r.ExpiresAt, requestID, doc)
	return tag.RowsAffected() == 1, err
}

// Acquire decides under the key's row lock. Two first acquires of a key
// race on the insert; the loser decides again against the winner's row.
// A retried acquire (the same request id) of an execution still running
// is the caller's own: CONTINUE again.
func (s *Idempotency) Acquire(ctx context.Context, c idempotency.Caller, key string, execTTL, memTTL time.Duration) (string, idempotency.Record, error) {
	// The common case, a key seen for the first time, is one statement:
	// the record CONTINUE stores, its token drawn from the sequence.
	_, first := idempotency.Acquire(nil, key, 0, s.Now().UTC(), execTTL, memTTL, c.Actor)
	doc, err := json.Marshal(first)
	if err != nil {
		return "", idempotency.Record{}, err
	}
	var stored []byte
	err = s.DB.pool.QueryRow(ctx, `INSERT INTO baldur_idempotency (key, expires_at, request_id, doc)
		VALUES ($1, $2, $3, jsonb_set($4::jsonb, '{token}', to_jsonb(nextval('baldur_idempotency_token'))))
		ON CONFLICT (key) DO NOTHING RETURNING doc`, key, first.ExpiresAt, c.RequestID, doc).Scan(&stored)
	switch {
	case err == nil:
		var r idempotency.Record
		if err := json.Unmarshal(stored, &r); err != nil {
			return "", idempotency.Record{}, fmt.Errorf("postgres: idempotency record %q: %w", key, err)
		}
		return idempotency.Continue, r, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return "", idempotency.Record{}, fmt.Errorf("postgres: idempotency acquire %q: %w", key, err)
	}
	// A row exists: decide under its lock.
	for range 3 {
		var decision string
		var rec idempotency.Record
		inserted := true
		err := pgx.BeginFunc(ctx, s.DB.pool, func(tx pgx.Tx) error {
			now := s.Now().UTC()
			cur, rid, present, err := locked(ctx, tx, key, now)
			if err != nil {
				return err
			}
			if cur != nil && c.RequestID != "" && rid == c.RequestID && cur.Status == idempotency.Executing {
				decision, rec = idempotency.Continue, *cur
				return nil
			}
			var token uint64
			if err := tx.QueryRow(ctx, `SELECT nextval('baldur_idempotency_token')`).Scan(&token); err != nil {
				return err
			}
			decision, rec = idempotency.Acquire(cur, key, token, now, execTTL, memTTL, c.Actor)
			if decision != idempotency.Continue {
				return nil
			}
			inserted, err = writeRecord(ctx, tx, rec, c.RequestID, !present)
			return err
		})
		if err != nil {
			return "", idempotency.Record{}, fmt.Errorf("postgres: idempotency acquire %q: %w", key, err)
		}
		if inserted {
			return decision, rec, nil
		}
	}
	return "", idempotency.Record{}, fmt.Errorf("postgres: idempotency acquire %q: the row kept changing", key)
}

// Finish is the compare-and-set from executing: decided on the record as
// read, written only if the row still holds exactly that record.
func (s *Idempotency) Finish(ctx context.Context, _ idempotency.Caller, key string, token uint64, result json.RawMessage, failMsg *string) (idempotency.Record, error) {
	for range 5 {
		var doc []byte
		var rid string
		err := s.DB.pool.QueryRow(ctx, `SELECT doc, request_id FROM baldur_idempotency WHERE key = $1`, key).Scan(&doc, &rid)
		var cur *idempotency.Record
		now := s.Now().UTC()
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return idempotency.Record{}, fmt.Errorf("postgres: idempotency %q: %w", key, err)
		default:
			var r idempotency.Record
			if err := json.Unmarshal(doc, &r); err != nil {
				return idempotency.Record{}, fmt.Errorf("postgres: idempotency record %q: %w", key, err)
			}
			if idempotency.Live(r, now) {
				cur = &r
			}
		}
		next, err := idempotency.Finish(cur, key, token, now, result, failMsg)
		if err != nil {
			return idempotency.Record{}, err
		}
		nextDoc, err := json.Marshal(next)
		if err != nil {
			return idempotency.Record{}, err
		}
		tag, err := s.DB.pool.Exec(ctx, `UPDATE baldur_idempotency SET expires_at = $2, doc = $3 WHERE key = $1 AND doc = $4::jsonb`,
			key, next.ExpiresAt, nextDoc, doc)
		if err != nil {
			return idempotency.Record{}, fmt.Errorf("postgres: idempotency %q: %w", key, err)
		}
		if tag.RowsAffected() == 1 {
			return next, nil
		}
	}
	return idempotency.Record{}, fmt.Errorf("postgres: idempotency %q: the row kept changing", key)
}

// Get reads a key's live record.
func (s *Idempotency) Get(ctx context.Context, key, _ string) (idempotency.Record, error) {
	var doc []byte
	err := s.DB.pool.QueryRow(ctx, `SELECT doc FROM baldur_idempotency WHERE key = $1`, key).Scan(&doc)
	if errors.Is(err, pgx.ErrNoRows) {
		return idempotency.Record{}, fmt.Errorf("%w: %q", idempotency.ErrNotFound, key)
	}
	if err != nil {
		return idempotency.Record{}, fmt.Errorf("postgres: idempotency %q: %w", key, err)
	}
	var r idempotency.Record
	if err := json.Unmarshal(doc, &r); err != nil {
		return idempotency.Record{}, fmt.Errorf("postgres: idempotency record %q: %w", key, err)
	}
	if !idempotency.Live(r, s.Now()) {
		return idempotency.Record{}, fmt.Errorf("%w: %q", idempotency.ErrNotFound, key)
	}
	return r, nil
}

// Expire removes up to limit records past their windows at now (an
// outcome after its memory window; an execution after its execution
// window, the skew tolerance and the memory window) and says how many.
func (s *Idempotency) Expire(ctx context.Context, now time.Time, limit int) (int, error) {
	tag, err := s.DB.pool.Exec(ctx, `DELETE FROM baldur_idempotency WHERE key IN
		(SELECT key FROM baldur_idempotency WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)`, now, limit)
	if err != nil {
		return 0, fmt.Errorf("postgres: idempotency expiry: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
