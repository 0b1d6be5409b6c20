package server

import (
	"context"
	"fmt"
	"strings"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/coordination"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	"github.com/robfig/cron/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

type coordinationService struct {
	pb.UnimplementedCoordinationServiceServer
	s *Server
}

// cronParser reads standard 5-field expressions and descriptors (@hourly,
// @every 5m).
var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

func leaseToPB(l *coordination.Lease) *pb.Lease {
	if l == nil {
		return nil
	}
	return &pb.Lease{Id: l.ID, Name: l.Name, Holder: l.Holder, FencingToken: l.FencingToken, Ttl: durationpb.New(l.TTL),
		GrantedAt: ts(l.GrantedAt), ExpiresAt: ts(l.ExpiresAt), Priority: int32(l.Priority)}
}

func jobToPB(j coordination.Job) *pb.Job {
	out := &pb.Job{Resource: j.Resource, Name: j.Name, Cron: j.Cron, Enabled: j.Enabled, CatchUp: j.CatchUp, NextRunAt: ts(j.NextRunAt),
		LastRunAt: ts(j.LastRunAt), RunCount: j.RunCount, ErrorCount: j.ErrorCount, SkippedRuns: j.SkippedRuns, LastError: j.LastError,
		LastDuration: durationpb.New(j.LastDuration), LastFencingToken: j.LastFencingToken, Running: j.Running, Revision: j.Revision}
	if j.Interval > 0 {
		out.Interval = durationpb.New(j.Interval)
	}
	return out
}

func electionToPB(r coordination.Resource, now time.Time) *pb.Election {
	e := &pb.Election{Name: r.Name, Leader: leaseToPB(r.Held(now)), Revision: r.Revision}
	for _, c := range coordination.LiveCandidates(r.Candidates, now) {
		e.Candidates = append(e.Candidates, &pb.Candidate{Holder: c.Holder, Priority: int32(c.Priority), ExpiresAt: ts(c.ExpiresAt)})
	}
	return e
}

func (c *coordinationService) resource(name string) coordination.Resource {
	var r coordination.Resource
	_ = c.s.store.View(func(kv raftstore.KV) error { r = coordination.GetResource(kv, name); return nil })
	return r
}

func (c *coordinationService) job(resource, name string) (coordination.Job, bool) {
	var j coordination.Job
	var ok bool
	_ = c.s.store.View(func(kv raftstore.KV) error { j, ok = coordination.GetJob(kv, resource, name); return nil })
	return j, ok
}

// apply proposes a coordination command (leader: every write method is
// forwarded to the leader) and returns the domain result.
func (c *coordinationService) apply(ctx context.Context, reason string, body *raftv1.CoordinationCommand) (coordination.Result, uint64, error) {
	cmd := newCommand(ctx, reason)
	cmd.Body = &raftv1.Command_Coordination{Coordination: body}
	return proposed[coordination.Result](c.s.writes.propose(ctx, cmd, onLeader))
}

func (c *coordinationService) AcquireLease(ctx context.Context, req *pb.AcquireLeaseRequest) (*pb.LeaseResponse, error) {
	ttl, lockDelay, err := checkLeaseArgs(req.Name, req.Holder, req.Ttl, req.LockDelay)
	if err != nil {
		return nil, err
	}
	r, rev, err := c.apply(ctx, "acquire "+req.Name, &raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_ACQUIRE, Name: req.Name,
		Holder: req.Holder, TtlNanos: int64(ttl), LockDelayNanos: int64(lockDelay)})
	if err != nil {
		return nil, err
	}
	c.s.metrics.leases.WithLabelValues("acquired").Inc()
	return &pb.LeaseResponse{Lease: leaseToPB(r.Lease), Revision: rev}, nil
}

