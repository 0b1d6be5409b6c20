package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/postgres"
	"github.com/baldurhq/baldurd/raftstore"
)

// dlqBackend is where DLQ entries live: the Raft-replicated bbolt state
// (default) or PostgreSQL. Both apply the dlq package's rules; writes run
// on the leader (they are forwarded there), so time-driven work and replay
// leases have one owner.
type dlqBackend interface {
	get(ctx context.Context, id string) (dlq.Entry, bool, error)
	list(ctx context.Context, f dlq.Filter, size int, token string) ([]dlq.Entry, string, error)
	stats(ctx context.Context) (dlq.Stats, error)
	store(ctx context.Context, e dlq.Entry) (dlq.Result, uint64, error)
	// transition applies one lifecycle command by the caller in ctx.
	transition(ctx context.Context, reason string, c *raftv1.DLQCommand) (dlq.Entry, error)
	// acquire leases the oldest replayable entry of domain, if any.
	acquire(ctx context.Context, domain, worker string, lease time.Duration) (dlq.Entry, bool, error)
	purge(ctx context.Context, ids []string, olderThan time.Duration) (int64, uint64, error)
	due(ctx context.Context, now time.Time) ([]dlq.Due, error)
	// readBarrier makes the next read see every acknowledged write.
	readBarrier(ctx context.Context, consistency string) error
}

// raftDLQ keeps entries in the replicated state.
type raftDLQ struct {
	s *Server
	// inflight holds ids being leased right now, so concurrent workers pick
	// different entries instead of racing for the oldest one.
	inflight *inflightSet
	// groups commits concurrent stores together (dlq_group.go).
	groups *storeGroups
}

type inflightSet struct {
	mu  sync.Mutex
	ids map[string]bool
}

// claim marks the first id of candidates not already claimed.
func (f *inflightSet) claim(candidates []string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range candidates {
		if !f.ids[id] {
			f.ids[id] = true
			return id
		}
	}
	return ""
}

func (f *inflightSet) release(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.ids, id)
}

func (r raftDLQ) get(_ context.Context, id string) (dlq.Entry, bool, error) {
	var e dlq.Entry
	var ok bool
	err := r.s.store.View(func(kv raftstore.KV) error { e, ok = dlq.Get(kv, id); return nil })
	return e, ok, err
}

func (r raftDLQ) list(_ context.Context, f dlq.Filter, size int, token string) ([]dlq.Entry, string, error) {
	var out []dlq.Entry
	var next string
	err := r.s.store.View(func(kv raftstore.KV) error {
		var err error
		out, next, err = dlq.List(kv, f, size, token)
		return err
	})
	return out, next, err
}

func (r raftDLQ) stats(context.Context) (dlq.Stats, error) {
	var st dlq.Stats
	err := r.s.store.View(func(kv raftstore.KV) error { st = dlq.GetStats(kv); return nil })
	return st, err
}

func (r raftDLQ) apply(ctx context.Context, reason string, body *raftv1.DLQCommand) (dlq.Result, uint64, error) {
	cmd := newCommand(ctx, reason)
	cmd.Body = &raftv1.Command_Dlq{Dlq: body}
	res, err := r.s.applyLocalResult(ctx, cmd)
	return resultOf[dlq.Result](res), res.Revision, err
}

func (r raftDLQ) store(ctx context.Context, e dlq.Entry) (dlq.Result, uint64, error) {
	// The entry carries the command's time, so replicas store its bytes as
	// they are (dlq.StoreCommand).
	now := time.Unix(0, r.s.now().UnixNano()).UTC()
	body := dlq.StoreCommand(e, now, r.s.cfg.DLQ)
	if n := len(body.EntryJson); n > raftstore.MaxEntrySize-4096 {
		return dlq.Result{}, 0, &fsm.ArgumentError{FieldName: "entry", Code: "REQUEST_TOO_LARGE", Msg: fmt.Sprintf("the entry is %d bytes after truncation; shorten metadata", n)}
	}
	cmd := newCommand(ctx, "dlq store")
	res, rev, err := r.groups.submit(ctx, body, cmd.Actor, cmd.RequestId, now)
	if err != nil {
		return res, rev, err
	}
	if res.Changed {
		// What the replicas stored: e as StoreCommand encoded it, at the
		// revision of the entry that carried it (no need to decode the
		// stored bytes).
		res.Entry = dlq.Stored(e, now, rev)
	}
	return res, rev, nil
}

func (r raftDLQ) transition(ctx context.Context, reason string, c *raftv1.DLQCommand) (dlq.Entry, error) {
	res, _, err := r.apply(ctx, reason, c)
	return res.Entry, err
}

