package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/canary"
	"github.com/baldurhq/baldurd/config"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/governance"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/protobuf/proto"
)

type canaryService struct {
	pb.UnimplementedCanaryServiceServer
	s *Server
}

// canaryGate reads what the rollout gates and the interlock look at.
// The block is the pre-action gate's decision with break glass left aside:
// the rollout is flagged when break glass lets a blocked action through.
func canaryGate(kv fsm.KV, now time.Time) canary.Gate {
	in := gateInput(kv, now)
	g := canary.Gate{Level: in.Level, BreakGlass: in.System.BreakGlassActive(now)}
	in.System.BreakGlass = nil
	if d := governance.Gate(in); !d.Allowed {
		g.Blocked = d.Message
	}
	return g
}

// applyCanary is the dispatcher's handler of CanaryCommand: the rollout's
// transition and, when its last stage is promoted, the section's new
// values, in the same transaction.
func applyCanary(kv fsm.KV, m fsm.Meta, c *raftv1.CanaryCommand) (fsm.Applied, error) {
	if c.GetOp() == raftv1.CanaryCommand_CREATE {
		var r canary.Rollout
		if json.Unmarshal(c.GetRolloutJson(), &r) == nil {
			if err := config.CheckSection(r.Section); err != nil || r.Section == config.Emergency {
				return fsm.Applied{}, &fsm.ArgumentError{Domain: "canary", FieldName: "section", Code: "INVALID_ROLLOUT", Msg: fmt.Sprintf("%q cannot be rolled out", r.Section)}
			}
		}
	}
	r, err := canary.Apply(kv, m, c, canaryGate(kv, m.Time))
	if err != nil {
		return fsm.Applied{}, err
	}
	ap := r.Applied()
	if r.Complete {
		set, err := applyConfigSet(kv, m, &raftv1.ConfigSet{Section: r.Rollout.Section, ValuesJson: r.Rollout.NewValues}, r.Rollout.ID)
		if err != nil {
			// Values the rollout carried since its creation no longer
			// apply: the rollout fails rather than completing half.
			return fsm.Applied{}, err
		}
		batch := []fsm.Change{ap.Change}
		if len(set.Batch) > 0 {
			batch = append(batch, set.Batch...) // the section's change, then the breakers that followed
		} else {
			batch = append(batch, set.Change)
		}
		ap.Batch = batch
	}
	return ap, nil
}

func stateToProto(s canary.State) pb.RolloutState_Value { return pb.RolloutState_Value(s) }

func criteriaToPB(c canary.Criteria) *pb.PassCriteria {
	return &pb.PassCriteria{ErrorRateAbsoluteMax: &c.ErrorRateAbsoluteMax, ErrorRateIncreaseMax: &c.ErrorRateIncreaseMax,
		LatencyP95DeltaMs: &c.LatencyP95DeltaMs, LatencyP99DeltaPct: &c.LatencyP99DeltaPct, MinRequests: &c.MinRequests,
		EvaluationWindow: durPB(c.EvaluationWindow)}
}

func figuresToPB(f canary.Figures) *pb.CohortFigures {
	return &pb.CohortFigures{Requests: f.Requests, Failures: f.Failures, ErrorRate: f.ErrorRate, LatencyP95Ms: f.P95Ms, LatencyP99Ms: f.P99Ms}
}

func evidenceToPB(e *canary.Evidence) *pb.CanaryEvidence {
	if e == nil {
		return nil
	}
	out := &pb.CanaryEvidence{Verdict: e.Verdict, Reason: e.Reason, StageIndex: int32(e.Stage), Canary: figuresToPB(e.Canary),
		Baseline: figuresToPB(e.Baseline), Time: ts(e.Time)}
	for _, b := range e.Breakers {
		out.Breakers = append(out.Breakers, &pb.BreakerCohorts{Name: b.Name, Canary: figuresToPB(b.Canary), Baseline: figuresToPB(b.Baseline)})
	}
	return out
}