func checkLeaseArgs(name, holder string, ttlPB, lockPB *durationpb.Duration) (time.Duration, time.Duration, error) {
	if err := coordination.CheckName("name", name); err != nil {
		return 0, 0, err
	}
	if err := coordination.CheckHolder(holder); err != nil {
		return 0, 0, err
	}
	ttl, err := checkedDuration("ttl", ttlPB)
	if err != nil {
		return 0, 0, err
	}
	if ttl, err = coordination.CheckTTL(ttl); err != nil {
		return 0, 0, err
	}
	lockDelay, err := checkedDuration("lock_delay", lockPB)
	if err != nil {
		return 0, 0, err
	}
	return ttl, lockDelay, coordination.CheckLockDelay(lockDelay)
}

func (c *coordinationService) KeepAliveLease(ctx context.Context, req *pb.KeepAliveLeaseRequest) (*pb.LeaseResponse, error) {
	if err := coordination.CheckName("name", req.Name); err != nil {
		return nil, err
	}
	if req.Id == 0 {
		return nil, invalidField("id", "is required")
	}
	// Refuse without spending a log entry; the FSM checks again.
	if err := coordination.CheckKeepAlive(c.resource(req.Name), req.Id, c.s.now()); err != nil {
		c.s.metrics.leases.WithLabelValues("keepalive_failed").Inc()
		return nil, err
	}
	r, rev, err := c.apply(ctx, "keepalive", &raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_KEEPALIVE, Name: req.Name, LeaseId: req.Id})
	if err != nil {
		c.s.metrics.leases.WithLabelValues("keepalive_failed").Inc()
		return nil, err
	}
	c.s.metrics.leases.WithLabelValues("kept_alive").Inc()
	return &pb.LeaseResponse{Lease: leaseToPB(r.Lease), Revision: rev}, nil
}

func (c *coordinationService) RevokeLease(ctx context.Context, req *pb.RevokeLeaseRequest) (*pb.RevokeLeaseResponse, error) {
	if req.Id == 0 {
		return nil, invalidField("id", "is required")
	}
	name := req.Name
	if name == "" {
		// Find the resource by lease id (baldurctl lease revoke ID).
		var ok bool
		_ = c.s.store.View(func(kv raftstore.KV) error { name, ok = coordination.ResourceOfLease(kv, req.Id); return nil })
		if !ok {
			return nil, fmt.Errorf("%w: %d", coordination.ErrNotFound, req.Id)
		}
	}
	id := identityFrom(ctx)
	if req.Force {
		// Revoking someone else's lease is an operator's act, with a reason.
		if id.Role < pb.Role_ADMIN {
			return nil, c.s.deny(ctx, id, "/baldur.v1.CoordinationService/RevokeLease", fmt.Sprintf("force revoke requires role admin; %s has %s", id.Name, roleName(id.Role)))
		}
		if strings.TrimSpace(req.Reason) == "" {
			return nil, &fsm.ArgumentError{FieldName: "reason", Code: "REASON_REQUIRED", Msg: "a forced revoke needs a reason (audited)"}
		}
	} else if err := coordination.CheckHolder(req.Holder); err != nil {
		return nil, err
	}
	if err := coordination.CheckRevoke(c.resource(name), req.Id, req.Holder, id.Name, req.Force); err != nil {
		return nil, err
	}
	reason := req.Reason
	if reason == "" {
		reason = "release"
	}
	_, rev, err := c.apply(ctx, reason, &raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_REVOKE, Name: name, LeaseId: req.Id, Holder: req.Holder, Force: req.Force})
	if err != nil {
		return nil, err
	}
	c.s.metrics.leases.WithLabelValues("revoked").Inc()
	return &pb.RevokeLeaseResponse{Revision: rev}, nil
}

func (c *coordinationService) ListLeases(ctx context.Context, req *pb.ListLeasesRequest) (*pb.ListLeasesResponse, error) {
	if err := c.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	resp := &pb.ListLeasesResponse{}
	now := c.s.now()
	err := c.s.store.View(func(kv raftstore.KV) error {
		for _, r := range coordination.Resources(kv) {
			if l := r.Held(now); l != nil {
				resp.Leases = append(resp.Leases, leaseToPB(l))
			}
		}
		resp.Revision = kv.AppliedIndex()
		return nil
	})
	return resp, err
}

