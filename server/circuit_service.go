package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/canary"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

type circuitService struct {
	pb.UnimplementedCircuitServiceServer
	s *Server
}

// Limits on report batches.
const (
	maxReportsPerBatch = 1000
	maxInstanceID      = 128
)

func durPB(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func policyToPB(p circuit.Policy) *pb.CircuitPolicy {
	return &pb.CircuitPolicy{
		FailureThreshold: int32(p.FailureThreshold), FailureRateThreshold: &p.FailureRateThreshold, MinimumCalls: int32(p.MinimumCalls),
		WindowType: pb.WindowType_Value(p.WindowType), WindowSize: int32(p.WindowSize), WindowDuration: durPB(p.WindowDuration),
		SlowCallRateThreshold: &p.SlowCallRateThreshold, SlowCallDuration: durPB(p.SlowCallDuration), RecoveryTimeout: durPB(p.RecoveryTimeout),
		HalfOpenMaxCalls: int32(p.HalfOpenMaxCalls), SuccessThreshold: int32(p.SuccessThreshold), HalfOpenStuckTimeout: durPB(p.HalfOpenStuckTimeout),
		MinReporters: int32(p.MinReporters), ReportInterval: durPB(p.ReportInterval), DryRun: p.DryRun,
	}
}

// policyFromPB converts an API policy; absent fields take the defaults
// (zero numbers and durations, and rates not given at all).
func policyFromPB(p *pb.CircuitPolicy, defaults circuit.Policy) (circuit.Policy, error) {
	out := circuit.Policy{
		FailureThreshold: int(p.FailureThreshold), FailureRateThreshold: defaults.FailureRateThreshold, MinimumCalls: int(p.MinimumCalls),
		WindowType: circuit.WindowType(p.WindowType), WindowSize: int(p.WindowSize), SlowCallRateThreshold: defaults.SlowCallRateThreshold,
		HalfOpenMaxCalls: int(p.HalfOpenMaxCalls), SuccessThreshold: int(p.SuccessThreshold), MinReporters: int(p.MinReporters), DryRun: p.DryRun,
	}
	if p.FailureRateThreshold != nil {
		out.FailureRateThreshold = *p.FailureRateThreshold
	}
	if p.SlowCallRateThreshold != nil {
		out.SlowCallRateThreshold = *p.SlowCallRateThreshold
	}
	for _, d := range []struct {
		field string
		v     *durationpb.Duration
		dst   *time.Duration
	}{
		{"window_duration", p.WindowDuration, &out.WindowDuration},
		{"slow_call_duration", p.SlowCallDuration, &out.SlowCallDuration},
		{"recovery_timeout", p.RecoveryTimeout, &out.RecoveryTimeout},
		{"half_open_stuck_timeout", p.HalfOpenStuckTimeout, &out.HalfOpenStuckTimeout},
		{"report_interval", p.ReportInterval, &out.ReportInterval},
	} {
		v, err := checkedDuration(d.field, d.v)
		if err != nil {
			return circuit.Policy{}, err
		}
		if v < 0 {
			return circuit.Policy{}, invalidField(d.field, "must not be negative")
		}
		*d.dst = v
	}
	for _, n := range []struct {
		field string
		v     int32
	}{{"failure_threshold", p.FailureThreshold}, {"minimum_calls", p.MinimumCalls}, {"window_size", p.WindowSize},
		{"half_open_max_calls", p.HalfOpenMaxCalls}, {"success_threshold", p.SuccessThreshold}, {"min_reporters", p.MinReporters}} {
		if n.v < 0 {
			return circuit.Policy{}, invalidField(n.field, fmt.Sprintf("%d must not be negative", n.v))
		}
	}
	return out, nil
}

func breakerToPB(b circuit.Breaker) *pb.Circuit {
	return &pb.Circuit{
		Name: b.Name, State: pb.CircuitState_Value(b.State), Policy: policyToPB(b.Policy), OpenedAt: ts(b.OpenedAt),
		Evidence: &pb.CircuitEvidence{WindowCalls: b.Evidence.WindowCalls, WindowFailures: b.Evidence.WindowFailures, WindowSlowCalls: b.Evidence.WindowSlowCalls,
			ConsecutiveFailures: b.Evidence.ConsecutiveFailures, Reporters: int32(b.Evidence.Reporters), Trigger: b.Evidence.Trigger},
		Pinned: b.Pinned, PinReason: b.PinReason, PinnedBy: b.PinnedBy, PinExpiresAt: ts(b.PinExpiresAt),
		ProbesGranted: int32(b.ProbesGranted), ProbeSuccesses: int32(b.ProbeSuccesses), ProbeWindowStartedAt: ts(b.ProbeWindowStartedAt),
		ProbeWindow: b.ProbeWindow, Revision: b.Revision,
	}
}

func (s *Server) breaker(name string) (circuit.Breaker, bool) {
	var b circuit.Breaker
	var ok bool
	_ = s.store.View(func(kv raftstore.KV) error { b, ok = circuit.Get(kv, name); return nil })
	return b, ok
}

func (c *circuitService) ListCircuits(ctx context.Context, req *pb.ListCircuitsRequest) (*pb.ListCircuitsResponse, error) {
	if err := c.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	size := int(req.PageSize)
	switch {
	case size == 0:
		size = 1000
	case size < 0 || size > 10000:
		return nil, invalidField("page_size", fmt.Sprintf("%d is outside 1..10000", req.PageSize))
	}
	if req.PageToken != "" {
		if err := circuit.CheckName(req.PageToken); err != nil {
			return nil, &fsm.ArgumentError{FieldName: "page_token", Code: "INVALID_PAGE_TOKEN", Msg: "not a token this API gave"}
		}
	}
	resp := &pb.ListCircuitsResponse{}
	err := c.s.store.View(func(kv raftstore.KV) error {
		page, next := circuit.Page(kv, req.PageToken, size)
		for _, b := range page {
			resp.Circuits = append(resp.Circuits, breakerToPB(b))
		}
		resp.NextPageToken = next
		resp.KillSwitch, _ = circuit.KillSwitch(kv)
		resp.Revision = kv.AppliedIndex()
		return nil
	})
	return resp, err
}

func (c *circuitService) GetCircuit(ctx context.Context, req *pb.GetCircuitRequest) (*pb.Circuit, error) {
	if err := circuit.CheckName(req.Name); err != nil {
		return nil, err
	}
	if err := c.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	b, ok := c.s.breaker(req.Name)
	if !ok {
		return nil, fmt.Errorf("%w: %q", circuit.ErrNotFound, req.Name)
	}
	out := breakerToPB(b)
	if ev := c.s.evaluator(); ev != nil {
		w := ev.Snapshot(req.Name)
		out.Window = &pb.CircuitEvidence{WindowCalls: w.WindowCalls, WindowFailures: w.WindowFailures, WindowSlowCalls: w.WindowSlowCalls,
			ConsecutiveFailures: w.ConsecutiveFailures, Reporters: int32(w.Reporters)}
	}
	return out, nil
}

// change proposes a circuit command and returns the breaker after it.
func (c *circuitService) change(ctx context.Context, reason string, body *raftv1.CircuitCommand) (*pb.CircuitResponse, error) {
	cmd := newCommand(ctx, reason)
	cmd.Body = &raftv1.Command_Circuit{Circuit: body}
	_, rev, err := proposed[any](c.s.writes.propose(ctx, cmd, anyNode))
	if err != nil {
		return nil, err
	}
	b, _ := c.s.breaker(body.Name)
	return &pb.CircuitResponse{Circuit: breakerToPB(b), Revision: rev}, nil
}

func (c *circuitService) SetPolicy(ctx context.Context, req *pb.SetPolicyRequest) (*pb.CircuitResponse, error) {
	if err := circuit.CheckName(req.Name); err != nil {
		return nil, err
	}
	if req.Policy == nil {
		return nil, invalidField("policy", "is required")
	}
	defaults := c.s.settings().circuit
	p, err := policyFromPB(req.Policy, defaults)
	if err != nil {
		return nil, err
	}
	p = p.WithDefaults(defaults)
	if err := p.Validate(); err != nil {
		return nil, err
	}
	reason := req.Reason
	if reason == "" {
		reason = "policy set"
	}
	if err := circuit.CheckReason(reason); err != nil {
		return nil, err
	}
	if _, ok := c.s.breaker(req.Name); !ok && c.s.breakerRoom() == 0 {
		return nil, c.s.limitError("breakers", "--max-breakers", c.s.cfg.MaxBreakers, fmt.Sprintf("the cluster holds as many breakers as it may; %q is new", req.Name))
	}
	raw, _ := json.Marshal(p)
	return c.change(ctx, reason, &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_UPSERT, Name: req.Name, PolicyJson: raw})
}