func (r raftDLQ) acquire(ctx context.Context, domain, worker string, lease time.Duration) (dlq.Entry, bool, error) {
	var candidates []string
	_ = r.s.store.View(func(kv raftstore.KV) error {
		entries, _, _ := dlq.List(kv, dlq.Filter{Domain: domain, Status: dlq.Pending}, 64, "")
		for _, e := range entries {
			if e.RetryCount < e.MaxRetries && !(e.Truncated && r.s.cfg.DLQ.TruncateBlocks) {
				candidates = append(candidates, e.ID)
			}
		}
		return nil
	})
	pick := r.inflight.claim(candidates)
	if pick == "" {
		return dlq.Entry{}, false, nil
	}
	defer r.inflight.release(pick)
	e, err := r.transition(ctx, "replay lease", &raftv1.DLQCommand{Op: raftv1.DLQCommand_ACQUIRE, Id: pick, Worker: worker, LeaseNanos: int64(lease)})
	return e, err == nil, err
}

func (r raftDLQ) purge(ctx context.Context, ids []string, olderThan time.Duration) (int64, uint64, error) {
	before, _ := r.stats(ctx)
	_, rev, err := r.apply(ctx, "purge", &raftv1.DLQCommand{Op: raftv1.DLQCommand_PURGE, Ids: ids, OlderThanNanos: int64(olderThan)})
	if err != nil {
		return 0, 0, err
	}
	after, _ := r.stats(ctx)
	return before.ByStatus[string(dlq.Archived)] - after.ByStatus[string(dlq.Archived)], rev, nil
}

func (r raftDLQ) due(_ context.Context, now time.Time) ([]dlq.Due, error) {
	var out []dlq.Due
	retention := time.Duration(r.s.cfg.DLQ.RetentionDays) * 24 * time.Hour
	err := r.s.store.View(func(kv raftstore.KV) error { out = dlq.DueWork(kv, now, retention, 500); return nil })
	return out, err
}

func (r raftDLQ) readBarrier(ctx context.Context, consistency string) error {
	return r.s.readBarrier(ctx, consistency)
}

// pgDLQ keeps entries in PostgreSQL. Operator actions are still recorded in
// the replicated audit trail (an AuditNote per action); captures are not,
// PostgreSQL being the store for volumes beyond the replicated state.
type pgDLQ struct {
	s  *Server
	db *postgres.DLQ
}

func (p pgDLQ) meta(ctx context.Context, reason string) fsm.Meta {
	return fsm.Meta{Time: p.s.now(), Actor: identityFrom(ctx).Name, Reason: reason}
}

func (p pgDLQ) get(ctx context.Context, id string) (dlq.Entry, bool, error) { return p.db.Get(ctx, id) }

func (p pgDLQ) list(ctx context.Context, f dlq.Filter, size int, token string) ([]dlq.Entry, string, error) {
	return p.db.List(ctx, f, size, token)
}

func (p pgDLQ) stats(ctx context.Context) (dlq.Stats, error) { return p.db.Stats(ctx) }

func (p pgDLQ) store(ctx context.Context, e dlq.Entry) (dlq.Result, uint64, error) {
	r, err := p.db.Store(ctx, e, p.s.cfg.DLQ, p.s.now())
	return r, 0, err
}

func (p pgDLQ) note(ctx context.Context, action, target, detail string) {
	cmd := newCommand(ctx, detail)
	cmd.Body = &raftv1.Command_AuditNote{AuditNote: &raftv1.AuditNote{Action: action, Target: target, Detail: detail}}
	if _, err := p.s.applyLocal(ctx, cmd); err != nil {
		p.s.log.Warn("dlq.audit_note_failed", "action", action, "err", err)
	}
}

func (p pgDLQ) transition(ctx context.Context, reason string, c *raftv1.DLQCommand) (dlq.Entry, error) {
	e, action, err := p.db.Transition(ctx, p.meta(ctx, reason), c, p.s.cfg.DLQ.TruncateBlocks)
	if err == nil && action != "" {
		switch c.GetOp() {
		case raftv1.DLQCommand_RESOLVE, raftv1.DLQCommand_REDRIVE, raftv1.DLQCommand_REPLAY:
			p.note(ctx, "dlq."+action, "dlq/"+e.ID, reason)
		}
	}
	return e, err
}

func (p pgDLQ) acquire(ctx context.Context, domain, worker string, lease time.Duration) (dlq.Entry, bool, error) {
	return p.db.AcquireNext(ctx, p.meta(ctx, "replay lease"), domain, worker, lease)
}

func (p pgDLQ) purge(ctx context.Context, ids []string, olderThan time.Duration) (int64, uint64, error) {
	n, err := p.db.Purge(ctx, ids, p.s.now().Add(-olderThan))
	if err == nil && n > 0 {
		p.note(ctx, "dlq.purged", "dlq", fmt.Sprintf("purged %d archived entries", n))
	}
	return n, 0, err
}

func (p pgDLQ) due(ctx context.Context, now time.Time) ([]dlq.Due, error) {
	return p.db.Due(ctx, now, time.Duration(p.s.cfg.DLQ.RetentionDays)*24*time.Hour, 500)
}

func (p pgDLQ) readBarrier(_ context.Context, consistency string) error {
	switch consistency {
	case "", "linearizable", "stale":
		return nil // PostgreSQL is the single source of truth
	}
	return invalidField("consistency", fmt.Sprintf("%q: use linearizable (default) or stale", consistency))
}