func (c *coordinationService) Campaign(ctx context.Context, req *pb.CampaignRequest) (*pb.CampaignResponse, error) {
	ttl, _, err := checkLeaseArgs(req.Name, req.Holder, req.Ttl, nil)
	if err != nil {
		return nil, err
	}
	if _, err := coordination.CheckPriority(int(req.Priority)); err != nil {
		return nil, err
	}
	r, _, err := c.apply(ctx, "campaign "+req.Name, &raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_CAMPAIGN, Name: req.Name,
		Holder: req.Holder, TtlNanos: int64(ttl), Priority: req.Priority})
	if err != nil {
		return nil, err
	}
	resp := &pb.CampaignResponse{Election: electionToPB(c.resource(req.Name), c.s.now())}
	if r.Lease != nil && r.Lease.Holder == req.Holder {
		resp.Lease = leaseToPB(r.Lease)
	}
	return resp, nil
}

func (c *coordinationService) Resign(ctx context.Context, req *pb.ResignRequest) (*pb.ResignResponse, error) {
	if err := coordination.CheckName("name", req.Name); err != nil {
		return nil, err
	}
	_, rev, err := c.apply(ctx, "resign", &raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_RESIGN, Name: req.Name, Holder: req.Holder})
	if err != nil {
		return nil, err
	}
	return &pb.ResignResponse{Revision: rev}, nil
}

func (c *coordinationService) GetElection(ctx context.Context, req *pb.GetElectionRequest) (*pb.Election, error) {
	if err := coordination.CheckName("name", req.Name); err != nil {
		return nil, err
	}
	if err := c.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	return electionToPB(c.resource(req.Name), c.s.now()), nil
}

func (c *coordinationService) ObserveElection(req *pb.ObserveElectionRequest, stream pb.CoordinationService_ObserveElectionServer) error {
	if err := coordination.CheckName("name", req.Name); err != nil {
		return err
	}
	lastLeader := ^uint64(0)
	build := func(kv raftstore.KV, since, applied uint64) (*pb.Election, bool) {
		e := electionToPB(coordination.GetResource(kv, req.Name), c.s.now())
		id := e.GetLeader().GetId()
		changed := since == 0 || id != lastLeader
		lastLeader = id
		e.Revision = applied
		return e, changed
	}
	// Heartbeats re-check the leader: a lapse needs no log entry to be seen.
	// Not shared (view ""): build remembers what this stream last saw.
	return watchLoop(c.s, stream.Context(), topicCoordination, "", 0, build, stream.SendMsg, func(uint64) (proto.Message, bool) {
		var e *pb.Election
		var changed bool
		_ = c.s.store.View(func(kv raftstore.KV) error { e, changed = build(kv, 1, kv.AppliedIndex()); return nil })
		return e, changed
	})
}

// cronNext is the domain's coordination.CronNext: robfig/cron's reading
// of an expression.
func cronNext(expr string, after time.Time) (time.Time, error) {
	sched, err := cronParser.Parse(expr)
	if err != nil {
		return time.Time{}, &fsm.ArgumentError{FieldName: "cron", Code: "INVALID_SCHEDULE", Msg: fmt.Sprintf("%q: %v", expr, err)}
	}
	next := sched.Next(after)
	if next.IsZero() {
		// robfig/cron looks five years ahead ("0 0 30 2 *": February 30th).
		return time.Time{}, &fsm.ArgumentError{FieldName: "cron", Code: "INVALID_SCHEDULE", Msg: fmt.Sprintf("%q never fires", expr)}
	}
	return next, nil
}

func (c *coordinationService) DeclareJob(ctx context.Context, req *pb.DeclareJobRequest) (*pb.Job, error) {
	if err := coordination.CheckName("resource", req.Resource); err != nil {
		return nil, err
	}
	if err := coordination.CheckName("name", req.Name); err != nil {
		return nil, err
	}
	interval, err := checkedDuration("interval", req.Interval)
	if err != nil {
		return nil, err
	}
	if err := coordination.CheckSchedule(interval, strings.TrimSpace(req.Cron)); err != nil {
		return nil, err
	}
	next, err := coordination.FirstRun(req.Cron, c.s.now(), cronNext)
	if err != nil {
		return nil, err
	}
	if _, _, err := c.apply(ctx, "declare job", &raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_JOB_DECLARE, Name: req.Resource, Job: req.Name,
		IntervalNanos: int64(interval), Cron: req.Cron, CatchUp: req.CatchUp, NextRunUnixNano: next.UnixNano()}); err != nil {
		return nil, err
	}
	j, _ := c.job(req.Resource, req.Name)
	return jobToPB(j), nil
}