func (c *circuitService) force(ctx context.Context, req *pb.ForceRequest, state circuit.State) (*pb.CircuitResponse, error) {
	if err := circuit.CheckName(req.Name); err != nil {
		return nil, err
	}
	if err := circuit.CheckReason(req.Reason); err != nil {
		return nil, err
	}
	ttl, err := checkedDuration("ttl", req.Ttl)
	if err != nil {
		return nil, err
	}
	if ttl, err = circuit.CheckTTL(ttl); err != nil {
		return nil, err
	}
	if _, ok := c.s.breaker(req.Name); !ok {
		return nil, fmt.Errorf("%w: %q", circuit.ErrNotFound, req.Name)
	}
	if state == circuit.Closed {
		// Forcing a breaker closed is corrective: the pre-action gate
		// decides (after the request is known to be valid).
		if err := c.s.gate(ctx, "circuit.force_close"); err != nil {
			return nil, err
		}
	}
	return c.change(ctx, req.Reason, &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_FORCE, Name: req.Name, State: int32(state), TtlNanos: int64(ttl)})
}

func (c *circuitService) ForceOpen(ctx context.Context, req *pb.ForceRequest) (*pb.CircuitResponse, error) {
	return c.force(ctx, req, circuit.Open)
}

func (c *circuitService) ForceClose(ctx context.Context, req *pb.ForceRequest) (*pb.CircuitResponse, error) {
	return c.force(ctx, req, circuit.Closed)
}

