package server

import (
	"context"
	"errors"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/postgres"
	"github.com/baldurhq/baldurd/raftstore"
)

// newDLQStore wires the configured dlq.Store: the replicated state
// (default) or PostgreSQL.
func (s *Server) newDLQStore() dlq.Store {
	if s.cfg.DLQStore == "postgres" {
		return &postgres.Store{DB: s.pg, Limits: s.dlqLimits, Now: s.now, Audit: s.auditNote}
	}
	return &dlq.Replicated{
		View:    func(f func(fsm.KV) error) error { return s.store.View(func(kv raftstore.KV) error { return f(kv) }) },
		Propose: s.proposeDLQ,
		Barrier: s.readBarrier,
		Now:     s.now,
		Limits:  s.dlqLimits, MaxEntry: raftstore.MaxEntrySize,
	}
}

// caller is who the request in ctx is, for a DLQ write.
func caller(ctx context.Context, reason string) dlq.Caller {
	cmd := newCommand(ctx, reason)
	return dlq.Caller{Actor: cmd.Actor, RequestID: cmd.RequestId, Reason: reason}
}

// proposeDLQ is dlq.Replicated's way to the log (DLQ writes are
// leader-only methods, so it proposes on this node).
func (s *Server) proposeDLQ(ctx context.Context, c dlq.Caller, body *raftv1.DLQCommand, at time.Time) (dlq.Result, uint64, error) {
	cmd := &raftv1.Command{Actor: c.Actor, RequestId: c.RequestID, Reason: c.Reason, Version: 1, Body: &raftv1.Command_Dlq{Dlq: body}}
	if body.Op == raftv1.DLQCommand_BATCH {
		cmd.Version = batchVersion
		if err := s.checkCommandVersion(batchVersion); errors.Is(err, errUpgradePending) {
			// A voter cannot apply BATCH yet: one entry per command.
			var out dlq.Result
			var rev uint64
			for _, item := range body.Stores {
				r, rv, err := s.proposeDLQ(ctx, c, item, at)
				out.Batch = append(out.Batch, dlq.BatchItem{Result: r, Err: err})
				rev = max(rev, rv)
			}
			return out, rev, nil
		}
	}
	if !at.IsZero() {
		cmd.TimeUnixNano = at.UnixNano()
	}
	return proposed[dlq.Result](s.writes.propose(ctx, cmd, onLeader))
}

// auditNote records an action taken outside the replicated state (a
// PostgreSQL DLQ change, a replay pause) in the audit trail.
func (s *Server) auditNote(ctx context.Context, c dlq.Caller, action, target string) {
	s.auditNoteVia(ctx, c, action, target, onLeader)
}

// auditNoteVia is auditNote proposed by route (anyNode: from any member).
func (s *Server) auditNoteVia(ctx context.Context, c dlq.Caller, action, target string, r route) {
	cmd := &raftv1.Command{Actor: c.Actor, Reason: c.Reason, Version: 1,
		Body: &raftv1.Command_AuditNote{AuditNote: &raftv1.AuditNote{Action: action, Target: target, Detail: c.Reason}}}
	if _, err := s.writes.propose(ctx, cmd, r); err != nil {
		s.log.Warn("audit.note_failed", "action", action, "target", target, "err", err)
	}
}
