package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/canary"
	"github.com/baldurhq/baldurd/config"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type emergencyService struct {
	pb.UnimplementedEmergencyServiceServer
	s *Server
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func stateToPB(st emergency.State) *pb.EmergencyState {
	return &pb.EmergencyState{
		Scope: st.Scope, Level: pb.EmergencyLevel_Value(st.Level), Active: st.Active, Reason: st.Reason,
		ActivatedBy: st.ActivatedBy, ActivatedAt: ts(st.ActivatedAt), ExpiresAt: ts(st.ExpiresAt),
		AutoTriggered: st.Auto, Recovering: st.Recovering, TargetLevel: pb.EmergencyLevel_Value(st.TargetLevel),
		NextStepAt: ts(st.NextStepAt), DeactivatedAt: ts(st.DeactivatedAt), DeactivatedBy: st.DeactivatedBy,
		Revision: st.Revision,
	}
}

func configToPB(c emergency.Config, rev uint64) *pb.EmergencyConfig {
	out := &pb.EmergencyConfig{
		StabilizationPeriod: durationpb.New(c.Stabilization),
		LevelStepDelay:      durationpb.New(c.StepDelay),
		AutoDuration:        durationpb.New(c.AutoDuration),
		Revision:            rev,
	}
	for l := emergency.Level1; l <= emergency.Level3; l++ {
		a := c.Levels[l]
		out.Levels = append(out.Levels, &pb.LevelRule{Level: pb.EmergencyLevel_Value(l), Admission: &pb.Admission{Critical: a.Critical, Standard: a.Standard, NonEssential: a.NonEssential}})
	}
	return out
}

func checkedDuration(field string, d *durationpb.Duration) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalidField(field, err.Error())
	}
	if d.AsDuration() < 0 {
		return 0, invalidField(field, fmt.Sprintf("%v is negative", d.AsDuration()))
	}
	return d.AsDuration(), nil
}

func (e *emergencyService) GetEmergency(ctx context.Context, req *pb.GetEmergencyRequest) (*pb.GetEmergencyResponse, error) {
	scope, err := emergency.CheckScope(req.Scope)
	if err != nil {
		return nil, err
	}
	if err := e.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	resp := &pb.GetEmergencyResponse{}
	err = e.s.store.View(func(kv raftstore.KV) error {
		resp.State = stateToPB(emergency.Get(kv, scope))
		for _, st := range emergency.List(kv) {
			resp.Scopes = append(resp.Scopes, stateToPB(st))
		}
		resp.Config = configToPB(emergency.GetConfig(kv))
		resp.Revision = kv.AppliedIndex()
		return nil
	})
	return resp, err
}

func (e *emergencyService) TriggerEmergency(ctx context.Context, req *pb.TriggerEmergencyRequest) (*pb.TriggerEmergencyResponse, error) {
	d, err := checkedDuration("duration", req.Duration)
	if err != nil {
		return nil, err
	}
	level := emergency.Level(req.Level)
	if err := emergency.CheckTrigger(level, req.Reason, d, req.Scope); err != nil {
		return nil, err
	}
	scope, _ := emergency.CheckScope(req.Scope)
	if req.Auto {
		if err := e.s.gate(ctx, "emergency.auto_trigger"); err != nil {
			return nil, err
		}
	}
	cmd := newCommand(ctx, req.Reason)
	cmd.Body = &raftv1.Command_EmergencyTrigger{EmergencyTrigger: &raftv1.EmergencyTrigger{Scope: scope, Level: int32(level), DurationNanos: int64(d), Auto: req.Auto}}
	_, rev, err := proposed[any](e.s.writes.propose(ctx, cmd, anyNode))
	if err != nil {
		return nil, err
	}
	st := e.s.emergencyState(scope)
	return &pb.TriggerEmergencyResponse{State: stateToPB(st), Revision: rev, Changed: st.Revision == rev}, nil
}

func (e *emergencyService) ReleaseEmergency(ctx context.Context, req *pb.ReleaseEmergencyRequest) (*pb.ReleaseEmergencyResponse, error) {
	if err := emergency.CheckReason(req.Reason); err != nil {
		return nil, err
	}
	scope, err := emergency.CheckScope(req.Scope)
	if err != nil {
		return nil, err
	}
	// Refuse what is already known to fail without spending a log entry;
	// the FSM checks again against the state it applies to.
	if err := emergency.CheckRelease(e.s.emergencyState(scope)); err != nil {
		return nil, err
	}
	if req.Force {
		if err := e.s.holdForApproval(ctx, "emergency.force_release", req, "force the release of the emergency of scope "+scope, req.Reason); err != nil {
			return nil, err
		}
	}
	cmd := newCommand(ctx, req.Reason)
	cmd.Body = &raftv1.Command_EmergencyRelease{EmergencyRelease: &raftv1.EmergencyRelease{Scope: scope, Force: req.Force, Gradual: req.Gradual}}
	_, rev, err := proposed[any](e.s.writes.propose(ctx, cmd, anyNode))
	if err != nil {
		return nil, err
	}
	return &pb.ReleaseEmergencyResponse{State: stateToPB(e.s.emergencyState(scope)), Revision: rev}, nil
}