func (c *circuitService) Reset(ctx context.Context, req *pb.ResetRequest) (*pb.CircuitResponse, error) {
	if err := circuit.CheckName(req.Name); err != nil {
		return nil, err
	}
	if err := circuit.CheckReason(req.Reason); err != nil {
		return nil, err
	}
	if _, ok := c.s.breaker(req.Name); !ok {
		return nil, fmt.Errorf("%w: %q", circuit.ErrNotFound, req.Name)
	}
	c.s.resetWindow(req.Name)
	return c.change(ctx, req.Reason, &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_RESET, Name: req.Name})
}

func (c *circuitService) SetKillSwitch(ctx context.Context, req *pb.SetKillSwitchRequest) (*pb.KillSwitchResponse, error) {
	if err := circuit.CheckReason(req.Reason); err != nil {
		return nil, err
	}
	cmd := newCommand(ctx, req.Reason)
	cmd.Body = &raftv1.Command_Circuit{Circuit: &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_KILL_SWITCH, Enabled: req.Enabled}}
	_, rev, err := proposed[any](c.s.writes.propose(ctx, cmd, anyNode))
	if err != nil {
		return nil, err
	}
	var on bool
	_ = c.s.store.View(func(kv raftstore.KV) error { on, _ = circuit.KillSwitch(kv); return nil })
	return &pb.KillSwitchResponse{Enabled: on, Revision: rev}, nil
}

// checkReports validates a whole batch before any of it is used.
// maxReportRollouts bounds the rollouts one report batch names per cohort.
const maxReportRollouts = 16