func (s *Server) rolloutToPB(r canary.Rollout) *pb.Rollout {
	out := &pb.Rollout{Id: r.ID, State: stateToProto(r.State), Section: r.Section, NewValues: s.sectionValues(r.Section, r.NewValues),
		PreviousValues: s.sectionValues(r.Section, r.PreviousValues), SectionVersion: r.SectionVersion, CurrentStageIndex: int32(r.Stage),
		Version: r.Version, Reason: r.Reason, CreatedBy: r.CreatedBy, CreatedAt: ts(r.CreatedAt), StageStartedAt: ts(r.StageStartedAt),
		PausedAt: ts(r.PausedAt), PausedBy: r.PausedBy, PausedByInterlock: r.InterlockPaused, FinishedAt: ts(r.FinishedAt),
		FinishedBy: r.FinishedBy, FinishReason: r.FinishReason, FlaggedForReview: r.Flagged, Stuck: r.Stuck,
		LastEvidence: evidenceToPB(r.Evidence), Progress: r.Progress(), Tier: r.Tier, Revision: r.Revision,
		Selection: &pb.CanarySelection{Strategy: r.Selection.Strategy, AllowList: r.Selection.AllowList, Header: r.Selection.Header}}
	for _, st := range r.Stages {
		auto := st.AutoPromote
		out.Stages = append(out.Stages, &pb.CanaryStage{Name: st.Name, Percentage: st.Percentage, Duration: durPB(st.Duration),
			AutoPromote: &auto, PassCriteria: criteriaToPB(st.Criteria)})
	}
	return out
}

// activeRollouts are the rollouts in CANARY or PAUSED as SDKs receive
// them: the canary cohort keeps the rollout's values while it is paused.
func (s *Server) activeRollouts(kv fsm.KV) []*pb.ActiveRollout {
	var out []*pb.ActiveRollout
	for _, r := range canary.Active(kv) {
		if r.State != canary.Canary && r.State != canary.Paused {
			continue
		}
		st := s.startupSettings()
		if err := st.decode(r.Section, r.NewValues); err != nil {
			continue
		}
		values := &pb.RuntimeConfig{}
		switch r.Section {
		case config.CircuitDefaults:
			values.CircuitDefaults = policyToPB(st.circuit)
		case config.RetryDefaults:
			values.RetryDefaults = retryToPB(st.retry)
		case config.Flags:
			values.Flags = flagsToPB(st.flags)
		case config.DLQ:
			values.Dlq = dlqToPB(st.dlq)
		}
		out = append(out, &pb.ActiveRollout{Id: r.ID, Section: r.Section, StageIndex: int32(r.Stage), Percentage: r.Percentage(), Values: values,
			Selection: &pb.CanarySelection{Strategy: r.Selection.Strategy, AllowList: r.Selection.AllowList, Header: r.Selection.Header}})
	}
	return out
}

