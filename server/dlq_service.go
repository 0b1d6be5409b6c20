package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

type dlqService struct {
	pb.UnimplementedDLQServiceServer
	s *Server
}

func structJSON(field string, s *structpb.Struct) (json.RawMessage, error) {
	if s == nil {
		return nil, nil
	}
	b, err := protojson.Marshal(s)
	if err != nil {
		return nil, invalidField(field, err.Error())
	}
	return b, nil
}

func jsonStruct(raw json.RawMessage) *structpb.Struct {
	if len(raw) == 0 {
		return nil
	}
	s := &structpb.Struct{}
	if protojson.Unmarshal(raw, s) != nil {
		return nil
	}
	return s
}

func entryToPB(e dlq.Entry) *pb.DLQEntry {
	return &pb.DLQEntry{
		Id: e.ID, Domain: e.Domain, FailureType: e.FailureType, Status: string(e.Status), EntityType: e.EntityType, EntityId: e.EntityID,
		UserId: e.UserID, ErrorCode: e.ErrorCode, ErrorMessage: e.ErrorMessage, RequestData: jsonStruct(e.RequestData),
		SnapshotData: jsonStruct(e.SnapshotData), ResponseData: jsonStruct(e.ResponseData), Metadata: e.Metadata,
		RetryCount: int32(e.RetryCount), MaxRetries: int32(e.MaxRetries), LastRetryAt: ts(e.LastRetryAt), ResolvedAt: ts(e.ResolvedAt),
		ResolvedBy: e.ResolvedBy, ResolutionType: e.ResolutionType, ResolutionNote: e.ResolutionNote, NextActionHint: e.NextActionHint,
		RecommendedAction: e.RecommendedAct, CreatedAt: ts(e.CreatedAt), UpdatedAt: ts(e.UpdatedAt), ExpiresAt: ts(e.ExpiresAt),
		Truncated: e.Truncated, ReplayWorker: e.ReplayWorker, ReplayLeaseUntil: ts(e.ReplayLeaseUntil), Revision: e.Revision,
	}
}

func (d *dlqService) entry(id string) (dlq.Entry, bool) {
	var e dlq.Entry
	var ok bool
	_ = d.s.store.View(func(kv raftstore.KV) error { e, ok = dlq.Get(kv, id); return nil })
	return e, ok
}

func (d *dlqService) apply(ctx context.Context, reason string, body *raftv1.DLQCommand) (dlq.Result, uint64, error) {
	cmd := newCommand(ctx, reason)
	cmd.Body = &raftv1.Command_Dlq{Dlq: body}
	r, err := d.s.applyLocalResult(ctx, cmd)
	if err != nil {
		return dlq.Result{}, 0, err
	}
	return r.DLQ, r.Revision, nil
}

func (d *dlqService) StoreEntry(ctx context.Context, req *pb.StoreEntryRequest) (*pb.StoreEntryResponse, error) {
	in := req.Entry
	if in == nil {
		return nil, invalidField("entry", "is required")
	}
	e := dlq.Entry{ID: in.Id, Domain: in.Domain, FailureType: in.FailureType, EntityType: in.EntityType, EntityID: in.EntityId,
		UserID: in.UserId, ErrorCode: in.ErrorCode, ErrorMessage: in.ErrorMessage, Metadata: in.Metadata,
		NextActionHint: in.NextActionHint, RecommendedAct: in.RecommendedAction}
	var err error
	if e.RequestData, err = structJSON("request_data", in.RequestData); err != nil {
		return nil, err
	}
	if e.SnapshotData, err = structJSON("snapshot_data", in.SnapshotData); err != nil {
		return nil, err
	}
	if e.ResponseData, err = structJSON("response_data", in.ResponseData); err != nil {
		return nil, err
	}
	lim := d.s.cfg.DLQ
	if e, err = dlq.Prepare(e, lim); err != nil {
		return nil, err
	}
	if existing, ok := d.entry(e.ID); ok {
		return &pb.StoreEntryResponse{Entry: entryToPB(existing), Revision: existing.Revision}, nil
	}
	e.MaxRetries = lim.MaxReplayAttempts
	e.ExpiresAt = d.s.now().Add(time.Duration(lim.ExpiryHours) * time.Hour)
	raw, _ := json.Marshal(e)
	if len(raw) > raftstore.MaxEntrySize-4096 {
		return nil, &fieldError{field: "entry", reason: "REQUEST_TOO_LARGE", msg: fmt.Sprintf("the entry is %d bytes after truncation; shorten metadata", len(raw))}
	}
	r, rev, err := d.apply(ctx, "dlq store", &raftv1.DLQCommand{Op: raftv1.DLQCommand_STORE, EntryJson: raw,
		MaxSize: lim.MaxSize, MaxPerDomain: lim.MaxPerDomain, OverflowStrategy: lim.OverflowStrategy})
	if err != nil {
		return nil, err
	}
	if r.Changed {
		d.s.metrics.dlqCreated.WithLabelValues(r.Entry.Domain).Inc()
		d.s.metrics.dlqEvicted.Add(float64(len(r.Evicted)))
	}
	return &pb.StoreEntryResponse{Entry: entryToPB(r.Entry), Created: r.Changed, Evicted: r.Evicted, Revision: rev}, nil
}

