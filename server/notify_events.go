package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/raftstore"
)

// Events that are no change of the replicated state of their own: the
// leader notes them in the audit trail (an AuditNote), where the notifier
// finds them like every other event. Each is noted once per episode: when
// it begins (and, for members, when it ends).

// eventNotes is the leader's memory of the episodes it noted.
type eventNotes struct {
	mu          sync.Mutex
	unreachable map[string]int  // member → consecutive failed probes
	reported    map[string]bool // members noted unreachable
	overDLQ     map[string]bool // domains noted over the PENDING threshold
}

// unreachableCounts is each probed member's consecutive failed probes.
func (n *eventNotes) unreachableCounts() map[string]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make(map[string]int, len(n.unreachable))
	for k, v := range n.unreachable {
		out[k] = v
	}
	return out
}

// reset forgets what was noted (a new leader probes afresh).
func (n *eventNotes) reset() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.unreachable, n.reported, n.overDLQ = nil, nil, nil
}

// memberUnreachableAfter is how many failed probes (5 s apart) make a member
// unreachable.
const memberUnreachableAfter = 3

// note appends an audit note in the cluster's own name, from any member.
func (s *Server) note(ctx context.Context, action, target, reason string) {
	s.auditNoteVia(ctx, dlq.Caller{Actor: systemActor, Reason: reason}, action, target, anyNode)
}

// probeMembers is the leader task that notes a member it cannot reach
// (cluster.member_unreachable, after 3 failed probes) and its return
// (cluster.member_reachable).
func (s *Server) probeMembers(ctx context.Context, _ time.Time) error {
	servers, err := s.store.Servers()
	if err != nil {
		return nil
	}
	var members map[string]memberRecord
	_ = s.store.View(func(kv raftstore.KV) error { members = listMembers(kv); return nil })
	n := &s.events
	for _, srv := range servers {
		m, ok := members[srv.ID]
		if srv.ID == s.cfg.NodeID || !ok || m.GRPCAddr == "" {
			continue
		}
		_, perr := s.progressOf(ctx, m.GRPCAddr)
		if ctx.Err() != nil {
			return nil
		}
		n.mu.Lock()
		if n.unreachable == nil {
			n.unreachable, n.reported = map[string]int{}, map[string]bool{}
		}
		var action, reason string
		switch {
		case perr != nil:
			n.unreachable[srv.ID]++
			if n.unreachable[srv.ID] == memberUnreachableAfter && !n.reported[srv.ID] {
				n.reported[srv.ID] = true
				action, reason = "cluster.member_unreachable", fmt.Sprintf("no answer to %d probes 5 s apart: %v", memberUnreachableAfter, statusMessage(perr))
			}
		default:
			n.unreachable[srv.ID] = 0
			if n.reported[srv.ID] {
				delete(n.reported, srv.ID)
				action, reason = "cluster.member_reachable", "answers again"
			}
		}
		n.mu.Unlock()
		if action != "" {
			s.note(ctx, action, "member/"+srv.ID, reason)
		}
	}
	return nil
}

// dlqThresholds is the leader task that notes a DLQ domain whose PENDING
// entries reach --notify-dlq-pending-threshold (dlq.threshold_exceeded), once
// until it falls below again.
func (s *Server) dlqThresholds(ctx context.Context, _ time.Time) error {
	limit := s.cfg.NotifyDLQPendingThreshold
	if limit <= 0 {
		return nil
	}
	st, err := s.dlq.Stats(ctx)
	if err != nil {
		return err
	}
	n := &s.events
	for domain, all := range st.ByDomain {
		over := false
		if all >= int64(limit) {
			pending, _, err := s.dlq.List(ctx, dlq.Filter{Domain: domain, Status: dlq.Pending}, limit, "")
			if err != nil {
				return err
			}
			over = len(pending) >= limit
		}
		n.mu.Lock()
		if n.overDLQ == nil {
			n.overDLQ = map[string]bool{}
		}
		report := over && !n.overDLQ[domain]
		if over {
			n.overDLQ[domain] = true
		} else {
			delete(n.overDLQ, domain)
		}
		n.mu.Unlock()
		if report {
			s.note(ctx, "dlq.threshold_exceeded", "dlq/domain/"+domain, fmt.Sprintf("%d or more PENDING entries (threshold %d)", limit, limit))
		}
	}
	return nil
}