func newRolloutID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// rolloutFromRequest checks a create request and builds the rollout (its
// values complete, its criteria with the defaults and the tier's floor).
func (c *canaryService) rolloutFromRequest(req *pb.CreateRolloutRequest) (canary.Rollout, error) {
	if err := config.CheckSection(req.Section); err != nil {
		return canary.Rollout{}, err
	}
	if req.Section == config.Emergency {
		return canary.Rollout{}, invalidField("section", "emergency cannot be rolled out in stages: change it with PUT /v1/config/emergency")
	}
	if slices.Contains(config.EntrySections, req.Section) {
		return canary.Rollout{}, invalidField("section", req.Section+" is not rolled out in stages (an instance's admission would differ from the fleet's): change it with PUT /v1/config/"+req.Section)
	}
	if req.NewValues == nil {
		return canary.Rollout{}, invalidField("new_values", "is required: the section's values after the rollout")
	}
	raw, _, err := c.s.parseSection(req.Section, req.NewValues)
	if err != nil {
		if ae, ok := err.(*fsm.ArgumentError); ok {
			moved := *ae
			moved.FieldName = "new_values" + ae.FieldName[len("values"):]
			return canary.Rollout{}, &moved
		}
		return canary.Rollout{}, err
	}
	tier := req.Tier
	if tier == "" {
		tier = canary.DefaultTier
	}
	r := canary.Rollout{ID: newRolloutID(), Section: req.Section, NewValues: raw, Tier: tier, Reason: req.Reason,
		Selection: canary.Selection{Strategy: "user_id_hash", Header: "X-Canary-Config"}}
	if sel := req.Selection; sel != nil {
		if sel.Strategy != "" {
			r.Selection.Strategy = sel.Strategy
		}
		if sel.Header != "" {
			r.Selection.Header = sel.Header
		}
		r.Selection.AllowList = sel.AllowList
	}
	for i, st := range req.Stages {
		f := fieldIndex("stages", i)
		d, err := checkedDuration(f+".duration", st.Duration)
		if err != nil {
			return canary.Rollout{}, err
		}
		stage := canary.Stage{Name: st.Name, Percentage: st.Percentage, Duration: d, AutoPromote: st.AutoPromote == nil || *st.AutoPromote,
			Criteria: canary.DefaultCriteria()}
		if pc := st.PassCriteria; pc != nil {
			cr := &stage.Criteria
			for _, o := range []struct {
				v   *float64
				dst *float64
			}{{pc.ErrorRateAbsoluteMax, &cr.ErrorRateAbsoluteMax}, {pc.ErrorRateIncreaseMax, &cr.ErrorRateIncreaseMax},
				{pc.LatencyP95DeltaMs, &cr.LatencyP95DeltaMs}, {pc.LatencyP99DeltaPct, &cr.LatencyP99DeltaPct}} {
				if o.v != nil {
					*o.dst = *o.v
				}
			}
			if pc.MinRequests != nil {
				cr.MinRequests = *pc.MinRequests
			}
			if pc.EvaluationWindow != nil {
				if cr.EvaluationWindow, err = checkedDuration(f+".pass_criteria.evaluation_window", pc.EvaluationWindow); err != nil {
					return canary.Rollout{}, err
				}
			}
		}
		r.Stages = append(r.Stages, stage)
	}
	st := c.s.settings()
	r.PreviousValues, r.SectionVersion = st.domainJSON(r.Section), st.sections[r.Section].Version
	if err := canary.Validate(r); err != nil {
		return canary.Rollout{}, err
	}
	for i := range r.Stages {
		// The tier's floor wins over a looser stage (stored as it applies).
		r.Stages[i].Criteria = r.Stages[i].Criteria.WithFloor(tier)
	}
	return r, nil
}

func (c *canaryService) propose(ctx context.Context, reason string, body *raftv1.CanaryCommand) (*pb.RolloutResponse, error) {
	if err := c.s.checkCommandVersion(configVersion); err != nil {
		return nil, err
	}
	if len(reason) > canary.MaxReasonLength {
		return nil, invalidField("reason", fmt.Sprintf("is %d bytes: at most %d", len(reason), canary.MaxReasonLength))
	}
	cmd := newCommand(ctx, reason)
	cmd.Version = configVersion
	cmd.Body = &raftv1.Command_Canary{Canary: body}
	r, rev, err := proposed[canary.Result](c.s.writes.propose(ctx, cmd, onLeader))
	var blocked *canary.BlockedError
	if errors.As(err, &blocked) {
		// Every gate refusal is audited (the refused command changed
		// nothing, so the note is the record of it).
		c.s.metrics.canaryBlocked.Inc()
		c.s.auditNote(ctx, dlq.Caller{Actor: identityFrom(ctx).Name, Reason: err.Error()}, "governance.blocked",
			"canary."+strings.ToLower(body.Op.String())+"/"+body.Id)
	}
	if err != nil {
		return nil, err
	}
	if r.Rollout.ID == "" { // a remembered request id: read it back
		_ = c.s.store.View(func(kv raftstore.KV) error { r.Rollout, _ = canary.Get(kv, body.Id); return nil })
	}
	return &pb.RolloutResponse{Rollout: c.s.rolloutToPB(r.Rollout), Revision: rev}, nil
}