func (d *dlqService) ListEntries(ctx context.Context, req *pb.ListEntriesRequest) (*pb.ListEntriesResponse, error) {
	f := dlq.Filter{Domain: req.Domain}
	if req.Status != "" {
		st, err := dlq.ParseStatus(req.Status)
		if err != nil {
			return nil, err
		}
		f.Status = st
	}
	size := int(req.PageSize)
	switch {
	case size == 0:
		size = 100
	case size < 0 || size > 1000:
		return nil, invalidField("page_size", "must be between 1 and 1000")
	}
	if err := d.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	resp := &pb.ListEntriesResponse{}
	err := d.s.store.View(func(kv raftstore.KV) error {
		entries, next, err := dlq.List(kv, f, size, req.PageToken)
		if err != nil {
			return err
		}
		for _, e := range entries {
			resp.Entries = append(resp.Entries, entryToPB(e))
		}
		resp.NextPageToken = next
		return nil
	})
	return resp, err
}

func (d *dlqService) GetEntry(ctx context.Context, req *pb.GetEntryRequest) (*pb.DLQEntry, error) {
	if err := dlq.CheckID(req.Id); err != nil {
		return nil, err
	}
	if err := d.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	e, ok := d.entry(req.Id)
	if !ok {
		return nil, fmt.Errorf("%w: %q", dlq.ErrNotFound, req.Id)
	}
	return entryToPB(e), nil
}

func (d *dlqService) action(ctx context.Context, req *pb.EntryActionRequest, op raftv1.DLQCommand_Op, reasonRequired bool) (*pb.DLQEntry, error) {
	if err := dlq.CheckID(req.Id); err != nil {
		return nil, err
	}
	reason := strings.TrimSpace(req.Reason)
	if reason == "" {
		if reasonRequired {
			return nil, &fieldError{field: "reason", reason: "REASON_REQUIRED", msg: "a reason is required"}
		}
		reason = strings.ToLower(op.String())
	}
	if len(reason) > 500 {
		return nil, invalidField("reason", "at most 500 bytes")
	}
	e, ok := d.entry(req.Id)
	if !ok {
		return nil, fmt.Errorf("%w: %q", dlq.ErrNotFound, req.Id)
	}
	if err := dlq.Check(e, op, ""); err != nil {
		return nil, err // refused without spending a log entry; the FSM checks again
	}
	r, _, err := d.apply(ctx, reason, &raftv1.DLQCommand{Op: op, Id: req.Id, Note: reason})
	if err != nil {
		return nil, err
	}
	return entryToPB(r.Entry), nil
}

func (d *dlqService) ReplayEntry(ctx context.Context, req *pb.EntryActionRequest) (*pb.DLQEntry, error) {
	return d.action(ctx, req, raftv1.DLQCommand_REPLAY, false)
}

func (d *dlqService) ResolveEntry(ctx context.Context, req *pb.EntryActionRequest) (*pb.DLQEntry, error) {
	return d.action(ctx, req, raftv1.DLQCommand_RESOLVE, false)
}

func (d *dlqService) RedriveEntry(ctx context.Context, req *pb.EntryActionRequest) (*pb.DLQEntry, error) {
	e, err := d.action(ctx, req, raftv1.DLQCommand_REDRIVE, true)
	if err == nil {
		d.s.metrics.dlqRedrives.Inc()
	}
	return e, err
}

func (d *dlqService) Purge(ctx context.Context, req *pb.PurgeRequest) (*pb.PurgeResponse, error) {
	if !req.Confirm {
		return nil, &fieldError{field: "confirm", reason: "PURGE_NOT_CONFIRMED", msg: "purge deletes ARCHIVED entries for good; set confirm to true"}
	}
	older, err := checkedDuration("older_than", req.OlderThan)
	if err != nil {
		return nil, err
	}
	if len(req.Ids) == 0 && req.OlderThan == nil {
		return nil, invalidField("ids", "give ids or older_than")
	}
	for i, id := range req.Ids {
		if err := dlq.CheckID(id); err != nil {
			return nil, invalidField(fieldIndex("ids", i), err.Error())
		}
	}
	before := d.stats().ByStatus[string(dlq.Archived)]
	_, rev, err := d.apply(ctx, "purge", &raftv1.DLQCommand{Op: raftv1.DLQCommand_PURGE, Ids: req.Ids, OlderThanNanos: int64(older)})
	if err != nil {
		return nil, err
	}
	return &pb.PurgeResponse{Purged: before - d.stats().ByStatus[string(dlq.Archived)], Revision: rev}, nil
}

func (d *dlqService) stats() dlq.Stats {
	var st dlq.Stats
	_ = d.s.store.View(func(kv raftstore.KV) error { st = dlq.GetStats(kv); return nil })
	return st
}

