package server

import (
	"context"
	"fmt"
	"time"

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

// ingest hands merged outcome reports (report_merge.go) to circuit.Ingest
// on the leader and proposes what it decides, in order.
func (s *Server) ingest(ctx context.Context, batch []circuit.Outcome) ([]string, error) {
	ev := s.evaluator()
	if ev == nil {
		return nil, raftstore.ErrNotLeader
	}
	start := time.Now()
	var in circuit.Ingested
	defaults := s.settings().circuit
	now := s.now()
	for _, o := range batch {
		if o.Cohort != "" {
			s.canaryTracker.Observe(o.Cohort, o.Name, o.Successes, o.Failures, o.Latency, now)
		}
	}
	_ = s.store.View(func(kv raftstore.KV) error {
		in = circuit.Ingest(kv, ev, defaults, "a member", batch, s.now(), s.breakerRoom())
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
