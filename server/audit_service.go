package server

import (
	"context"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/audit"
	"github.com/baldurhq/baldurd/raftstore"
)

type auditService struct {
	pb.UnimplementedAuditServiceServer
	s *Server
}

func recordToPB(r audit.Record) *pb.AuditRecord {
	return &pb.AuditRecord{
		Seq: r.Seq, Revision: r.Revision, Time: ts(r.Time), Actor: r.Actor, Reason: r.Reason, Action: r.Action,
		Target: r.Target, Before: r.Before, After: r.After, PrevHash: r.PrevHash, Hash: r.Hash,
	}
}

func (a *auditService) ListAudit(ctx context.Context, req *pb.ListAuditRequest) (*pb.ListAuditResponse, error) {
	size := int(req.PageSize)
	switch {
	case size == 0:
		size = 100
	case size < 0 || size > 1000:
		return nil, invalidField("page_size", "must be between 1 and 1000")
	}
	if err := a.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	resp := &pb.ListAuditResponse{}
	err := a.s.store.View(func(kv raftstore.KV) error {
		recs, next, err := audit.List(kv, audit.Filter{Action: req.Action, Actor: req.Actor, Target: req.Target}, size, req.PageToken)
		if err != nil {
			return err
		}
		for _, r := range recs {
			resp.Records = append(resp.Records, recordToPB(r))
		}
		resp.NextPageToken = next
		return nil
	})
	return resp, err
}

func (a *auditService) VerifyAudit(ctx context.Context, req *pb.VerifyAuditRequest) (*pb.VerifyAuditResponse, error) {
	if err := a.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	var res audit.VerifyResult
	_ = a.s.store.View(func(kv raftstore.KV) error { res = audit.Verify(kv, a.s.auditKey); return nil })
	return &pb.VerifyAuditResponse{Ok: res.OK, Records: res.Records, FirstBrokenSeq: res.FirstBroken, Problem: res.Problem, HeadHash: res.HeadHash, Keyed: len(a.s.auditKey) > 0}, nil
}
