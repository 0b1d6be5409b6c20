package dlq

import (
	"context"
	"fmt"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Store is where entries live. Two implementations apply this package's
// rules (lifecycle.go): Replicated keeps entries in the Raft-replicated
// bbolt state (layout.go), postgres.Store in PostgreSQL. The server serves
// the DLQ API over either; writes run on the leader (their methods are
// leader-only), so time-driven work and replay leases have one owner.
type Store interface {
	Get(ctx context.Context, id string) (Entry, bool, error)
	List(ctx context.Context, f Filter, size int, token string) ([]Entry, string, error)
	Stats(ctx context.Context) (Stats, error)
	// ReadBarrier makes the next read see every acknowledged write
	// (consistency "" or "linearizable"), or not ("stale").
	ReadBarrier(ctx context.Context, consistency string) error

	// Store captures e (prepared: masked and truncated by the caller).
	Store(ctx context.Context, c Caller, e Entry) (Result, uint64, error)
	// Transition applies one lifecycle command to one entry.
	Transition(ctx context.Context, c Caller, cmd *raftv1.DLQCommand) (Entry, error)
	// Acquire leases up to max of the oldest replayable PENDING entries of
	// domain to worker (none when nothing is replayable).
	Acquire(ctx context.Context, c Caller, domain, worker string, lease time.Duration, max int) ([]Entry, error)
	// Purge deletes ARCHIVED entries by id, or those archived longer ago
	// than olderThan, and says how many went.
	Purge(ctx context.Context, c Caller, ids []string, olderThan time.Duration) (int64, uint64, error)
	// Due lists the time-driven work at now: stale replay leases, expired
	// PENDING entries, resolutions past retention.
	Due(ctx context.Context, now time.Time) ([]Due, error)
}

// Caller is who asks for a write and why.
type Caller struct {
	Actor     string
	RequestID string // a client's retry key, "" for none
	Reason    string
}

// dueLimit bounds one sweep's work.
const dueLimit = 500

// Retention is how long a resolution is kept before it is archived.
func (l Limits) Retention() time.Duration { return time.Duration(l.RetentionDays) * 24 * time.Hour }

// Replayable reports whether a worker may lease e now: PENDING, under its
// retry budget, and not blocked by truncation.
func (l Limits) Replayable(e Entry) bool {
	return e.Status == Pending && e.RetryCount < e.MaxRetries && !(e.Truncated && l.TruncateBlocks)
}

// CheckConsistency rejects a read consistency other than linearizable
// (default) or stale.
func CheckConsistency(consistency string) error {
	switch consistency {
	case "", "linearizable", "stale":
		return nil
	}
	return &fsm.ArgumentError{FieldName: "consistency", Code: "INVALID_ARGUMENT", Msg: fmt.Sprintf("%q: use linearizable (default) or stale", consistency)}
}
