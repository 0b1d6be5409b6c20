package server

import (
	"context"
	"encoding/json"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/raftstore"
)

// evaluator returns the leader's fleet windows (nil on followers).
func (s *Server) evaluator() *circuit.Evaluator { return s.eval.Load() }

func (s *Server) resetWindow(name string) {
	if e := s.evaluator(); e != nil {
		e.Reset(name)
	}
}

func (s *Server) circuitCommand(reason string, body *raftv1.CircuitCommand) *raftv1.Command {
	return &raftv1.Command{Actor: systemActor, Reason: reason, Version: 1, Body: &raftv1.Command_Circuit{Circuit: body}}
}

// ingestReports runs on the leader: it registers unknown breakers with the
// default policy, feeds CLOSED breakers' windows and proposes a trip with
// its evidence when the fleet's evidence meets the policy, and turns probe
// outcomes of HALF_OPEN breakers into PROBE_RESULT commands. Outcomes of
// pinned breakers are not counted.
func (s *Server) ingestReports(ctx context.Context, instance string, reports []*pb.OutcomeReport) ([]string, error) {
	ev := s.evaluator()
	if ev == nil {
		return nil, raftstore.ErrNotLeader
	}
	start := time.Now()
	defer func() { s.metrics.evalSeconds.Observe(time.Since(start).Seconds()) }()
	var registered []string
	for _, r := range reports {
		s.metrics.reports.WithLabelValues(r.Name).Inc()
		if r.Rejections > 0 {
			s.metrics.rejections.WithLabelValues(r.Name).Add(float64(r.Rejections))
		}
		b, ok := s.breaker(r.Name)
		if !ok {
			raw, _ := json.Marshal(s.cfg.CircuitDefaults)
			cmd := s.circuitCommand("registered on first report from "+instance, &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_UPSERT, Name: r.Name, PolicyJson: raw})
			if _, err := s.applyLocal(ctx, cmd); err != nil {
				return registered, err
			}
			registered = append(registered, r.Name)
			if b, ok = s.breaker(r.Name); !ok {
				continue
			}
		}
		if b.Pinned {
			continue
		}
		switch b.State {
		case circuit.Closed:
			evidence := ev.Observe(b.Name, b.Policy, circuit.Report{Instance: instance, Successes: r.Successes, Failures: r.Failures, SlowCalls: r.SlowCalls}, s.now())
			if evidence == nil {
				continue
			}
			raw, _ := json.Marshal(evidence)
			cmd := s.circuitCommand("fleet evidence: "+evidence.Trigger, &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_TRIP, Name: b.Name, EvidenceJson: raw})
			if _, err := s.applyLocal(ctx, cmd); err != nil {
				return registered, err
			}
			ev.Reset(b.Name)
			s.log.Warn("circuit.trip_threshold_exceeded", "name", b.Name, "trigger", evidence.Trigger,
				"window_calls", evidence.WindowCalls, "window_failures", evidence.WindowFailures, "reporters", evidence.Reporters)
		case circuit.HalfOpen:
			if r.ProbeSuccesses == 0 && r.ProbeFailures == 0 {
				continue
			}
			cmd := s.circuitCommand("probe outcomes from "+instance, &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_PROBE_RESULT, Name: b.Name,
				ProbeWindow: r.ProbeWindow, Successes: r.ProbeSuccesses, Failures: r.ProbeFailures})
			if _, err := s.applyLocal(ctx, cmd); err != nil {
				return registered, err
			}
			if after, _ := s.breaker(b.Name); after.State == circuit.Closed {
				ev.Reset(b.Name)
			}
		}
	}
	return registered, nil
}

// proposeProbe asks the FSM for a probe permit (leader only).
func (s *Server) proposeProbe(ctx context.Context, cmd *raftv1.Command) (bool, error) {
	r, err := s.applyLocalResult(ctx, cmd)
	return resultOf[circuit.Result](r).Granted, err
}

// proposeCircuitDue moves OPEN breakers past their recovery timeout to
// HALF_OPEN and lifts expired pins.
func (s *Server) proposeCircuitDue(ctx context.Context) {
	var due []circuit.DueAction
	_ = s.store.View(func(kv raftstore.KV) error { due = circuit.Due(kv, s.now()); return nil })
	for _, d := range due {
		body := &raftv1.CircuitCommand{Op: d.Op, Name: d.Name}
		reason := "recovery timeout elapsed"
		if d.Op == raftv1.CircuitCommand_UNPIN {
			body.PinRevision = d.Revision
			reason = "force expired"
		} else {
			body.ProbeWindow = d.Revision // the OPEN period it acts on
		}
		if _, err := s.applyLocal(ctx, s.circuitCommand(reason, body)); err != nil {
			s.log.Warn("circuit.transition_propose_failed", "name", d.Name, "op", d.Op.String(), "err", err)
			return
		}
		s.log.Info("circuit.state_changed", "name", d.Name, "op", d.Op.String())
	}
}
