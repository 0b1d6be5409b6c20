package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/coordination"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/governance"
	"github.com/baldurhq/baldurd/idempotency"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/notify"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/protobuf/encoding/prototext"
)

// systemActor is the actor of commands the leader proposes on its own.
const systemActor = "system:leader"

// leaderTask is time-driven work the leader does: each domain decides what
// is due (a pure function of the replicated state and the leader's clock)
// and the runner proposes it. A transition proposed twice (say by an old
// and a new leader) applies once, because each command names what it acts
// on.
type leaderTask struct {
	name  string        // the domain, for logs
	every time.Duration // 0: every leader tick
	run   func(ctx context.Context, now time.Time) error
}

// leaderTasks is every domain's time-driven work, in the order it runs.
func (s *Server) leaderTasks() []leaderTask {
	return []leaderTask{
		{name: "emergency", run: s.proposeDue("emergency", emergency.Proposals, nil)},
		{name: "circuit", run: s.circuitTimers()},
		{name: "circuit", every: max(time.Second, min(time.Minute, s.cfg.CircuitIdleTimeout/4)), run: s.proposeDue("circuit", s.idleBreakers,
			func(cmd *raftv1.Command) {
				if e := s.evaluator(); e != nil {
					e.Forget(cmd.GetCircuit().GetName())
				}
			})},
		{name: "coordination", run: s.proposeDue("coordination", coordination.Proposals,
			func(*raftv1.Command) { s.metrics.leases.WithLabelValues("expired").Inc() })},
		{name: "dlq", every: time.Second, run: s.dlqDue},
		{name: "governance", every: time.Second, run: s.proposeDue("governance", governance.Proposals, nil)},
		{name: "governance", run: s.carryOutApprovals},
		{name: "notify", run: s.notifyTask},
		{name: "idempotency", every: time.Second, run: s.proposeDue("idempotency", idempotency.Proposals, nil)},
		{name: "idempotency", every: 5 * time.Second, run: s.expireIdempotencyPG},
		{name: "notify", every: 5 * time.Second, run: s.probeMembers},
		{name: "notify", every: 5 * time.Second, run: s.dlqThresholds},
		{name: "canary", every: 250 * time.Millisecond, run: s.proposeDue("canary", s.canaryDue, func(cmd *raftv1.Command) {
			if c := cmd.GetCanary(); c.GetInterlock() {
				s.metrics.canaryInterlock.WithLabelValues(strings.ToLower(c.GetOp().String())).Inc()
			}
		})},
		{name: "audit", every: 2 * time.Second, run: s.auditTasks()},
		{name: "cluster", every: 5 * time.Second, run: s.proposeDue("cluster", s.staleMembers, nil)},
		{name: "cluster", every: max(100*time.Millisecond, min(time.Second, s.cfg.PromoteStabilization/4)), run: s.promoteStaged},
	}
}

// onLeader runs on the leader only, after its Barrier, until leadership
// ends: it runs the leader tasks every LeaderTick (or their own period).
func (s *Server) onLeader(ctx context.Context) {
	s.log.Info("raft.leader_elected")
	// Fleet windows start empty under every new leader (DESIGN principle 6).
	s.eval.Store(circuit.NewEvaluator())
	defer s.eval.Store(nil)
	// Rate-limit shares are learnt afresh (admission.Allocator).
	s.admit.Store(newAdmissionState(s.admissionLease(), s.now()))
	defer s.admit.Store(nil)
	defer s.notes.wg.Wait() // notifications in flight end with leadership
	s.events.reset()        // a new leader probes afresh
	// The election is an event but no change of the replicated state (a
	// restart must not add to the audit trail): it goes to the notifier
	// directly.
	if ev, ok := notify.Classify(0, "cluster.leader_elected", "member/"+s.cfg.NodeID, systemActor, fmt.Sprintf("elected in term %d", s.store.Term()), s.now()); ok {
		s.notes.mu.Lock()
		s.notes.pending = append(s.notes.pending, ev)
		s.notes.mu.Unlock()
	}
	tick := time.NewTicker(s.cfg.LeaderTick)
	defer tick.Stop()
	tasks := s.leaderTasks()
	last := make([]time.Time, len(tasks))
	for {
		select {
		case <-ctx.Done():
			s.log.Info("raft.leadership_lost")
			return
		case <-tick.C:
		}
		for i, t := range tasks {
			if t.every > 0 && time.Since(last[i]) < t.every {
				continue
			}
			last[i] = time.Now()
			if err := t.run(ctx, s.now()); err != nil && ctx.Err() == nil {
				s.log.Warn(t.name+".leader_task_failed", "err", err)
			}
		}
	}
}

