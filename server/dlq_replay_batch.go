package server

import (
	"context"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// ReplayBatch runs on the leader (a follower relays the stream to it).
func (d *dlqService) ReplayBatch(req *pb.ReplayBatchRequest, stream pb.DLQService_ReplayBatchServer) error {
	ctx := stream.Context()
	status := dlq.RequiresReview
	if req.Status != "" {
		st, err := dlq.ParseStatus(req.Status)
		if err != nil {
			return err
		}
		status = st
	}
	if req.Domain == "" {
		return invalidField("domain", "is required")
	}
	if err := d.s.gate(ctx, "dlq.replay_batch"); err != nil {
		return err
	}
	maxItems := int(req.MaxItems)
	switch {
	case maxItems == 0:
		maxItems = 100
	case maxItems < 0 || maxItems > 10000:
		return invalidField("max_items", "must be between 1 and 10000")
	}
	rate := req.Rate
	switch {
	case rate == 0:
		rate = 10
	case !(rate >= 0.1 && rate <= 1000):
		return invalidField("rate", "must be between 0.1 and 1000 entries per second")
	}
	wait := 60 * time.Second
	if req.BatchTimeout != nil {
		v, err := checkedDuration("batch_timeout", req.BatchTimeout)
		if err != nil {
			return err
		}
		if v < time.Second || v > time.Hour {
			return invalidField("batch_timeout", "must be between 1s and 1h")
		}
		wait = v
	}
	op := raftv1.DLQCommand_REPLAY
	if req.Redrive {
		op = raftv1.DLQCommand_REDRIVE
		if req.Reason == "" {
			return &fsm.ArgumentError{FieldName: "reason", Code: "REASON_REQUIRED", Msg: "a reason is required to redrive"}
		}
	}
	// Candidates, oldest first.
	var cands []dlq.Entry
	token := ""
	for len(cands) < maxItems {
		page, next, err := d.s.dlq.List(ctx, dlq.Filter{Domain: req.Domain, Status: status}, 500, token)
		if err != nil {
			return err
		}
		for _, e := range page {
			if (req.FailureType == "" || e.FailureType == req.FailureType) && len(cands) < maxItems {
				cands = append(cands, e)
			}
		}
		if token = next; token == "" {
			break
		}
	}
	sizer := dlq.NewAdaptiveBatch(maxItems)
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	reason := req.Reason
	if reason == "" {
		reason = "batch replay"
	}
	batchNo := 0
	for i := 0; i < len(cands); {
		blocked := d.s.replayPause(req.Domain)
		d.notePause(ctx, req.Domain, blocked)
		if blocked != "" {
			if err := stream.Send(&pb.ReplayBatchProgress{Batch: int32(batchNo), TotalCandidates: int32(len(cands)), BlockedReason: blocked}); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
			continue
		}
		batchNo++
		size := min(sizer.Size, len(cands)-i)
		batch := cands[i : i+size]
		i += size
		before := map[string]int{}
		for _, e := range batch {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
			}
			next, err := d.s.dlq.Transition(ctx, caller(ctx, reason), &raftv1.DLQCommand{Op: op, Id: e.ID, Note: reason, ResolutionType: dlq.OriginBatch})
			if err == nil {
				before[e.ID] = next.RetryCount
			}
		}
		resolved, failed, pending := d.awaitBatch(ctx, before, wait)
		p := &pb.ReplayBatchProgress{Batch: int32(batchNo), BatchSize: int32(size), Requeued: int32(len(before)), Resolved: int32(resolved),
			Failed: int32(failed), Pending: int32(pending), NextBatchSize: int32(sizer.Observe(resolved+failed, failed)), TotalCandidates: int32(len(cands))}
		d.s.log.Info("dlq.batch_replay_progress", "domain", req.Domain, "batch", batchNo, "size", size, "resolved", resolved, "failed", failed, "pending", pending, "next_size", p.NextBatchSize)
		if err := stream.Send(p); err != nil {
			return err
		}
	}
	return stream.Send(&pb.ReplayBatchProgress{Batch: int32(batchNo), Done: true, TotalCandidates: int32(len(cands))})
}

// awaitBatch waits until every requeued entry has an outcome or the timeout
// passes: resolved, failed (back to PENDING after an attempt, or
// REQUIRES_REVIEW) and still pending.
func (d *dlqService) awaitBatch(ctx context.Context, before map[string]int, wait time.Duration) (resolved, failed, pending int) {
	deadline := time.Now().Add(wait)
	for {
		resolved, failed, pending = 0, 0, 0
		for id, rc := range before {
			e, ok, err := d.s.dlq.Get(ctx, id)
			if err != nil || !ok {
				pending++
				continue
			}
			switch dlq.ReplayOutcome(e, rc) {
			case dlq.ReplayResolved:
				resolved++
			case dlq.ReplayFailed:
				failed++
			default:
				pending++
			}
		}
		if pending == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return resolved, failed, pending
		}
		time.Sleep(100 * time.Millisecond)
	}
}