func (s *Server) emergencyState(scope string) emergency.State {
	var st emergency.State
	_ = s.store.View(func(kv raftstore.KV) error { st = emergency.Get(kv, scope); return nil })
	return st
}

func (e *emergencyService) ListEmergencyHistory(ctx context.Context, req *pb.ListEmergencyHistoryRequest) (*pb.ListEmergencyHistoryResponse, error) {
	limit := int(req.Limit)
	switch {
	case limit == 0:
		limit = 50
	case limit < 0 || limit > emergency.MaxHistory:
		return nil, invalidField("limit", "must be between 1 and 100")
	}
	scope := ""
	if req.Scope != "" {
		var err error
		if scope, err = emergency.CheckScope(req.Scope); err != nil {
			return nil, err
		}
	}
	if err := e.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	resp := &pb.ListEmergencyHistoryResponse{}
	err := e.s.store.View(func(kv raftstore.KV) error {
		for _, c := range emergency.History(kv, scope, limit) {
			resp.Changes = append(resp.Changes, &pb.EmergencyChange{
				Revision: c.Revision, Time: ts(c.Time), Scope: c.Scope, Action: c.Action,
				FromLevel: pb.EmergencyLevel_Value(c.From), ToLevel: pb.EmergencyLevel_Value(c.To), Actor: c.Actor, Reason: c.Reason,
			})
		}
		return nil
	})
	return resp, err
}

func (e *emergencyService) GetEmergencyConfig(ctx context.Context, req *pb.GetEmergencyConfigRequest) (*pb.EmergencyConfig, error) {
	if err := e.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	var out *pb.EmergencyConfig
	err := e.s.store.View(func(kv raftstore.KV) error { out = configToPB(emergency.GetConfig(kv)); return nil })
	return out, err
}

func (e *emergencyService) UpdateEmergencyConfig(ctx context.Context, req *pb.UpdateEmergencyConfigRequest) (*pb.UpdateEmergencyConfigResponse, error) {
	if req.Config == nil {
		return nil, invalidField("config", "is required")
	}
	if err := emergency.CheckReason(req.Reason); err != nil {
		return nil, err
	}
	body, err := emergencyBody("config", req.Config)
	if err != nil {
		return nil, err
	}
	cfg, err := emergency.ConfigFromCommand(body)
	if err != nil {
		return nil, err
	}
	var rev uint64
	if errors.Is(e.s.checkCommandVersion(configVersion), errUpgradePending) {
		// A member cannot apply ConfigSet yet: the emergency domain alone.
		cmd := newCommand(ctx, req.Reason)
		cmd.Body = &raftv1.Command_EmergencyConfig{EmergencyConfig: body}
		_, rev, err = proposed[any](e.s.writes.propose(ctx, cmd, onLeader))
	} else {
		// The emergency section of the runtime configuration: a version
		// and a history like every section.
		raw, _ := json.Marshal(cfg)
		_, rev, err = e.s.setSection(ctx, config.Emergency, raw, body, nil, req.Reason)
	}
	if err != nil {
		return nil, err
	}
	var out *pb.EmergencyConfig
	_ = e.s.store.View(func(kv raftstore.KV) error { out = configToPB(emergency.GetConfig(kv)); return nil })
	return &pb.UpdateEmergencyConfigResponse{Config: out, Revision: rev}, nil
}

func fieldIndex(field string, i int) string { return fmt.Sprintf("%s[%d]", field, i) }

func (e *emergencyService) WatchEmergency(req *pb.WatchEmergencyRequest, stream pb.EmergencyService_WatchEmergencyServer) error {
	scope := ""
	if req.Scope != "" {
		var err error
		if scope, err = emergency.CheckScope(req.Scope); err != nil {
			return err
		}
	}
	build := func(kv raftstore.KV, since, applied uint64) (*pb.WatchEmergencyResponse, bool) {
		msg := &pb.WatchEmergencyResponse{Snapshot: since == 0, Revision: applied}
		for _, st := range emergency.List(kv) {
			if (scope == "" || st.Scope == scope) && st.Revision > since {
				msg.States = append(msg.States, stateToPB(st))
			}
		}
		if scope != "" && since == 0 && len(msg.States) == 0 {
			msg.States = append(msg.States, stateToPB(emergency.Get(kv, scope)))
		}
		if cfg, cfgRev := emergency.GetConfig(kv); since == 0 || cfgRev > since {
			msg.Config = configToPB(cfg, cfgRev)
		}
		if since == 0 || config.Revision(kv) > since || canary.Revision(kv) > since || systemRevision(kv) > since {
			msg.RuntimeConfig = runtimeToPB(e.s.settingsFrom(kv))
		}
		return msg, msg.Snapshot || len(msg.States) > 0 || msg.Config != nil || msg.RuntimeConfig != nil
	}
	return watchLoop(e.s, stream.Context(), topicEmergency, "scope:"+scope, req.FromRevision, build, stream.SendMsg,
		func(rev uint64) (proto.Message, bool) { return &pb.WatchEmergencyResponse{Revision: rev}, true })
}
