package server

import (
	"context"
	"fmt"
	"sort"
	"time"

	"google.golang.org/grpc/status"

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
	var head uint64
	var members map[string]memberRecord
	_ = a.s.store.View(func(kv raftstore.KV) error {
		res = audit.Verify(kv, a.s.auditKey)
		head = audit.Head(kv)
		members = listMembers(kv)
		return nil
	})
	resp := &pb.VerifyAuditResponse{Ok: res.OK, Records: res.Records, FirstBrokenSeq: res.FirstBroken, Problem: res.Problem,
		HeadHash: res.HeadHash, Keyed: len(a.s.auditKey) > 0, AnchorSeq: res.AnchorSeq, HeadSeq: head}
	if req.Local {
		return resp, nil
	}
	// Every member checks its own copy (after the same read barrier); the
	// copies must agree where they are at the same record.
	self := a.s.store.NodeID()
	ids := make([]string, 0, len(members))
	for id := range members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if id == self {
			resp.Members = append(resp.Members, &pb.MemberVerification{NodeId: id, Ok: resp.Ok, Records: resp.Records, HeadSeq: resp.HeadSeq, HeadHash: resp.HeadHash, Problem: resp.Problem})
			continue
		}
		resp.Members = append(resp.Members, a.askMember(ctx, id, members[id].GRPCAddr, req.Consistency))
	}
	bySeq := map[uint64]*pb.MemberVerification{}
	for _, m := range resp.Members {
		if !m.Ok {
			if resp.Ok {
				resp.Ok, resp.Problem = false, fmt.Sprintf("member %s: %s", m.NodeId, m.Problem)
			}
			continue
		}
		if o, ok := bySeq[m.HeadSeq]; ok && o.HeadHash != m.HeadHash && resp.Ok {
			resp.Ok, resp.FirstBrokenSeq = false, m.HeadSeq
			resp.Problem = fmt.Sprintf("members %s and %s hold different records at %d (hashes %.12s…, %.12s…)", o.NodeId, m.NodeId, m.HeadSeq, o.HeadHash, m.HeadHash)
		}
		bySeq[m.HeadSeq] = m
	}
	if !resp.Ok {
		a.s.metrics.auditVerifyFailures.Inc()
		a.s.note(ctx, "audit.verify_failed", "audit", resp.Problem)
	}
	return resp, nil
}

// askMember has one member verify its own copy of the trail.
func (a *auditService) askMember(ctx context.Context, id, addr, consistency string) *pb.MemberVerification {
	out := &pb.MemberVerification{NodeId: id}
	conn, err := a.s.peers.conn(addr)
	if err != nil {
		out.Problem = fmt.Sprintf("could not be asked: %v", err)
		return out
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := pb.NewAuditServiceClient(conn).VerifyAudit(forwardContext(cctx), &pb.VerifyAuditRequest{Consistency: consistency, Local: true})
	if err != nil {
		out.Problem = fmt.Sprintf("could not be asked: %v", status.Convert(err).Message())
		return out
	}
	out.Ok, out.Records, out.HeadSeq, out.HeadHash, out.Problem = r.Ok, r.Records, r.HeadSeq, r.HeadHash, r.Problem
	return out
}
