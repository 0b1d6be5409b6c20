package server

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/canary"
	"github.com/baldurhq/baldurd/circuit"
	"google.golang.org/grpc"
)

// Reports merged near their source: every member takes outcome reports
// (ReportOutcomes is not leader-only). The batches a member receives while
// its previous merged batch is on the way leave together, merged per
// breaker by circuit.Merge, to the leader's Internal.IngestReports (or to
// its own ingest when it leads), so the leader's work grows with members
// and breakers, not instances. There is no timer: a lone report waits for
// nothing, and under load the batch in flight is the window.

// reportsVersion is the member version that serves IngestReports; while a
// member is older, reports are forwarded one by one as before.
const reportsVersion = 6

// ingestBound bounds one merged batch's trip to the leader (each caller
// still waits within its own deadline).
const ingestBound = 10 * time.Second

type pendingReport struct {
	batch circuit.InstanceOutcomes
	done  chan reportResult
}

type reportResult struct {
	registered []string
	err        error
}

// reportMerger queues the reports of one member.
type reportMerger struct {
	s        *Server
	mu       sync.Mutex
	pending  []*pendingReport
	inflight bool
}

// submit queues one instance's batch and waits for the merged batch it
// left in.
func (m *reportMerger) submit(ctx context.Context, batch circuit.InstanceOutcomes) ([]string, error) {
	p := &pendingReport{batch: batch, done: make(chan reportResult, 1)}
	m.mu.Lock()
	m.pending = append(m.pending, p)
	if !m.inflight {
		m.inflight = true
		go m.run()
	}
	m.mu.Unlock()
	select {
	case r := <-p.done:
		return r.registered, r.err
	case <-ctx.Done():
		return nil, ctx.Err() // the batch still goes; its answer is dropped
	}
}

// run sends what is queued, merged, until nothing is.
func (m *reportMerger) run() {
	for {
		m.mu.Lock()
		group := m.pending
		m.pending = nil
		if len(group) == 0 {
			m.inflight = false
			m.mu.Unlock()
			return
		}
		m.mu.Unlock()
		m.send(group)
	}
}

func (m *reportMerger) send(group []*pendingReport) {
	batches := make([]circuit.InstanceOutcomes, len(group))
	for i, p := range group {
		batches[i] = p.batch
	}
	m.s.metrics.reportMergeSize.Observe(float64(len(group)))
	registered, err := m.s.ingestMerged(circuit.Merge(batches))
	if errors.Is(err, errLimit) && len(group) > 1 {
		// One instance's new names must not fail the others' reports:
		// each batch goes again on its own, and only those over the limit
		// fail.
		for _, p := range group {
			reg, err := m.s.ingestMerged(circuit.Merge([]circuit.InstanceOutcomes{p.batch}))
			p.done <- reportResult{registered: reg, err: err}
		}
		return
	}
	for _, p := range group {
		p.done <- reportResult{registered: namesOf(registered, p.batch), err: err}
	}
}

// namesOf is the part of registered the batch reported.
func namesOf(registered []string, batch circuit.InstanceOutcomes) []string {
	var out []string
	for _, n := range registered {
		if slices.ContainsFunc(batch.Outcomes, func(o circuit.Outcome) bool { return o.Name == n }) {
			out = append(out, n)
		}
	}
	return out
}

// ingestMerged hands merged outcomes to the leader: its own ingest when
// this member leads, the leader's IngestReports otherwise (through an
// election if need be; a batch that may have arrived is not sent twice).
func (s *Server) ingestMerged(merged []circuit.Outcome) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ingestBound)
	defer cancel()
	ctx = withIdentity(ctx, identity{Name: systemActor})
	if s.store.IsLeader() {
		return s.ingest(ctx, merged)
	}
	var registered []string
	req := &raftv1.IngestReportsRequest{Reports: make([]*raftv1.MergedReport, len(merged))}
	for i, o := range merged {
		req.Reports[i] = &raftv1.MergedReport{Name: o.Name, Revision: o.Revision, Successes: o.Successes, Failures: o.Failures,
			SlowCalls: o.SlowCalls, ProbeWindow: o.ProbeWindow, ProbeSuccesses: o.ProbeSuccesses, ProbeFailures: o.ProbeFailures,
			FailingInstances: o.Failing, Instances: uint32(o.Instances), FirstInstance: o.Reporter, Held: o.Held,
			Cohort: o.Cohort, LatencyHistogram: o.Latency}
	}
	local, err := s.viaLeader(ctx, writeKind(""), func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := raftv1.NewInternalClient(conn).IngestReports(forwardContext(ctx), req)
		if err == nil {
			registered = resp.Registered
		}
		return err
	})
	if local {
		return s.ingest(ctx, merged)
	}
	return registered, err
}

// IngestReports is the leader's side: merged reports from a member.
func (i *internalService) IngestReports(ctx context.Context, req *raftv1.IngestReportsRequest) (*raftv1.IngestReportsResponse, error) {
	merged := make([]circuit.Outcome, len(req.Reports))
	for k, r := range req.Reports {
		if err := circuit.CheckName(r.Name); err != nil {
			return nil, err
		}
		if r.Successes < 0 || r.Failures < 0 || r.SlowCalls < 0 || r.ProbeSuccesses < 0 || r.ProbeFailures < 0 {
			return nil, invalidField("reports", "negative counts")
		}
		if len(r.LatencyHistogram) > canary.LatencyBuckets || len(r.Cohort) > 4096 {
			return nil, invalidField("reports", "latency histogram or cohort too long")
		}
		merged[k] = circuit.Outcome{Name: r.Name, Revision: r.Revision, Successes: r.Successes, Failures: r.Failures,
			SlowCalls: r.SlowCalls, ProbeWindow: r.ProbeWindow, ProbeSuccesses: r.ProbeSuccesses, ProbeFailures: r.ProbeFailures,
			Failing: r.FailingInstances, Instances: int(r.Instances), Reporter: r.FirstInstance, Held: r.Held,
			Cohort: r.Cohort, Latency: r.LatencyHistogram}
		if merged[k].Reporter == "" {
			merged[k].Reporter = "a member"
		}
	}
	registered, err := i.s.ingest(ctx, merged)
	if err != nil {
		return nil, err
	}
	return &raftv1.IngestReportsResponse{Registered: registered}, nil
}

// outcomesOf converts an instance's reports, counting them on this member.
func (s *Server) outcomesOf(req *pb.ReportOutcomesRequest) circuit.InstanceOutcomes {
	out := circuit.InstanceOutcomes{Instance: req.InstanceId, Outcomes: make([]circuit.Outcome, len(req.Reports))}
	cohort := canary.CohortKey(req.CanaryRollouts, req.BaselineRollouts)
	for i, r := range req.Reports {
		name := s.metrics.breakerLabels.label(r.Name)
		s.metrics.reports.WithLabelValues(name).Inc()
		if r.Rejections > 0 {
			s.metrics.rejections.WithLabelValues(name).Add(float64(r.Rejections))
		}
		out.Outcomes[i] = circuit.Outcome{Name: r.Name, Successes: r.Successes, Failures: r.Failures, SlowCalls: r.SlowCalls, Revision: r.Revision,
			ProbeWindow: r.ProbeWindow, ProbeSuccesses: r.ProbeSuccesses, ProbeFailures: r.ProbeFailures, Held: r.Held,
			Cohort: cohort, Latency: r.LatencyHistogram}
	}
	return out
}