func (c *coordinationService) ListJobs(ctx context.Context, req *pb.ListJobsRequest) (*pb.ListJobsResponse, error) {
	if req.Resource != "" {
		if err := coordination.CheckName("resource", req.Resource); err != nil {
			return nil, err
		}
	}
	if err := c.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	resp := &pb.ListJobsResponse{}
	err := c.s.store.View(func(kv raftstore.KV) error {
		for _, j := range coordination.Jobs(kv, req.Resource) {
			resp.Jobs = append(resp.Jobs, jobToPB(j))
		}
		resp.Revision = kv.AppliedIndex()
		return nil
	})
	return resp, err
}

func (c *coordinationService) SetJobEnabled(ctx context.Context, req *pb.SetJobEnabledRequest) (*pb.Job, error) {
	j, ok := c.job(req.Resource, req.Name)
	if !ok {
		return nil, fmt.Errorf("%w: %s/%s", coordination.ErrJobNotFound, req.Resource, req.Name)
	}
	reason := req.Reason
	if reason == "" {
		reason = map[bool]string{true: "enable job", false: "disable job"}[req.Enabled]
	}
	// Re-enabling starts from now, not from the runs missed while disabled.
	next, err := coordination.FirstRun(j.Cron, c.s.now(), cronNext)
	if err != nil {
		return nil, err
	}
	if _, _, err := c.apply(ctx, reason, &raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_JOB_ENABLE, Name: req.Resource, Job: req.Name,
		Enabled: req.Enabled, NextRunUnixNano: next.UnixNano()}); err != nil {
		return nil, err
	}
	j, _ = c.job(req.Resource, req.Name)
	return jobToPB(j), nil
}

func (c *coordinationService) StartJobRun(ctx context.Context, req *pb.StartJobRunRequest) (*pb.StartJobRunResponse, error) {
	j, ok := c.job(req.Resource, req.Name)
	if !ok {
		return nil, fmt.Errorf("%w: %s/%s", coordination.ErrJobNotFound, req.Resource, req.Name)
	}
	start, err := coordination.StartCommand(j, c.s.now(), req.FencingToken, cronNext)
	if err != nil {
		return nil, err
	}
	if start == nil {
		return &pb.StartJobRunResponse{Job: jobToPB(j)}, nil
	}
	r, _, err := c.apply(ctx, "job run", start)
	if err != nil {
		return nil, err
	}
	j, _ = c.job(req.Resource, req.Name)
	resp := &pb.StartJobRunResponse{Started: r.Started, Job: jobToPB(j)}
	if r.Started {
		resp.ScheduledAt = ts(time.Unix(0, start.ScheduledUnixNano))
		c.s.metrics.jobs.WithLabelValues(req.Resource, req.Name, "started").Inc()
	}
	return resp, nil
}

func (c *coordinationService) FinishJobRun(ctx context.Context, req *pb.FinishJobRunRequest) (*pb.Job, error) {
	d, err := checkedDuration("duration", req.Duration)
	if err != nil {
		return nil, err
	}
	if len(req.Error) > 1000 {
		req.Error = req.Error[:1000]
	}
	if _, _, err := c.apply(ctx, "job run finished", &raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_JOB_FINISH, Name: req.Resource, Job: req.Name,
		FencingToken: req.FencingToken, Error: req.Error, DurationNanos: int64(d)}); err != nil {
		return nil, err
	}
	outcome := "succeeded"
	if req.Error != "" {
		outcome = "failed"
	}
	c.s.metrics.jobs.WithLabelValues(req.Resource, req.Name, outcome).Inc()
	j, _ := c.job(req.Resource, req.Name)
	return jobToPB(j), nil
}
