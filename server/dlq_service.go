package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/governance"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/protobuf/types/known/structpb"
)

type dlqService struct {
	pb.UnimplementedDLQServiceServer
	s *Server

	pauseMu sync.Mutex
	paused  map[string]string // domain → reason its replay is paused, as last audited
}

// notePause audits the start, change and end of a domain's replay pause
// (Baldur §5.4: a governance block is audited), once per transition rather
// than once per refused poll. The leader that serves replay keeps the last
// reason in memory; a new leader records the pause again.
func (d *dlqService) notePause(ctx context.Context, domain, why string) {
	d.pauseMu.Lock()
	if d.paused == nil {
		d.paused = map[string]string{}
	}
	prev := d.paused[domain]
	if prev == why {
		d.pauseMu.Unlock()
		return
	}
	if why == "" {
		delete(d.paused, domain)
	} else {
		d.paused[domain] = why
	}
	d.pauseMu.Unlock()
	action, detail := "dlq.replay_blocked", why
	if why == "" {
		action, detail = "dlq.replay_resumed", "replay resumed after: "+prev
	} else {
		d.s.metrics.dlqReplayBlocked.Inc()
		switch {
		case why == replayPausedKillSwitch:
			d.s.metrics.governanceBlocked.WithLabelValues("dlq.replay_automatic", governance.BlockedKillSwitch).Inc()
		case strings.HasPrefix(why, "paused: emergency"):
			d.s.metrics.governanceBlocked.WithLabelValues("dlq.replay_automatic", governance.BlockedEmergency).Inc()
		}
		d.s.log.Info("dlq.replay_blocked", "domain", domain, "reason", why)
	}
	d.s.auditNote(ctx, caller(ctx, detail), action, "dlq/domain/"+domain)
}

func jsonStruct(raw json.RawMessage) *structpb.Struct {
	if len(raw) == 0 {
		return nil
	}
	// encoding/json, then structpb, is cheaper than protojson.
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	s, err := structpb.NewStruct(m)
	if err != nil {
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
		Truncated: e.Truncated, ReplayWorker: e.ReplayWorker, ReplayLeaseUntil: ts(e.ReplayLeaseUntil), Revision: e.Revision, ReplayOrigin: e.ReplayOrigin,
	}
}

func (d *dlqService) entry(ctx context.Context, id string) (dlq.Entry, bool, error) {
	return d.s.dlq.Get(ctx, id)
}

