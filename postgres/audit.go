package postgres

import (
	"context"
	"encoding/json"

	"github.com/baldurhq/baldurd/audit"
	"github.com/jackc/pgx/v5"
)

// AuditExported is the last audit sequence number the export holds (0 for
// none).
func (d *DLQ) AuditExported(ctx context.Context) (uint64, error) {
	var seq int64
	err := d.pool.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM baldur_audit`).Scan(&seq)
	return uint64(seq), err
}

// ExportAudit copies records into baldur_audit (a record already there is
// left as it is: the export only grows).
func (d *DLQ) ExportAudit(ctx context.Context, recs []audit.Record) error {
	if len(recs) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, r := range recs {
		raw, err := json.Marshal(r)
		if err != nil {
			return err
		}
		b.Queue(`INSERT INTO baldur_audit (seq, time, actor, action, target, record) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (seq) DO NOTHING`,
			int64(r.Seq), r.Time, r.Actor, r.Action, r.Target, string(raw))
	}
	return d.pool.SendBatch(ctx, b).Close()
}

// AuditRecords reads exported records in order from after+1 (at most
// limit), decoded from their stored bytes.
func (d *DLQ) AuditRecords(ctx context.Context, after uint64, limit int) ([]audit.Record, error) {
	rows, err := d.pool.Query(ctx, `SELECT record FROM baldur_audit WHERE seq > $1 ORDER BY seq LIMIT $2`, int64(after), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []audit.Record
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return nil, err
		}
		var r audit.Record
		if err := json.Unmarshal([]byte(raw), &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}
