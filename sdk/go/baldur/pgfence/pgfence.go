// Package pgfence makes lease fencing enforceable in PostgreSQL: a write
// carrying a fencing token lower than one already seen for its resource is
// refused, in the same transaction as the write, so a holder that lost its
// lease without knowing (paused, partitioned) cannot overwrite the work of
// the holder after it.
//
// It uses database/sql only; open the database with any PostgreSQL driver
// (e.g. github.com/jackc/pgx/v5/stdlib).
package pgfence

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
)

// ErrStaleToken is returned when a newer token has already been used.
var ErrStaleToken = errors.New("pgfence: stale fencing token")

// Guard checks tokens against one table.
type Guard struct {
	table string
}

var tablePattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// New returns a guard over table (default "baldur_fence").
func New(table string) (*Guard, error) {
	if table == "" {
		table = "baldur_fence"
	}
	if !tablePattern.MatchString(table) {
		return nil, fmt.Errorf("pgfence: table name %q: use lowercase letters, digits and _", table)
	}
	return &Guard{table: table}, nil
}

// Migrate creates the guard's table if it does not exist.
func (g *Guard) Migrate(ctx context.Context, db *sql.DB) error {
	_, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS `+g.table+` (
		resource   text PRIMARY KEY,
		token      bigint NOT NULL,
		updated_at timestamptz NOT NULL DEFAULT now()
	)`)
	if err != nil {
		return fmt.Errorf("pgfence: create %s: %w", g.table, err)
	}
	return nil
}

// Check records token for resource inside tx, or returns ErrStaleToken if
// a higher token was already recorded. Commit tx only after the protected
// write; the row lock it takes serialises concurrent holders.
func (g *Guard) Check(ctx context.Context, tx *sql.Tx, resource string, token uint64) error {
	var got int64
	err := tx.QueryRowContext(ctx, `INSERT INTO `+g.table+` (resource, token) VALUES ($1, $2)
		ON CONFLICT (resource) DO UPDATE SET token = EXCLUDED.token, updated_at = now()
		WHERE `+g.table+`.token <= EXCLUDED.token
		RETURNING token`, resource, int64(token)).Scan(&got)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w: %d for %q", ErrStaleToken, token, resource)
	}
	if err != nil {
		return fmt.Errorf("pgfence: check %q: %w", resource, err)
	}
	return nil
}

// Highest returns the highest token recorded for resource (0 if none).
func (g *Guard) Highest(ctx context.Context, db *sql.DB, resource string) (uint64, error) {
	var tok int64
	err := db.QueryRowContext(ctx, `SELECT token FROM `+g.table+` WHERE resource = $1`, resource).Scan(&tok)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return uint64(tok), err
}