func (c *canaryService) CreateRollout(ctx context.Context, req *pb.CreateRolloutRequest) (*pb.RolloutResponse, error) {
	r, err := c.rolloutFromRequest(req)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(r)
	return c.propose(ctx, req.Reason, &raftv1.CanaryCommand{Op: raftv1.CanaryCommand_CREATE, Id: r.ID, RolloutJson: b})
}

func checkRolloutID(id string) error {
	if !rolloutID.MatchString(id) {
		return invalidField("id", fmt.Sprintf("%q is not a rollout id", id))
	}
	return nil
}

func (c *canaryService) action(ctx context.Context, op raftv1.CanaryCommand_Op, req *pb.RolloutActionRequest) (*pb.RolloutResponse, error) {
	if err := checkRolloutID(req.Id); err != nil {
		return nil, err
	}
	return c.propose(ctx, req.Reason, &raftv1.CanaryCommand{Op: op, Id: req.Id, BypassReason: req.BypassReason})
}

func (c *canaryService) StartRollout(ctx context.Context, req *pb.RolloutActionRequest) (*pb.RolloutResponse, error) {
	if err := checkRolloutID(req.Id); err != nil {
		return nil, err
	}
	if err := c.s.holdForApproval(ctx, "canary.start", req, "start rollout "+req.Id, req.Reason); err != nil {
		return nil, err
	}
	return c.action(ctx, raftv1.CanaryCommand_START, req)
}

func (c *canaryService) PauseRollout(ctx context.Context, req *pb.RolloutActionRequest) (*pb.RolloutResponse, error) {
	return c.action(ctx, raftv1.CanaryCommand_PAUSE, req)
}

func (c *canaryService) ResumeRollout(ctx context.Context, req *pb.RolloutActionRequest) (*pb.RolloutResponse, error) {
	return c.action(ctx, raftv1.CanaryCommand_RESUME, req)
}

func (c *canaryService) RollbackRollout(ctx context.Context, req *pb.RolloutActionRequest) (*pb.RolloutResponse, error) {
	return c.action(ctx, raftv1.CanaryCommand_ROLLBACK, req)
}

func (c *canaryService) CancelRollout(ctx context.Context, req *pb.RolloutActionRequest) (*pb.RolloutResponse, error) {
	return c.action(ctx, raftv1.CanaryCommand_CANCEL, req)
}

func (c *canaryService) PromoteRollout(ctx context.Context, req *pb.PromoteRolloutRequest) (*pb.RolloutResponse, error) {
	if err := checkRolloutID(req.Id); err != nil {
		return nil, err
	}
	if err := c.s.holdForApproval(ctx, "canary.promote", req, "promote rollout "+req.Id, req.Reason); err != nil {
		return nil, err
	}
	body := &raftv1.CanaryCommand{Op: raftv1.CanaryCommand_PROMOTE, Id: req.Id, Force: req.Force, BypassReason: req.BypassReason}
	if req.ExpectedStageIndex != nil {
		body.ExpectedStageIndex, body.CheckStage = *req.ExpectedStageIndex, true
	}
	if !req.Force {
		// Without force an operator promotes only a stage whose criteria
		// hold on the evidence there is.
		var r canary.Rollout
		var ok bool
		_ = c.s.store.View(func(kv raftstore.KV) error { r, ok = canary.Get(kv, req.Id); return nil })
		if ok && r.State == canary.Canary {
			ev := c.s.canaryTracker.Judge(r, c.s.now())
			if ev.Verdict == canary.Fail || ev.Verdict == canary.Insufficient {
				return nil, fmt.Errorf("%w: the stage's judgment is %s (%s); promote with force to override", canary.ErrJudgment, ev.Verdict, ev.Reason)
			}
			b, _ := json.Marshal(ev)
			body.EvidenceJson = b
		}
	}
	return c.propose(ctx, req.Reason, body)
}