func (d *dlqService) StoreEntry(ctx context.Context, req *pb.StoreEntryRequest) (*pb.StoreEntryResponse, error) {
	in := req.Entry
	if in == nil {
		return nil, invalidField("entry", "is required")
	}
	var basic bool
	switch strings.ToUpper(req.View) {
	case "", "FULL":
	case "BASIC":
		basic = true
	default:
		return nil, invalidField("view", fmt.Sprintf("%q: use FULL or BASIC", req.View))
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
	sent := [3]json.RawMessage{e.RequestData, e.SnapshotData, e.ResponseData}
	lim := d.s.dlqLimits()
	// A retried store (an id already stored) is answered by the store
	// itself with the first entry, so nothing is looked up here.
	if e, err = dlq.Capture(e, lim, d.s.now()); err != nil {
		return nil, err
	}
	r, rev, err := d.s.dlq.Store(ctx, caller(ctx, "dlq store"), e)
	if err != nil {
		return nil, err
	}
	if !r.Changed {
		existing := r.Entry
		if basic {
			existing = withoutDocs(existing)
		}
		return &pb.StoreEntryResponse{Entry: entryToPB(existing), Revision: existing.Revision}, nil
	}
	d.s.metrics.dlqCreated.WithLabelValues(d.s.metrics.domainLabels.label(r.Entry.Domain)).Inc()
	d.s.metrics.dlqEvicted.Add(float64(len(r.Evicted)))
	out := entryToPB(withoutDocs(r.Entry))
	if !basic {
		// Documents stored as they were sent (nothing masked or truncated)
		// are answered with the request's own Structs instead of converted
		// back.
		out.RequestData = storedStruct(r.Entry.RequestData, sent[0], in.RequestData)
		out.SnapshotData = storedStruct(r.Entry.SnapshotData, sent[1], in.SnapshotData)
		out.ResponseData = storedStruct(r.Entry.ResponseData, sent[2], in.ResponseData)
	}
	return &pb.StoreEntryResponse{Entry: out, Created: true, Evicted: r.Evicted, Revision: rev}, nil
}

func withoutDocs(e dlq.Entry) dlq.Entry {
	e.RequestData, e.SnapshotData, e.ResponseData = nil, nil, nil
	return e
}

// storedStruct is the stored document as a Struct: sentStruct when the
// store kept the bytes it was sent.
func storedStruct(stored, sent json.RawMessage, sentStruct *structpb.Struct) *structpb.Struct {
	if bytes.Equal(stored, sent) && len(sent) > 0 {
		return sentStruct
	}
	return jsonStruct(stored)
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
	if err := d.s.dlq.ReadBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	entries, next, err := d.s.dlq.List(ctx, f, size, req.PageToken)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListEntriesResponse{NextPageToken: next}
	for _, e := range entries {
		resp.Entries = append(resp.Entries, entryToPB(e))
	}
	return resp, nil
}

func (d *dlqService) GetEntry(ctx context.Context, req *pb.GetEntryRequest) (*pb.DLQEntry, error) {
	if err := dlq.CheckID(req.Id); err != nil {
		return nil, err
	}
	if err := d.s.dlq.ReadBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	e, ok, err := d.entry(ctx, req.Id)
	if err != nil {
		return nil, err
	}
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
			return nil, &fsm.ArgumentError{FieldName: "reason", Code: "REASON_REQUIRED", Msg: "a reason is required"}
		}
		reason = strings.ToLower(op.String())
	}
	if len(reason) > 500 {
		return nil, invalidField("reason", "at most 500 bytes")
	}
	e, ok, err := d.entry(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: %q", dlq.ErrNotFound, req.Id)
	}
	if op == raftv1.DLQCommand_REPLAY {
		if err := d.s.gate(ctx, "dlq.replay"); err != nil {
			return nil, err
		}
	}
	if err := dlq.Check(e, op, ""); err != nil {
		return nil, err // refused without spending a log entry; the store checks again
	}
	next, err := d.s.dlq.Transition(ctx, caller(ctx, reason), &raftv1.DLQCommand{Op: op, Id: req.Id, Note: reason})
	if err != nil {
		return nil, err
	}
	return entryToPB(next), nil
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
		return nil, &fsm.ArgumentError{FieldName: "confirm", Code: "PURGE_NOT_CONFIRMED", Msg: "purge deletes ARCHIVED entries for good; set confirm to true"}
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
	summary := fmt.Sprintf("purge ARCHIVED entries archived longer than %v ago", older)
	if len(req.Ids) > 0 {
		summary = fmt.Sprintf("purge %d ARCHIVED entries by id (first %s)", len(req.Ids), req.Ids[0])
	}
	if err := d.s.holdForApproval(ctx, "dlq.purge", req, summary, "purge"); err != nil {
		return nil, err
	}
	n, rev, err := d.s.dlq.Purge(ctx, caller(ctx, "purge"), req.Ids, older)
	if err != nil {
		return nil, err
	}
	return &pb.PurgeResponse{Purged: n, Revision: rev}, nil
}