// proposeDue returns a task that proposes, in order and as the leader,
// what due finds in the replicated state; it stops at the first failure
// (the next tick tries again). applied, if set, runs after each commit.
func (s *Server) proposeDue(domain string, due func(kv fsm.KV, now time.Time) []*raftv1.Command, applied func(*raftv1.Command)) func(context.Context, time.Time) error {
	return func(ctx context.Context, now time.Time) error {
		var cmds []*raftv1.Command
		_ = s.store.View(func(kv raftstore.KV) error { cmds = due(kv, now); return nil })
		for _, cmd := range cmds {
			cmd.Actor = systemActor
			res, err := s.writes.propose(ctx, cmd, onLeader)
			if err != nil {
				return fmt.Errorf("propose %q: %w", cmd.Reason, err)
			}
			if applied != nil {
				applied(cmd)
			}
			s.log.Info(domain+".leader_proposed", "reason", cmd.Reason, "revision", res.Revision, "command", bodyText(cmd))
		}
		return nil
	}
}

// bodyText is a command's body in protobuf text form, for logs.
func bodyText(cmd *raftv1.Command) string {
	m := cmd.ProtoReflect()
	fd := m.WhichOneof(m.Descriptor().Oneofs().ByName("body"))
	if fd == nil {
		return ""
	}
	return string(fd.Name()) + " {" + prototext.MarshalOptions{}.Format(m.Get(fd).Message().Interface()) + "}"
}

// staleMembers drops member-table rows of nodes no longer in the Raft
// configuration (e.g. after a removal or a restore from another cluster).
func (s *Server) staleMembers(kv fsm.KV, _ time.Time) []*raftv1.Command {
	servers, err := s.store.Servers()
	if err != nil {
		return nil
	}
	inConf := map[string]bool{}
	for _, sv := range servers {
		inConf[sv.ID] = true
	}
	var out []*raftv1.Command
	for id := range listMembers(kv) {
		if !inConf[id] {
			out = append(out, &raftv1.Command{Reason: "member left the Raft configuration", Version: 1,
				Body: &raftv1.Command_MemberRemove{MemberRemove: &raftv1.MemberRemove{Id: id}}})
		}
	}
	return out
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
				_, err := s.writes.propose(pctx, cmd, anyNode)
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

// idleBreakers is circuit.IdleProposals with the leader's report times
// (nothing while a voter cannot apply a delete yet).
func (s *Server) idleBreakers(kv fsm.KV, now time.Time) []*raftv1.Command {
	ev := s.evaluator()
	if ev == nil || s.checkCommandVersion(deleteVersion) != nil {
		return nil
	}
	return circuit.IdleProposals(kv, s.settingsFrom(kv).circuit, ev.LastSeen, now, s.cfg.CircuitIdleTimeout)
}

// circuitTimers runs circuit.Proposals only when a breaker changed since the
// last scan or the earliest due time came: with thousands of idle breakers
// the leader does not decode them all ten times a second.
func (s *Server) circuitTimers() func(context.Context, time.Time) error {
	propose := s.proposeDue("circuit", circuit.Proposals, nil)
	var seen uint64
	var next time.Time
	scanned := false
	return func(ctx context.Context, now time.Time) error {
		gen := s.circuitGen.Load()
		if scanned && gen == seen && (next.IsZero() || now.Before(next)) {
			return nil
		}
		if err := propose(ctx, now); err != nil {
			return err
		}
		_ = s.store.View(func(kv raftstore.KV) error { next = circuit.NextDue(kv); return nil })
		seen, scanned = gen, true
		return nil
	}
}
