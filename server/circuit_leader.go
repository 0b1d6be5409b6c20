package server

import (
	"context"
	"fmt"
	"time"

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

// ingest hands a batch of outcome reports to circuit.Ingest (leader only:
// ReportOutcomes is leader-only) and proposes what it decides, in order.
func (s *Server) ingest(ctx context.Context, instance string, reports []*pb.OutcomeReport) ([]string, error) {
	ev := s.evaluator()
	if ev == nil {
		return nil, raftstore.ErrNotLeader
	}
	start := time.Now()
	batch := make([]circuit.Outcome, len(reports))
	for i, r := range reports {
		name := s.metrics.breakerLabels.label(r.Name)
		s.metrics.reports.WithLabelValues(name).Inc()
		if r.Rejections > 0 {
			s.metrics.rejections.WithLabelValues(name).Add(float64(r.Rejections))
		}
		batch[i] = circuit.Outcome{Name: r.Name, Successes: r.Successes, Failures: r.Failures, SlowCalls: r.SlowCalls, Revision: r.Revision,
			ProbeWindow: r.ProbeWindow, ProbeSuccesses: r.ProbeSuccesses, ProbeFailures: r.ProbeFailures}
	}
	var in circuit.Ingested
	_ = s.store.View(func(kv raftstore.KV) error {
		in = circuit.Ingest(kv, ev, s.cfg.CircuitDefaults, instance, batch, s.now(), s.breakerRoom())
		return nil
	})
	if len(in.Refused) > 0 {
		return nil, s.limitError("breakers", "--max-breakers", s.cfg.MaxBreakers,
			fmt.Sprintf("the cluster holds as many breakers as it may; %d new names refused, first %q", len(in.Refused), in.Refused[0]))
	}
	s.metrics.evalSeconds.Observe(time.Since(start).Seconds())
	if len(in.Registered) > 0 {
		s.breakerN.mu.Lock()
		s.breakerN.n += len(in.Registered) // until the next count
		s.breakerN.mu.Unlock()
	}
	for _, cmd := range in.Commands {
		cmd.Actor = systemActor
		if _, err := s.writes.propose(ctx, cmd, onLeader); err != nil {
			return in.Registered, err
		}
		if name := cmd.GetCircuit().GetName(); in.Trips != nil && cmd.GetCircuit().GetEvidenceJson() != nil {
			e := in.Trips[name]
			s.log.Warn("circuit.trip_threshold_exceeded", "name", name, "trigger", e.Trigger,
				"window_calls", e.WindowCalls, "window_failures", e.WindowFailures, "reporters", e.Reporters)
		}
	}
	return in.Registered, nil
}