func (d *dlqService) GetStats(ctx context.Context, req *pb.GetDLQStatsRequest) (*pb.DLQStats, error) {
	if err := d.s.dlq.ReadBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	st, err := d.s.dlq.Stats(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.DLQStats{Total: st.Total, ByStatus: st.ByStatus, ByDomain: st.ByDomain}, nil
}

// replayPause asks dlq.PauseReason about domain, given the replicated
// emergency level and breakers.
// replayPausedKillSwitch is the replay pause of a disabled system.
const replayPausedKillSwitch = "paused: system disabled (kill switch)"

func (s *Server) replayPause(domain string) string {
	var why string
	_ = s.store.View(func(kv raftstore.KV) error {
		// The pre-action gate (automatic replay is a guarded operation):
		// the kill switch pauses replay; the emergency level does through
		// the DLQ's own pause below; break glass lets replay through both.
		d := governance.Gate(gateInput(kv, s.now()))
		if d.Reason == governance.BlockedKillSwitch {
			why = replayPausedKillSwitch
			return nil
		}
		level := ""
		if st := emergency.Get(kv, emergency.GlobalScope); st.PausesReplay() && d.Reason != governance.AllowedBreakGlass {
			level = st.Level.String()
		}
		why = dlq.PauseReason(domain, s.cfg.DLQBreakers[domain], level, func(name string) string {
			if b, ok := circuit.Get(kv, name); ok {
				return b.State.String()
			}
			return ""
		})
		return nil
	})
	return why
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
	want := int(req.MaxEntries)
	switch {
	case want == 0:
		want = 1
	case want < 0 || want > maxLeasedEntries:
		return nil, invalidField("max_entries", fmt.Sprintf("%d is outside 1..%d", req.MaxEntries, maxLeasedEntries))
	}
	resp := &pb.AcquireReplayResponse{}
	var blocked []string
	for _, domain := range req.Domains {
		if len(resp.Leased) == want {
			break
		}
		why := d.s.replayPause(domain)
		d.notePause(ctx, domain, why)
		if why != "" {
			blocked = append(blocked, why)
			continue
		}
		leased, err := d.s.dlq.Acquire(ctx, caller(ctx, "replay lease"), domain, req.Worker, lease, want-len(resp.Leased))
		if err != nil && len(resp.Leased) == 0 {
			return nil, err
		}
		for _, e := range leased {
			resp.Leased = append(resp.Leased, &pb.LeasedEntry{Entry: entryToPB(e), IdempotencyKey: e.IdempotencyKey()})
		}
		if err != nil {
			break // keep what this call leased: the worker owns it now
		}
	}
	if len(resp.Leased) == 0 {
		resp.BlockedReason = strings.Join(blocked, "; ")
		return resp, nil
	}
	resp.Entry, resp.IdempotencyKey = resp.Leased[0].Entry, resp.Leased[0].IdempotencyKey
	if want == 1 {
		resp.Leased = nil // a single lease answers as before max_entries existed
	}
	return resp, nil
}

// maxLeasedEntries bounds one AcquireReplay (its leases share a log entry).
const maxLeasedEntries = 100

func (d *dlqService) CompleteReplay(ctx context.Context, req *pb.CompleteReplayRequest) (*pb.DLQEntry, error) {
	if err := dlq.CheckID(req.Id); err != nil {
		return nil, err
	}
	e, ok, err := d.entry(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: %q", dlq.ErrNotFound, req.Id)
	}
	if err := dlq.Check(e, raftv1.DLQCommand_COMPLETE, req.Worker); err != nil {
		return nil, err
	}
	if req.ResolutionType != "" && (req.ResolutionType != dlq.DuplicateSkip || !req.Success) {
		return nil, invalidField("resolution_type", fmt.Sprintf("%q: only %q, with success", req.ResolutionType, dlq.DuplicateSkip))
	}
	next, err := d.s.dlq.Transition(ctx, caller(ctx, "replay result"), &raftv1.DLQCommand{Op: raftv1.DLQCommand_COMPLETE, Id: req.Id, Worker: req.Worker,
		Success: req.Success, Note: req.Note, ResolutionType: req.ResolutionType})
	if err != nil {
		return nil, err
	}
	d.s.metrics.dlqReplays.WithLabelValues(map[bool]string{true: "success", false: "failure"}[req.Success]).Inc()
	return entryToPB(next), nil
}

// dlqDue releases stale replay leases, expires PENDING entries and
// archives old resolutions (leader only), as the store's due list says.
func (s *Server) dlqDue(ctx context.Context, now time.Time) error {
	due, err := s.dlq.Due(ctx, now)
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	retention := s.dlqLimits().Retention()
	for _, d := range due {
		body := &raftv1.DLQCommand{Op: d.Op, Id: d.ID, ReplayLeaseUntilUnixNano: d.LeaseUntil, OlderThanNanos: int64(retention)}
		if _, err := s.dlq.Transition(ctx, dlq.Caller{Actor: systemActor, Reason: "dlq " + strings.ToLower(d.Op.String())}, body); err != nil {
			return fmt.Errorf("%s %s: %w", d.Op, d.ID, err)
		}
	}
	return nil
}