func (c *canaryService) GetRollout(ctx context.Context, req *pb.GetRolloutRequest) (*pb.RolloutResponse, error) {
	if err := checkRolloutID(req.Id); err != nil {
		return nil, err
	}
	if err := c.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	var r canary.Rollout
	var ok bool
	_ = c.s.store.View(func(kv raftstore.KV) error { r, ok = canary.Get(kv, req.Id); return nil })
	if !ok {
		return nil, fmt.Errorf("%w: %q", canary.ErrNotFound, req.Id)
	}
	return &pb.RolloutResponse{Rollout: c.s.rolloutToPB(r), Revision: r.Revision}, nil
}

func (c *canaryService) ListRollouts(ctx context.Context, req *pb.ListRolloutsRequest) (*pb.ListRolloutsResponse, error) {
	if req.State != nil && (*req.State < 0 || int(*req.State) > int(canary.Failed)) {
		return nil, invalidField("state", fmt.Sprintf("%d is not a rollout state", *req.State))
	}
	if err := c.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	var list []canary.Rollout
	_ = c.s.store.View(func(kv raftstore.KV) error { list = canary.List(kv); return nil })
	out := &pb.ListRolloutsResponse{}
	for _, r := range list {
		if req.State == nil || pb.RolloutState_Value(r.State) == *req.State {
			out.Rollouts = append(out.Rollouts, c.s.rolloutToPB(r))
		}
	}
	return out, nil
}

func (c *canaryService) GetRolloutMetrics(ctx context.Context, req *pb.GetRolloutRequest) (*pb.RolloutMetrics, error) {
	if err := checkRolloutID(req.Id); err != nil {
		return nil, err
	}
	// The figures live in the leader's memory.
	if resp, handled, err := c.s.forwardUnary(ctx, pb.CanaryService_GetRolloutMetrics_FullMethodName, req); handled {
		if err != nil {
			return nil, err
		}
		return resp.(*pb.RolloutMetrics), nil
	}
	var r canary.Rollout
	var ok bool
	_ = c.s.store.View(func(kv raftstore.KV) error { r, ok = canary.Get(kv, req.Id); return nil })
	if !ok {
		return nil, fmt.Errorf("%w: %q", canary.ErrNotFound, req.Id)
	}
	out := &pb.RolloutMetrics{Id: r.ID, StageIndex: int32(r.Stage)}
	if r.State == canary.Canary || r.State == canary.Paused {
		ev := c.s.canaryTracker.Judge(r, c.s.now())
		out.Evidence = evidenceToPB(&ev)
	} else {
		out.Evidence = evidenceToPB(r.Evidence)
	}
	return out, nil
}

func (c *canaryService) ListRolloutHistory(ctx context.Context, req *pb.ListRolloutHistoryRequest) (*pb.ListRolloutHistoryResponse, error) {
	if req.Id != "" {
		if err := checkRolloutID(req.Id); err != nil {
			return nil, err
		}
	}
	size := int(req.PageSize)
	switch {
	case size < 0 || size > 1000:
		return nil, invalidField("page_size", fmt.Sprintf("%d is outside 0..1000", size))
	case size == 0:
		size = 100
	}
	var before uint64
	if req.PageToken != "" {
		v, err := strconv.ParseUint(req.PageToken, 10, 64)
		if err != nil || v == 0 {
			return nil, invalidField("page_token", "is not a token this method returned")
		}
		before = v
	}
	if err := c.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	var list []canary.Transition
	_ = c.s.store.View(func(kv raftstore.KV) error { list = canary.History(kv, req.Id, before, size+1); return nil })
	out := &pb.ListRolloutHistoryResponse{}
	if len(list) > size {
		list = list[:size]
		out.NextPageToken = strconv.FormatUint(list[size-1].Seq, 10)
	}
	for _, t := range list {
		out.Transitions = append(out.Transitions, &pb.RolloutTransition{RolloutId: t.RolloutID, Section: t.Section, From: stateToProto(t.From),
			To: stateToProto(t.To), StageIndex: int32(t.Stage), Action: t.Action, Actor: t.Actor, Reason: t.Reason, Time: ts(t.Time),
			Automatic: t.Automatic, Evidence: evidenceToPB(t.Evidence), Revision: t.Revision})
	}
	return out, nil
}

