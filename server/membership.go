package server

import (
	"context"
	"fmt"
	"sync"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/raftstore"
)

// Safe membership: a node joins as a non-voter STAGING for promotion, and
// the leader makes it a voter only once it has kept up with the log for
// --promote-stabilization (etcd's learners, Consul's autopilot). Until then
// it does not count toward the quorum, so a node that is new, slow or
// unreachable cannot stop the cluster's writes.

// promotionVersion is the command version of MemberPromotion.
const promotionVersion uint32 = 5

// promoter is the leader's memory of how staged members are doing. It is
// rebuilt by every new leader: a member must show stable progress to the
// leader that promotes it.
type promoter struct {
	mu       sync.Mutex
	since    map[string]time.Time // caught up without a break since
	trailing map[string]uint64    // entries behind at the last check
}

func (p *promoter) observe(id string, trailing uint64, caughtUp bool, now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.since == nil {
		p.since, p.trailing = map[string]time.Time{}, map[string]uint64{}
	}
	p.trailing[id] = trailing
	if !caughtUp {
		delete(p.since, id)
		return 0
	}
	if _, ok := p.since[id]; !ok {
		p.since[id] = now
	}
	return now.Sub(p.since[id])
}

func (p *promoter) forget(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.since, id)
	delete(p.trailing, id)
}

// trailingOf is what the last check found for id (for the cluster view).
func (p *promoter) trailingOf(id string) (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.trailing[id]
	return n, ok
}

// stagePromotion records (or clears) that id is to become a voter.
func (s *Server) stagePromotion(ctx context.Context, id string, pending bool, actor, reason string) error {
	cmd := &raftv1.Command{Actor: actor, Reason: reason, Version: promotionVersion,
		Body: &raftv1.Command_MemberPromotion{MemberPromotion: &raftv1.MemberPromotion{Id: id, Pending: pending}}}
	_, err := s.writes.propose(ctx, cmd, onLeader)
	return err
}

// promoteStaged is the leader task: it asks each staged non-voter how far
// it has applied and promotes the ones that kept up long enough.
func (s *Server) promoteStaged(ctx context.Context, _ time.Time) error {
	var staged []memberRecord
	_ = s.store.View(func(kv raftstore.KV) error {
		for _, m := range listMembers(kv) {
			if m.PromotionPending {
				staged = append(staged, m)
			}
		}
		return nil
	})
	if len(staged) == 0 {
		return nil
	}
	servers, err := s.store.Servers()
	if err != nil {
		return err
	}
	conf := map[string]raftstore.Server{}
	for _, sv := range servers {
		conf[sv.ID] = sv
	}
	for _, m := range staged {
		sv, in := conf[m.ID]
		switch {
		case !in:
			s.promo.forget(m.ID)
			continue // removed: the stale-member sweep drops its row
		case sv.Voter:
			s.promo.forget(m.ID)
			if err := s.stagePromotion(ctx, m.ID, false, systemActor, "member is a voter"); err != nil {
				return err
			}
			continue
		case m.GRPCAddr == "":
			continue // it has not published its addresses yet
		}
		applied, err := s.progressOf(ctx, m.GRPCAddr)
		if err != nil {
			s.promo.observe(m.ID, 0, false, time.Now())
			s.log.Debug("cluster.promotion_check_failed", "id", m.ID, "err", err)
			continue
		}
		last, _ := s.store.LogProgress()
		trailing := uint64(0)
		if applied < last {
			trailing = last - applied
		}
		stable := s.promo.observe(m.ID, trailing, trailing <= s.cfg.PromoteMaxTrailing, time.Now())
		if trailing > s.cfg.PromoteMaxTrailing || stable < s.cfg.PromoteStabilization {
			continue
		}
		if err := s.store.AddServer(ctx, m.ID, sv.Address, true); err != nil {
			return fmt.Errorf("promote %s: %w", m.ID, err)
		}
		s.promo.forget(m.ID)
		detail := fmt.Sprintf("caught up: %d entries behind, kept up for %v", trailing, stable.Round(time.Millisecond))
		s.log.Info("cluster.member_promoted", "id", m.ID, "trailing", trailing, "stable_for", stable)
		if err := s.stagePromotion(ctx, m.ID, false, systemActor, detail); err != nil {
			return err
		}
		cmd := &raftv1.Command{Actor: systemActor, Reason: detail, Version: 1,
			Body: &raftv1.Command_AuditNote{AuditNote: &raftv1.AuditNote{Action: "cluster.member_promoted", Target: "member/" + m.ID, Detail: detail}}}
		if _, err := s.writes.propose(ctx, cmd, onLeader); err != nil {
			return err
		}
	}
	return nil
}

// progressOf asks a node (Internal.Progress) how far it has applied.
func (s *Server) progressOf(ctx context.Context, grpcAddr string) (uint64, error) {
	conn, err := s.peers.conn(grpcAddr)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := raftv1.NewInternalClient(conn).Progress(forwardContext(s.nodeContext(ctx)), &raftv1.ProgressRequest{})
	if err != nil {
		return 0, err
	}
	return resp.AppliedIndex, nil
}

func (i *internalService) Progress(context.Context, *raftv1.ProgressRequest) (*raftv1.ProgressResponse, error) {
	last, applied := i.s.store.LogProgress()
	return &raftv1.ProgressResponse{LastIndex: last, AppliedIndex: applied}, nil
}
