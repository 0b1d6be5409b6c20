package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/governance"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
)

type systemService struct {
	pb.UnimplementedSystemServiceServer
	s *Server
}

func systemToPB(sys governance.System, killSwitch bool, now time.Time) *pb.SystemState {
	out := &pb.SystemState{Enabled: !killSwitch, DryRun: sys.DryRun, Mode: sys.Mode(), Revision: sys.Revision,
		BreakGlass: &pb.BreakGlassState{}}
	if sys.Strict {
		out.StrictReason, out.StrictSince, out.StrictUntil = sys.StrictReason, ts(sys.StrictSince), ts(sys.StrictSince.Add(governance.StrictMax))
	}
	if bg := sys.BreakGlass; bg != nil {
		out.BreakGlass = &pb.BreakGlassState{Active: sys.BreakGlassActive(now), Reason: bg.Reason, By: bg.By, Since: ts(bg.Since), Until: ts(bg.Until)}
	}
	return out
}

// systemState reads the system control from the local state.
func (s *Server) systemState() *pb.SystemState {
	var out *pb.SystemState
	_ = s.store.View(func(kv raftstore.KV) error {
		ks, _ := circuit.KillSwitch(kv)
		out = systemToPB(governance.Get(kv), ks, s.now())
		return nil
	})
	return out
}

func (g *systemService) GetSystem(ctx context.Context, req *pb.GetSystemRequest) (*pb.SystemState, error) {
	if err := g.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	return g.s.systemState(), nil
}

// killSwitch proposes the circuit domain's kill switch (the system control's
// enabled flag is its opposite).
func (g *systemService) killSwitch(ctx context.Context, on bool, reason string) (*pb.SystemState, error) {
	if on {
		if err := governance.CheckReason(reason, true, 1); err != nil {
			return nil, err
		}
	}
	if err := circuit.CheckReason(reason); err != nil {
		return nil, err
	}
	cmd := newCommand(ctx, reason)
	cmd.Body = &raftv1.Command_Circuit{Circuit: &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_KILL_SWITCH, Enabled: on}}
	if _, err := g.s.writes.propose(ctx, cmd, onLeader); err != nil {
		return nil, err
	}
	return g.s.systemState(), nil
}

func (g *systemService) DisableSystem(ctx context.Context, req *pb.SystemActionRequest) (*pb.SystemState, error) {
	if err := governance.CheckReason(req.Reason, true, 1); err != nil {
		return nil, err
	}
	if err := g.s.holdForApproval(ctx, "system.disable", req, "disable the system (kill switch on): SDK primitives pass through", req.Reason); err != nil {
		return nil, err
	}
	return g.killSwitch(ctx, true, req.Reason)
}

func (g *systemService) EnableSystem(ctx context.Context, req *pb.SystemActionRequest) (*pb.SystemState, error) {
	return g.killSwitch(ctx, false, req.Reason)
}

// propose sends one governance command.
func (g *systemService) propose(ctx context.Context, reason string, body *raftv1.GovernanceCommand) (*pb.SystemState, error) {
	if err := governance.CheckReason(reason, false, 0); err != nil {
		return nil, err
	}
	if err := g.s.checkCommandVersion(configVersion); err != nil {
		return nil, err
	}
	cmd := newCommand(ctx, reason)
	cmd.Version = configVersion
	cmd.Body = &raftv1.Command_Governance{Governance: body}
	if _, err := g.s.writes.propose(ctx, cmd, onLeader); err != nil {
		return nil, err
	}
	return g.s.systemState(), nil
}

func (g *systemService) SetDryRun(ctx context.Context, req *pb.SystemActionRequest) (*pb.SystemState, error) {
	return g.propose(ctx, req.Reason, &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_DRY_RUN})
}

func (g *systemService) SetLive(ctx context.Context, req *pb.SystemActionRequest) (*pb.SystemState, error) {
	if !req.Confirm {
		return nil, invalidField("confirm", "leaving dry run enforces every decision again: send confirm: true")
	}
	return g.propose(ctx, req.Reason, &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_LIVE, Confirm: true})
}

func (g *systemService) SetStrict(ctx context.Context, req *pb.SystemActionRequest) (*pb.SystemState, error) {
	if err := governance.CheckReason(req.Reason, true, 1); err != nil {
		return nil, err
	}
	return g.propose(ctx, req.Reason, &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_STRICT})
}

func (g *systemService) SetNormal(ctx context.Context, req *pb.SystemActionRequest) (*pb.SystemState, error) {
	return g.propose(ctx, req.Reason, &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_NORMAL})
}

func (g *systemService) BreakGlass(ctx context.Context, req *pb.BreakGlassRequest) (*pb.SystemState, error) {
	if err := governance.CheckReason(req.Reason, true, governance.MinReason); err != nil {
		return nil, err
	}
	if req.Ttl == nil {
		return nil, invalidField("ttl", fmt.Sprintf("is required (at most %v)", governance.MaxBreakGlass))
	}
	ttl, err := checkedDuration("ttl", req.Ttl)
	if err != nil {
		return nil, err
	}
	if ttl <= 0 || ttl > governance.MaxBreakGlass {
		return nil, invalidField("ttl", fmt.Sprintf("%v is outside 0 (excluded)..%v", ttl, governance.MaxBreakGlass))
	}
	return g.propose(ctx, req.Reason, &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_BREAK_GLASS, TtlNanos: int64(ttl)})
}

func (g *systemService) EndBreakGlass(ctx context.Context, req *pb.SystemActionRequest) (*pb.SystemState, error) {
	return g.propose(ctx, req.Reason, &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_END_BREAK_GLASS})
}

// gateInput reads what the pre-action gate looks at.
func gateInput(kv fsm.KV, now time.Time) governance.GateInput {
	ks, _ := circuit.KillSwitch(kv)
	g := emergency.Get(kv, emergency.GlobalScope)
	level := 0
	if g.Active {
		level = int(g.Level)
	}
	return governance.GateInput{System: governance.Get(kv), KillSwitch: ks, Level: level, ExpiresAt: g.ExpiresAt, MinLevel: 2, Now: now}
}

// errGateBlocked is an operation the pre-action gate refused.
var errGateBlocked = errors.New("server: the pre-action gate refused the operation")

// gateError is errGateBlocked with the gate's reason and message.
type gateError struct {
	operation string
	d         governance.Decision
}

func (e *gateError) Error() string {
	return fmt.Sprintf("%s refused (%s): %s", e.operation, e.d.Reason, e.d.Message)
}

func (e *gateError) Unwrap() error { return errGateBlocked }

// gate is the pre-action gate (governance.Gate) on the leader before a
// guarded operation: a block is audited, counted and returned as
// GOVERNANCE_BLOCKED; an operation allowed by break glass is audited and
// flagged for post-incident review.
func (s *Server) gate(ctx context.Context, operation string) error {
	var d governance.Decision
	_ = s.store.View(func(kv raftstore.KV) error { d = governance.Gate(gateInput(kv, s.now())); return nil })
	actor := identityFrom(ctx).Name
	switch {
	case !d.Allowed:
		s.metrics.governanceBlocked.WithLabelValues(operation, d.Reason).Inc()
		s.auditNote(ctx, dlq.Caller{Actor: actor, Reason: d.Message}, "governance.blocked", operation+"/"+d.Reason)
		return &gateError{operation: operation, d: d}
	case d.Reason == governance.AllowedBreakGlass:
		s.metrics.governanceBreakGlass.WithLabelValues(operation).Inc()
		s.auditNote(ctx, dlq.Caller{Actor: actor, Reason: d.Message}, "governance.break_glass_used", operation)
	}
	return nil
}