func (d *dlqService) GetStats(ctx context.Context, req *pb.GetDLQStatsRequest) (*pb.DLQStats, error) {
	if err := d.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	st := d.stats()
	return &pb.DLQStats{Total: st.Total, ByStatus: st.ByStatus, ByDomain: st.ByDomain}, nil
}

// replayBlock says why replay of a domain is paused: emergency LEVEL_2 or
// higher (global), or an OPEN breaker of the same name as the domain.
func replayBlock(kv raftstore.KV, domain string) string {
	if st := emergency.Get(kv, emergency.GlobalScope); st.Active && st.Level >= emergency.Level2 {
		return "paused: emergency " + st.Level.String()
	}
	if b, ok := circuit.Get(kv, domain); ok && b.State == circuit.Open {
		return "paused: breaker " + domain + " is OPEN"
	}
	return ""
}

func (d *dlqService) AcquireReplay(ctx context.Context, req *pb.AcquireReplayRequest) (*pb.AcquireReplayResponse, error) {
	if strings.TrimSpace(req.Worker) == "" || len(req.Worker) > 128 {
		return nil, invalidField("worker", "is required, at most 128 bytes")
	}
	if len(req.Domains) == 0 {
		return nil, invalidField("domains", "name at least one domain")
	}
	lease := 30 * time.Second
	if req.Lease != nil {
		v, err := checkedDuration("lease", req.Lease)
		if err != nil {
			return nil, err
		}
		if v < 5*time.Second || v > 10*time.Minute {
			return nil, invalidField("lease", fmt.Sprintf("%v is outside 5s..10m", v))
		}
		lease = v
	}
	var pick string
	var blocked []string
	_ = d.s.store.View(func(kv raftstore.KV) error {
		for _, domain := range req.Domains {
			if why := replayBlock(kv, domain); why != "" {
				blocked = append(blocked, why)
				continue
			}
			entries, _, _ := dlq.List(kv, dlq.Filter{Domain: domain, Status: dlq.Pending}, 50, "")
			for _, e := range entries {
				if e.RetryCount < e.MaxRetries && !(e.Truncated && d.s.cfg.DLQ.TruncateBlocks) {
					pick = e.ID
					return nil
				}
			}
		}
		return nil
	})
	if pick == "" {
		if len(blocked) > 0 {
			d.s.metrics.dlqReplayBlocked.Inc()
			d.s.log.Info("dlq.replay_blocked", "reason", strings.Join(blocked, "; "))
		}
		return &pb.AcquireReplayResponse{BlockedReason: strings.Join(blocked, "; ")}, nil
	}
	r, _, err := d.apply(ctx, "replay lease", &raftv1.DLQCommand{Op: raftv1.DLQCommand_ACQUIRE, Id: pick, Worker: req.Worker, LeaseNanos: int64(lease)})
	if err != nil {
		return nil, err
	}
	e := r.Entry
	return &pb.AcquireReplayResponse{Entry: entryToPB(e), IdempotencyKey: fmt.Sprintf("%s:%s:%d", e.Domain, e.ID, e.RetryCount)}, nil
}

func (d *dlqService) CompleteReplay(ctx context.Context, req *pb.CompleteReplayRequest) (*pb.DLQEntry, error) {
	if err := dlq.CheckID(req.Id); err != nil {
		return nil, err
	}
	e, ok := d.entry(req.Id)
	if !ok {
		return nil, fmt.Errorf("%w: %q", dlq.ErrNotFound, req.Id)
	}
	if err := dlq.Check(e, raftv1.DLQCommand_COMPLETE, req.Worker); err != nil {
		return nil, err
	}
	r, _, err := d.apply(ctx, "replay result", &raftv1.DLQCommand{Op: raftv1.DLQCommand_COMPLETE, Id: req.Id, Worker: req.Worker, Success: req.Success, Note: req.Note})
	if err != nil {
		return nil, err
	}
	d.s.metrics.dlqReplays.WithLabelValues(map[bool]string{true: "success", false: "failure"}[req.Success]).Inc()
	return entryToPB(r.Entry), nil
}

// proposeDLQDue releases stale replay leases, expires PENDING entries and
// archives old resolutions (leader only).
func (s *Server) proposeDLQDue(ctx context.Context) {
	var due []dlq.Due
	retention := time.Duration(s.cfg.DLQ.RetentionDays) * 24 * time.Hour
	_ = s.store.View(func(kv raftstore.KV) error { due = dlq.DueWork(kv, s.now(), retention, 500); return nil })
	for _, d := range due {
		body := &raftv1.DLQCommand{Op: d.Op, Id: d.ID, ReplayLeaseUntilUnixNano: d.LeaseUntil, OlderThanNanos: int64(retention)}
		cmd := &raftv1.Command{Actor: systemActor, Reason: "dlq " + strings.ToLower(d.Op.String()), Version: 1, Body: &raftv1.Command_Dlq{Dlq: body}}
		if _, err := s.applyLocal(ctx, cmd); err != nil {
			s.log.Warn("dlq.due_propose_failed", "id", d.ID, "op", d.Op.String(), "err", err)
			return
		}
	}
}
