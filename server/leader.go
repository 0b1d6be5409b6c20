package server

import (
	"context"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/raftstore"
)

// systemActor is the actor of commands the leader proposes on its own.
const systemActor = "system:leader"

// onLeader runs on the leader only, after its Barrier, until leadership
// ends. Time-driven transitions are evaluated here and take effect by
// proposing a command that names what it acts on, so a transition proposed
// twice (say by an old and a new leader) applies once.
func (s *Server) onLeader(ctx context.Context) {
	s.log.Info("raft.leader_elected")
	// Fleet windows start empty under every new leader (DESIGN principle 6).
	s.eval.Store(circuit.NewEvaluator())
	defer s.eval.Store(nil)
	tick := time.NewTicker(s.cfg.LeaderTick)
	defer tick.Stop()
	lastReconcile, lastDLQ := time.Time{}, time.Time{}
	for {
		select {
		case <-ctx.Done():
			s.log.Info("raft.leadership_lost")
			return
		case <-tick.C:
		}
		s.proposeDue(ctx)
		s.proposeCircuitDue(ctx)
		s.proposeLeaseExpiries(ctx)
		if time.Since(lastDLQ) >= time.Second {
			s.proposeDLQDue(ctx)
			lastDLQ = time.Now()
		}
		if time.Since(lastReconcile) > 5*time.Second {
			s.reconcileMembers(ctx)
			lastReconcile = time.Now()
		}
	}
}

func (s *Server) proposeDue(ctx context.Context) {
	var due []emergency.DueAction
	_ = s.store.View(func(kv raftstore.KV) error { due = emergency.Due(kv, s.now()); return nil })
	for _, d := range due {
		cmd := &raftv1.Command{Actor: systemActor, Version: 1}
		if d.Expire {
			cmd.Reason = "emergency duration elapsed"
			cmd.Body = &raftv1.Command_EmergencyExpire{EmergencyExpire: &raftv1.EmergencyExpire{Scope: d.Scope, ActivationRevision: d.ActivationRevision}}
		} else {
			cmd.Reason = "gradual recovery step"
			cmd.Body = &raftv1.Command_EmergencyStep{EmergencyStep: &raftv1.EmergencyStep{Scope: d.Scope, ActivationRevision: d.ActivationRevision, FromLevel: int32(d.FromLevel)}}
		}
		rev, err := s.applyLocal(ctx, cmd)
		if err != nil {
			s.log.Warn("emergency.transition_propose_failed", "scope", d.Scope, "expire", d.Expire, "err", err)
			return
		}
		event := "emergency.level_stepped_down"
		if d.Expire {
			event = "emergency.activation_expired"
		}
		s.log.Info(event, "scope", d.Scope, "from_level", d.FromLevel.String(), "revision", rev)
	}
}

// reconcileMembers drops member-table rows of nodes no longer in the Raft
// configuration (e.g. after a removal or a restore from another cluster).
func (s *Server) reconcileMembers(ctx context.Context) {
	servers, err := s.store.Servers()
	if err != nil {
		return
	}
	inConf := map[string]bool{}
	for _, sv := range servers {
		inConf[sv.ID] = true
	}
	var stale []string
	_ = s.store.View(func(kv raftstore.KV) error {
		for id := range listMembers(kv) {
			if !inConf[id] {
				stale = append(stale, id)
			}
		}
		return nil
	})
	for _, id := range stale {
		cmd := &raftv1.Command{Actor: systemActor, Reason: "member left the Raft configuration", Version: 1,
			Body: &raftv1.Command_MemberRemove{MemberRemove: &raftv1.MemberRemove{Id: id}}}
		if _, err := s.applyLocal(ctx, cmd); err != nil {
			s.log.Warn("cluster.member_reconcile_failed", "id", id, "err", err)
			return
		}
	}
}

// registerSelf keeps this node's row of the member table current, so
// followers can forward to it when it leads. It runs on every node.
func (s *Server) registerSelf(ctx context.Context) {
	version := uint32(CommandVersion)
	if s.cfg.CommandVersion != 0 {
		version = s.cfg.CommandVersion
	}
	want := memberRecord{ID: s.cfg.NodeID, RaftAddr: s.raftAdvertise, GRPCAddr: s.grpcAdvertise, HTTPAddr: s.httpAdvertise, CommandVersion: version}
	delay := 20 * time.Millisecond
	for {
		var have memberRecord
		_ = s.store.View(func(kv raftstore.KV) error { have, _ = getMember(kv, s.cfg.NodeID); return nil })
		if have != want {
			if id, _ := s.store.Leader(); id != "" {
				cmd := &raftv1.Command{Actor: "system:" + s.cfg.NodeID, Reason: "node publishes its API addresses", Version: 1,
					Body: &raftv1.Command_MemberUpsert{MemberUpsert: &raftv1.MemberUpsert{Id: want.ID, RaftAddr: want.RaftAddr, GrpcAddr: want.GRPCAddr, HttpAddr: want.HTTPAddr, CommandVersion: want.CommandVersion}}}
				pctx, cancel := context.WithTimeout(s.nodeContext(ctx), 5*time.Second)
				_, err := s.propose(pctx, cmd)
				cancel()
				if err != nil {
					s.log.Debug("cluster.member_register_failed", "err", err)
				} else {
					s.log.Info("cluster.member_registered", "id", want.ID, "grpc_addr", want.GRPCAddr)
					delay = 20 * time.Millisecond
				}
			}
		} else {
			delay = 2 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, 2*time.Second)
	}
}