var rolloutID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func checkReports(req *pb.ReportOutcomesRequest) error {
	if req.InstanceId == "" || len(req.InstanceId) > maxInstanceID {
		return invalidField("instance_id", fmt.Sprintf("is required, at most %d bytes", maxInstanceID))
	}
	if len(req.Reports) == 0 {
		return invalidField("reports", "the batch is empty")
	}
	if len(req.Reports) > maxReportsPerBatch {
		return invalidField("reports", fmt.Sprintf("%d reports, at most %d per batch", len(req.Reports), maxReportsPerBatch))
	}
	for _, l := range []struct {
		field string
		ids   []string
	}{{"canary_rollouts", req.CanaryRollouts}, {"baseline_rollouts", req.BaselineRollouts}} {
		if len(l.ids) > maxReportRollouts {
			return invalidField(l.field, fmt.Sprintf("%d rollouts, at most %d", len(l.ids), maxReportRollouts))
		}
		for i, id := range l.ids {
			if !rolloutID.MatchString(id) {
				return invalidField(fieldIndex(l.field, i), fmt.Sprintf("%q is not a rollout id", id))
			}
		}
	}
	for i, r := range req.Reports {
		field := fieldIndex("reports", i)
		if err := circuit.CheckName(r.Name); err != nil {
			return invalidField(field+".name", err.Error())
		}
		for _, n := range []struct {
			f string
			v int64
		}{{"successes", r.Successes}, {"failures", r.Failures}, {"slow_calls", r.SlowCalls}, {"rejections", r.Rejections},
			{"probe_successes", r.ProbeSuccesses}, {"probe_failures", r.ProbeFailures}} {
			if n.v < 0 {
				return invalidField(field+"."+n.f, fmt.Sprintf("%d is negative", n.v))
			}
			if n.v > 1e9 {
				return invalidField(field+"."+n.f, fmt.Sprintf("%d is implausibly large for one report interval", n.v))
			}
		}
		if r.Held && r.Failures+r.SlowCalls+r.Rejections+r.ProbeSuccesses+r.ProbeFailures > 0 {
			return invalidField(field+".held", "a held report carries successes only")
		}
		if len(r.LatencyHistogram) > canary.LatencyBuckets {
			return invalidField(field+".latency_histogram", fmt.Sprintf("%d buckets, at most %d", len(r.LatencyHistogram), canary.LatencyBuckets))
		}
		for j, n := range r.LatencyHistogram {
			if n < 0 || n > 1e9 {
				return invalidField(fmt.Sprintf("%s.latency_histogram[%d]", field, j), fmt.Sprintf("%d is outside 0..1000000000", n))
			}
		}
		for class, n := range r.FailuresByClass {
			if n < 0 || len(class) > 64 {
				return invalidField(field+".failures_by_class", fmt.Sprintf("class %q: count %d", class, n))
			}
		}
	}
	return nil
}

func (c *circuitService) ReportOutcomes(ctx context.Context, req *pb.ReportOutcomesRequest) (*pb.ReportOutcomesResponse, error) {
	if err := checkReports(req); err != nil {
		return nil, err
	}
	if c.s.checkCommandVersion(reportsVersion) != nil {
		// A member does not serve IngestReports yet: the batch goes to the
		// leader whole, as before (handled is false on the leader).
		if resp, handled, err := c.s.forwardUnary(ctx, pb.CircuitService_ReportOutcomes_FullMethodName, req); handled {
			if err != nil {
				return nil, err
			}
			return resp.(*pb.ReportOutcomesResponse), nil
		}
	}
	registered, err := c.s.reports.submit(ctx, c.s.outcomesOf(req))
	if err != nil {
		return nil, err
	}
	resp := &pb.ReportOutcomesResponse{Registered: registered}
	if d := c.s.idleSpread(); d > 0 {
		resp.IdleReportInterval = durationpb.New(d)
	}
	if d := c.s.reportSpread(); d > 0 {
		resp.ReportInterval = durationpb.New(d)
	}
	return resp, nil
}

// StreamOutcomes is ReportOutcomes on one long-lived stream: each batch is
// authorized on its own (a scoped token names breakers per batch) and
// answered in turn; a batch refused ends the stream with its error.
//
// A client that sends livenessHeader counts each answer as proof that its
// watches on this connection are current; while answers go out, the node
// leaves out those watches' heartbeats (watchLoop).
func (c *circuitService) StreamOutcomes(stream pb.CircuitService_StreamOutcomesServer) error {
	ctx := stream.Context()
	id := identityFrom(ctx)
	answered, release := c.s.openReportStream(ctx)
	defer release()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := c.s.authorize(ctx, pb.CircuitService_StreamOutcomes_FullMethodName, req, id); err != nil {
			return err
		}
		resp, err := c.ReportOutcomes(ctx, req)
		if err != nil {
			return err
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
		if answered != nil {
			answered.Store(time.Now().UnixNano())
		}
	}
}

