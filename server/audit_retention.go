package server

import (
	"context"
	"fmt"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/audit"
	"github.com/baldurhq/baldurd/raftstore"
)

// The audit trail's retention and export, run by the leader: records are
// copied to PostgreSQL when --postgres-dsn is set, and records older than
// --audit-retention-days are removed behind a signed anchor, never before
// the export holds them.

// auditBatch bounds the records one export round or one removal takes.
const auditBatch = 1000

// auditExport is the leader's position in the PostgreSQL export.
type auditExport struct {
	through uint64 // records up to here are in PostgreSQL
	known   bool   // through was read from PostgreSQL under this leader
}

func (s *Server) auditTasks() func(context.Context, time.Time) error {
	var exp auditExport
	return func(ctx context.Context, now time.Time) error {
		if s.pg != nil {
			if err := s.exportAudit(ctx, &exp); err != nil {
				exp.known = false
				return fmt.Errorf("audit export: %w", err)
			}
		}
		return s.retainAudit(ctx, now, exp)
	}
}

// exportAudit copies the records after the export's last one.
func (s *Server) exportAudit(ctx context.Context, exp *auditExport) error {
	if !exp.known {
		n, err := s.pg.AuditExported(ctx)
		if err != nil {
			return err
		}
		exp.through, exp.known = n, true
	}
	for {
		var recs []audit.Record
		_ = s.store.View(func(kv raftstore.KV) error {
			recs, _, _ = audit.List(kv, audit.Filter{}, auditBatch, audit.PageToken(exp.through))
			return nil
		})
		if len(recs) == 0 {
			return nil
		}
		if err := s.pg.ExportAudit(ctx, recs); err != nil {
			return err
		}
		exp.through = recs[len(recs)-1].Seq
		s.metrics.auditExported.Set(float64(exp.through))
		if len(recs) < auditBatch {
			return nil
		}
	}
}

// retainAudit proposes the removal of records past retention.
func (s *Server) retainAudit(ctx context.Context, now time.Time, exp auditExport) error {
	if s.cfg.AuditRetentionDays == 0 || s.checkCommandVersion(promotionVersion) != nil {
		return nil
	}
	bound := uint64(0)
	if s.pg != nil {
		if !exp.known || exp.through == 0 {
			return nil // nothing is exported yet: nothing may go
		}
		bound = exp.through
	}
	var through uint64
	_ = s.store.View(func(kv raftstore.KV) error {
		through = audit.RetentionDue(kv, now, time.Duration(s.cfg.AuditRetentionDays)*24*time.Hour, auditBatch, bound)
		return nil
	})
	if through == 0 {
		return nil
	}
	cmd := &raftv1.Command{Actor: systemActor, Reason: fmt.Sprintf("audit retention: records older than %d days", s.cfg.AuditRetentionDays), Version: promotionVersion,
		Body: &raftv1.Command_AuditRetention{AuditRetention: &raftv1.AuditRetention{ThroughSeq: through}}}
	if _, err := s.writes.propose(ctx, cmd, onLeader); err != nil {
		return err
	}
	s.log.Info("audit.retention", "through_seq", through)
	return nil
}