func (c *canaryService) PanicRollback(ctx context.Context, req *pb.PanicRollbackRequest) (*pb.PanicRollbackResponse, error) {
	var active []canary.Rollout
	_ = c.s.store.View(func(kv raftstore.KV) error { active = canary.Active(kv); return nil })
	reason := "panic rollback"
	if req.Reason != "" {
		reason += ": " + req.Reason
	}
	if req.EmergencyCode != "" {
		reason += " (" + req.EmergencyCode + ")"
	}
	out := &pb.PanicRollbackResponse{}
	for _, r := range active {
		res := &pb.PanicRollbackResponse_Result{Id: r.ID}
		op := raftv1.CanaryCommand_ROLLBACK
		if r.State == canary.Created {
			op = raftv1.CanaryCommand_CANCEL
		}
		if _, err := c.propose(ctx, reason, &raftv1.CanaryCommand{Op: op, Id: r.ID}); err != nil {
			res.Error = err.Error()
		} else {
			res.RolledBack = true
		}
		out.Results = append(out.Results, res)
	}
	return out, nil
}

func (c *canaryService) WatchRollouts(req *pb.WatchRolloutsRequest, stream pb.CanaryService_WatchRolloutsServer) error {
	if req.Id != "" {
		if err := checkRolloutID(req.Id); err != nil {
			return err
		}
	}
	build := func(kv raftstore.KV, since, applied uint64) (*pb.WatchRolloutsResponse, bool) {
		msg := &pb.WatchRolloutsResponse{Snapshot: since == 0, Revision: applied}
		for _, r := range canary.List(kv) {
			if (req.Id == "" || r.ID == req.Id) && r.Revision > since {
				msg.Rollouts = append(msg.Rollouts, c.s.rolloutToPB(r))
			}
		}
		return msg, msg.Snapshot || len(msg.Rollouts) > 0
	}
	return watchLoop(c.s, stream.Context(), topicCanary, "rollout:"+req.Id, req.FromRevision, build, stream.SendMsg,
		func(rev uint64) (proto.Message, bool) { return &pb.WatchRolloutsResponse{Revision: rev}, true })
}

// canaryDue is the leader's rollout task: the interlock, the judgment of
// each stage, the watchdog and retention (canary.Proposals), with the
// tracker's figures for rollouts no longer active dropped.
func (s *Server) canaryDue(kv fsm.KV, now time.Time) []*raftv1.Command {
	active := map[string]bool{}
	gate := canaryGate(kv, now)
	for _, r := range canary.Active(kv) {
		active[r.ID] = true
		if gate.Level == 1 && r.State == canary.Canary && s.canaryWarned.Load() != r.Revision {
			s.canaryWarned.Store(r.Revision)
			s.log.Warn("canary.interlock_warning", "rollout", r.ID, "reason", "emergency LEVEL_1: the rollout goes on; LEVEL_2 pauses it")
			s.metrics.canaryInterlock.WithLabelValues("warn").Inc()
		}
	}
	s.canaryTracker.Keep(active)
	return canary.Proposals(kv, s.canaryTracker.Judge, gate, now)
}