func (c *circuitService) AcquireProbe(ctx context.Context, req *pb.AcquireProbeRequest) (*pb.AcquireProbeResponse, error) {
	if err := circuit.CheckName(req.Name); err != nil {
		return nil, err
	}
	b, ok := c.s.breaker(req.Name)
	if !ok {
		return nil, fmt.Errorf("%w: %q", circuit.ErrNotFound, req.Name)
	}
	if !b.Probing() {
		return &pb.AcquireProbeResponse{State: pb.CircuitState_Value(b.State)}, nil
	}
	cmd := newCommand(ctx, "probe permit")
	cmd.Body = &raftv1.Command_Circuit{Circuit: &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_PROBE, Name: req.Name, InstanceId: req.InstanceId}}
	r, _, err := proposed[circuit.Result](c.s.writes.propose(ctx, cmd, onLeader))
	granted := r.Granted
	if err != nil {
		return nil, err
	}
	after, _ := c.s.breaker(req.Name)
	resp := &pb.AcquireProbeResponse{Granted: granted, State: pb.CircuitState_Value(after.State)}
	if granted {
		resp.ProbeWindow = after.ProbeWindow
	}
	return resp, nil
}

func (c *circuitService) DeleteCircuit(ctx context.Context, req *pb.DeleteCircuitRequest) (*pb.DeleteCircuitResponse, error) {
	if err := circuit.CheckName(req.Name); err != nil {
		return nil, err
	}
	if err := circuit.CheckReason(req.Reason); err != nil {
		return nil, err
	}
	if _, ok := c.s.breaker(req.Name); !ok {
		return nil, fmt.Errorf("%w: %q", circuit.ErrNotFound, req.Name)
	}
	cmd := newCommand(ctx, req.Reason)
	cmd.Version = deleteVersion
	cmd.Body = &raftv1.Command_Circuit{Circuit: &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_DELETE, Name: req.Name}}
	_, rev, err := proposed[circuit.Result](c.s.writes.propose(ctx, cmd, onLeader))
	if err != nil {
		return nil, err
	}
	if e := c.s.evaluator(); e != nil {
		e.Forget(req.Name)
	}
	return &pb.DeleteCircuitResponse{Revision: rev}, nil
}

// deleteVersion is the command version of CircuitCommand DELETE.
const deleteVersion uint32 = 4

func (c *circuitService) WatchCircuits(req *pb.WatchCircuitsRequest, stream pb.CircuitService_WatchCircuitsServer) error {
	want := map[string]bool{}
	for _, n := range req.Names {
		if err := circuit.CheckName(n); err != nil {
			return err
		}
		want[n] = true
	}
	build := func(kv raftstore.KV, since, applied uint64) (*pb.WatchCircuitsResponse, bool) {
		if since > 0 && circuit.LastDeletion(kv) > since {
			since = 0 // a breaker went: a full snapshot lets the client forget it
		}
		msg := &pb.WatchCircuitsResponse{Snapshot: since == 0, Revision: applied}
		for _, b := range circuit.List(kv) {
			if (len(want) == 0 || want[b.Name]) && b.Revision > since {
				msg.Circuits = append(msg.Circuits, breakerToPB(b))
			}
		}
		ks, ksRev := circuit.KillSwitch(kv)
		msg.KillSwitch = ks
		return msg, msg.Snapshot || len(msg.Circuits) > 0 || ksRev > since
	}
	return watchLoop(c.s, stream.Context(), topicCircuit, circuitView(want), req.FromRevision, build, stream.SendMsg,
		func(rev uint64) (proto.Message, bool) {
			return &pb.WatchCircuitsResponse{Revision: rev, KillSwitch: c.s.killSwitch()}, true
		})
}

// circuitView names a circuit watch's filter: streams with the same one
// share their messages.
func circuitView(want map[string]bool) string {
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	return "circuits:" + strings.Join(names, ",")
}

func (s *Server) killSwitch() bool {
	var on bool
	_ = s.store.View(func(kv raftstore.KV) error { on, _ = circuit.KillSwitch(kv); return nil })
	return on
}
