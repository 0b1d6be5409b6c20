package postgres

import (
	"context"
	"fmt"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Store is the DLQ table behind dlq.Store. PostgreSQL is the single
// source of truth for entries; operator actions (resolve, redrive, replay,
// purge) are still recorded in the replicated audit trail through Audit,
// captures are not (PostgreSQL is the store for volumes beyond the
// replicated state).
type Store struct {
	DB     *DLQ
	Limits func() dlq.Limits
	// Now is the leader's clock.
	Now func() time.Time
	// Audit records an operator action in the replicated audit trail.
	Audit func(ctx context.Context, c dlq.Caller, action, target string)
}

var _ dlq.Store = (*Store)(nil)

func (s *Store) meta(c dlq.Caller) fsm.Meta {
	return fsm.Meta{Time: s.Now(), Actor: c.Actor, Reason: c.Reason}
}

func (s *Store) Get(ctx context.Context, id string) (dlq.Entry, bool, error) {
	return s.DB.Get(ctx, id)
}

func (s *Store) List(ctx context.Context, f dlq.Filter, size int, token string) ([]dlq.Entry, string, error) {
	return s.DB.List(ctx, f, size, token)
}

func (s *Store) Stats(ctx context.Context) (dlq.Stats, error) { return s.DB.Stats(ctx) }

// ReadBarrier has nothing to wait for: every read goes to PostgreSQL.
func (s *Store) ReadBarrier(_ context.Context, consistency string) error {
	return dlq.CheckConsistency(consistency)
}

func (s *Store) Store(ctx context.Context, _ dlq.Caller, e dlq.Entry) (dlq.Result, uint64, error) {
	r, err := s.DB.Store(ctx, e, s.Limits(), s.Now())
	return r, 0, err
}

func (s *Store) Transition(ctx context.Context, c dlq.Caller, cmd *raftv1.DLQCommand) (dlq.Entry, error) {
	e, action, err := s.DB.Transition(ctx, s.meta(c), cmd, s.Limits().TruncateBlocks)
	if err == nil && action != "" && s.Audit != nil {
		switch cmd.GetOp() {
		case raftv1.DLQCommand_RESOLVE, raftv1.DLQCommand_REDRIVE, raftv1.DLQCommand_REPLAY:
			s.Audit(ctx, c, "dlq."+action, "dlq/"+e.ID)
		}
	}
	return e, err
}

// Acquire leases entries one row lock at a time; concurrent workers skip
// each other's rows.
func (s *Store) Acquire(ctx context.Context, c dlq.Caller, domain, worker string, lease time.Duration, max int) ([]dlq.Entry, error) {
	var out []dlq.Entry
	for len(out) < max {
		e, ok, err := s.DB.AcquireNext(ctx, s.meta(c), domain, worker, lease)
		if err != nil {
			if len(out) > 0 {
				return out, nil // what was leased is the caller's; the rest waits
			}
			return nil, err
		}
		if !ok {
			break
		}
		out = append(out, e)
	}
	return out, nil
}

func (s *Store) Purge(ctx context.Context, c dlq.Caller, ids []string, olderThan time.Duration) (int64, uint64, error) {
	n, err := s.DB.Purge(ctx, ids, s.Now().Add(-olderThan))
	if err == nil && n > 0 && s.Audit != nil {
		c.Reason = fmt.Sprintf("purged %d archived entries", n)
		s.Audit(ctx, c, "dlq.purged", "dlq")
	}
	return n, 0, err
}

func (s *Store) Due(ctx context.Context, now time.Time) ([]dlq.Due, error) {
	return s.DB.Due(ctx, now, s.Limits().Retention(), 500)
}
