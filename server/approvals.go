package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/governance"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Dual control: an operation in the approval set (Config.ApprovalOperations,
// and Config.StrictApprovalOperations in STRICT mode) asked by an identity
// does not run: it becomes a pending change request (replicated) and the
// caller is answered APPROVAL_REQUIRED (REST: 202 {"approval": …}).
// Another identity with the operation's role approves it; the leader then
// calls the operation's handler with the request as it was received, as its
// requester, marked approved, under a request id derived from the approval
// (a new leader carrying it out again is answered by the first write).

// approvedKey marks a context the leader carries an approved request out in
// (a context value, never metadata: a caller cannot forge it).
type approvedKey struct{}

// approvalOp is one operation dual control can hold: the method, a fresh
// request to decode into, and the handler to carry it out.
type approvalOp struct {
	method  string
	request func() proto.Message
	run     func(ctx context.Context, s *Server, req proto.Message) error
}

// approvalOps are the operations dual control knows (governance.Operations).
// A function, not a variable: the handlers it names hold requests for
// approval themselves.
func approvalOps() map[string]approvalOp {
	return map[string]approvalOp{
		"dlq.purge": {pb.DLQService_Purge_FullMethodName, func() proto.Message { return &pb.PurgeRequest{} },
			func(ctx context.Context, s *Server, req proto.Message) error {
				_, err := (&dlqService{s: s}).Purge(ctx, req.(*pb.PurgeRequest))
				return err
			}},
		"cluster.remove_member": {pb.ClusterService_RemoveMember_FullMethodName, func() proto.Message { return &pb.RemoveMemberRequest{} },
			func(ctx context.Context, s *Server, req proto.Message) error {
				_, err := (&clusterService{s: s}).RemoveMember(ctx, req.(*pb.RemoveMemberRequest))
				return err
			}},
		"cluster.restore_snapshot": {pb.ClusterService_RestoreSnapshot_FullMethodName, func() proto.Message { return &pb.RestoreSnapshotResponse{} },
			func(ctx context.Context, s *Server, req proto.Message) error {
				return s.runRestore(ctx, req.(*pb.RestoreSnapshotResponse))
			}},
		"system.disable": {pb.SystemService_DisableSystem_FullMethodName, func() proto.Message { return &pb.SystemActionRequest{} },
			func(ctx context.Context, s *Server, req proto.Message) error {
				_, err := (&systemService{s: s}).DisableSystem(ctx, req.(*pb.SystemActionRequest))
				return err
			}},
		"emergency.force_release": {pb.EmergencyService_ReleaseEmergency_FullMethodName, func() proto.Message { return &pb.ReleaseEmergencyRequest{} },
			func(ctx context.Context, s *Server, req proto.Message) error {
				_, err := (&emergencyService{s: s}).ReleaseEmergency(ctx, req.(*pb.ReleaseEmergencyRequest))
				return err
			}},
		"canary.start": {pb.CanaryService_StartRollout_FullMethodName, func() proto.Message { return &pb.RolloutActionRequest{} },
			func(ctx context.Context, s *Server, req proto.Message) error {
				_, err := (&canaryService{s: s}).StartRollout(ctx, req.(*pb.RolloutActionRequest))
				return err
			}},
		"canary.promote": {pb.CanaryService_PromoteRollout_FullMethodName, func() proto.Message { return &pb.PromoteRolloutRequest{} },
			func(ctx context.Context, s *Server, req proto.Message) error {
				_, err := (&canaryService{s: s}).PromoteRollout(ctx, req.(*pb.PromoteRolloutRequest))
				return err
			}},
	}
}

// approvalRequiredError is an operation held for approval.
type approvalRequiredError struct{ a *pb.Approval }

func (e *approvalRequiredError) Error() string {
	return fmt.Sprintf("%s needs a second person's approval: change request %s is pending until %s", e.a.Operation, e.a.Id,
		e.a.ExpiresAt.AsTime().UTC().Format(time.RFC3339))
}

// status is the error as a gRPC status carrying the approval.
func (e *approvalRequiredError) status() error {
	st := status.New(codes.FailedPrecondition, e.Error())
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: "APPROVAL_REQUIRED", Domain: errorDomain, Metadata: map[string]string{"approval_id": e.a.Id}},
		&pb.ApprovalRequired{Approval: e.a}); err == nil {
		st = d
	}
	return st.Err()
}

// approvalFromStatus is the approval an APPROVAL_REQUIRED status carries.
func approvalFromStatus(st *status.Status) *pb.Approval {
	for _, d := range st.Details() {
		if a, ok := d.(*pb.ApprovalRequired); ok {
			return a.Approval
		}
	}
	return nil
}

// writeApprovalRequired writes the REST answer of an operation held for
// approval: 202 {"approval": …}. It reports false for any other error.
func writeApprovalRequired(w http.ResponseWriter, err error) bool {
	st, ok := status.FromError(err)
	if !ok || statusReason(err) != "APPROVAL_REQUIRED" {
		return false
	}
	a := approvalFromStatus(st)
	if a == nil {
		return false
	}
	b, _ := publicJSON.Marshal(&pb.ApprovalRequired{Approval: a})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(b)
	return true
}

func approvalToPB(a governance.Approval) *pb.Approval {
	return &pb.Approval{Id: a.ID, Operation: a.Operation, Summary: a.Summary, RequestedBy: a.RequestedBy, Reason: a.Reason, State: a.State,
		RequestedAt: ts(a.RequestedAt), ExpiresAt: ts(a.ExpiresAt), DecidedBy: a.DecidedBy, DecisionReason: a.DecisionReason,
		DecidedAt: ts(a.DecidedAt), Result: a.Result, ExecutedAt: ts(a.ExecutedAt), Revision: a.Revision}
}

// approvalNeeded reports whether op asked by the caller in ctx must wait
// for a second person. Dual control needs identities: anonymous callers
// (--dev, or loopback without tokens) are never held; neither is anything
// under break glass, nor the leader carrying an approved request out.
func (s *Server) approvalNeeded(ctx context.Context, op string) bool {
	if _, ok := ctx.Value(approvedKey{}).(string); ok {
		return false
	}
	if id := identityFrom(ctx); id.Name == "" || id.Name == "anonymous" || id.Name == systemActor {
		return false
	}
	var sys governance.System
	_ = s.store.View(func(kv raftstore.KV) error { sys = governance.Get(kv); return nil })
	needed := slices.Contains(s.cfg.ApprovalOperations, op) || (sys.Strict && slices.Contains(s.cfg.StrictApprovalOperations, op))
	if needed && sys.BreakGlassActive(s.now()) {
		// Break glass bypasses the second person: audited and flagged.
		s.metrics.governanceBreakGlass.WithLabelValues(op).Inc()
		s.auditNote(ctx, dlq.Caller{Actor: identityFrom(ctx).Name, Reason: "approval bypassed under break glass: " + sys.BreakGlass.Reason},
			"governance.break_glass_used", op)
		return false
	}
	return needed
}

// holdForApproval creates the change request of op (req as received) when
// it needs a second person, and returns the APPROVAL_REQUIRED error; nil
// when the operation may run now. Call it after validating req.
func (s *Server) holdForApproval(ctx context.Context, op string, req proto.Message, summary, reason string) error {
	if !s.approvalNeeded(ctx, op) {
		return nil
	}
	if err := s.checkCommandVersion(configVersion); err != nil {
		return err
	}
	body, err := proto.Marshal(req)
	if err != nil {
		return err
	}
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	a := governance.Approval{ID: "apr-" + hex.EncodeToString(idb[:]), Operation: op, Method: approvalOps()[op].method, Request: body,
		Summary: summary, RequesterRole: int32(identityFrom(ctx).Role)}
	raw, _ := json.Marshal(a)
	cmd := newCommand(ctx, reason)
	cmd.Version = configVersion
	cmd.Body = &raftv1.Command_Governance{Governance: &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_APPROVAL_CREATE, ApprovalJson: raw}}
	r, _, err := proposed[governance.ApprovalResult](s.writes.propose(ctx, cmd, onLeader))
	if err != nil {
		return err
	}
	s.log.Info("governance.approval_requested", "approval", r.Approval.ID, "operation", op, "requested_by", r.Approval.RequestedBy)
	return &approvalRequiredError{a: approvalToPB(r.Approval)}
}

// carryOutApprovals is the leader's task: every APPROVED request is carried
// out once, as its requester, and its outcome recorded.
func (s *Server) carryOutApprovals(ctx context.Context, _ time.Time) error {
	var approved []governance.Approval
	_ = s.store.View(func(kv raftstore.KV) error {
		for _, a := range governance.ListApprovals(kv) {
			if a.State == governance.Approved {
				approved = append(approved, a)
			}
		}
		return nil
	})
	for _, a := range approved {
		result, failed := "ok", false
		if err := s.carryOut(ctx, a); err != nil {
			if ctx.Err() != nil {
				return err // leadership ended: the next leader carries it out
			}
			result, failed = statusMessage(err), true
		}
		cmd := &raftv1.Command{Actor: systemActor, Reason: "approved change request carried out", Version: configVersion,
			Body: &raftv1.Command_Governance{Governance: &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_APPROVAL_DONE, ApprovalId: a.ID, Result: result, Failed: failed}}}
		if _, err := s.writes.propose(ctx, cmd, onLeader); err != nil {
			return fmt.Errorf("record approval %s: %w", a.ID, err)
		}
		s.log.Info("governance.approval_carried_out", "approval", a.ID, "operation", a.Operation, "result", result)
	}
	return nil
}

func statusMessage(err error) string {
	if st, ok := status.FromError(toStatus(nil, err)); ok {
		if r := statusReason(st.Err()); r != "" {
			return r + ": " + st.Message()
		}
		return st.Message()
	}
	return err.Error()
}

// carryOut calls the approved request's handler as its requester, with a
// request id of the approval's so that it applies once whichever leader
// carries it out.
func (s *Server) carryOut(ctx context.Context, a governance.Approval) error {
	op, ok := approvalOps()[a.Operation]
	if !ok {
		return fmt.Errorf("operation %q is not one dual control can carry out", a.Operation)
	}
	req := op.request()
	if err := proto.Unmarshal(a.Request, req); err != nil {
		return fmt.Errorf("decode the request: %w", err)
	}
	cctx := withIdentity(ctx, identity{Name: a.RequestedBy, Role: pb.Role(a.RequesterRole)})
	cctx = context.WithValue(cctx, approvedKey{}, a.ID)
	cctx = metadata.NewIncomingContext(cctx, metadata.Pairs(mdRequestID, "approval/"+a.ID))
	return op.run(cctx, s, req)
}

type approvalService struct {
	pb.UnimplementedApprovalServiceServer
	s *Server
}

func (x *approvalService) ListApprovals(ctx context.Context, req *pb.ListApprovalsRequest) (*pb.ListApprovalsResponse, error) {
	switch req.State {
	case "", governance.Pending, governance.Approved, governance.Executed, governance.Failed, governance.Rejected, governance.Expired:
	default:
		return nil, invalidField("state", fmt.Sprintf("%q: use PENDING, APPROVED, EXECUTED, FAILED, REJECTED or EXPIRED", req.State))
	}
	if err := x.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	out := &pb.ListApprovalsResponse{}
	_ = x.s.store.View(func(kv raftstore.KV) error {
		for _, a := range governance.ListApprovals(kv) {
			if req.State == "" || a.State == req.State {
				out.Approvals = append(out.Approvals, approvalToPB(a))
			}
		}
		return nil
	})
	return out, nil
}

func (x *approvalService) GetApproval(ctx context.Context, req *pb.GetApprovalRequest) (*pb.Approval, error) {
	if err := x.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	var a governance.Approval
	var ok bool
	_ = x.s.store.View(func(kv raftstore.KV) error { a, ok = governance.GetApproval(kv, req.Id); return nil })
	if !ok {
		return nil, fmt.Errorf("%w: %q", governance.ErrApprovalNotFound, req.Id)
	}
	return approvalToPB(a), nil
}

func (x *approvalService) decide(ctx context.Context, req *pb.DecideApprovalRequest, approve bool) (*pb.Approval, error) {
	if err := governance.CheckReason(req.Reason, false, 0); err != nil {
		return nil, err
	}
	var a governance.Approval
	var ok bool
	_ = x.s.store.View(func(kv raftstore.KV) error { a, ok = governance.GetApproval(kv, req.Id); return nil })
	if !ok {
		return nil, fmt.Errorf("%w: %q", governance.ErrApprovalNotFound, req.Id)
	}
	// The approver needs the role the operation itself needs.
	if need := methodRules[a.Method].role; approve && identityFrom(ctx).Role < need {
		return nil, fmt.Errorf("%w: approving %s needs the %s role", errPermissionDenied, a.Operation, need)
	}
	cmd := newCommand(ctx, req.Reason)
	cmd.Version = configVersion
	cmd.Body = &raftv1.Command_Governance{Governance: &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_APPROVAL_DECIDE, ApprovalId: req.Id, Approve: approve}}
	r, _, err := proposed[governance.ApprovalResult](x.s.writes.propose(ctx, cmd, onLeader))
	if err != nil {
		return nil, err
	}
	if r.Approval.ID == "" {
		_ = x.s.store.View(func(kv raftstore.KV) error { r.Approval, _ = governance.GetApproval(kv, req.Id); return nil })
	}
	return approvalToPB(r.Approval), nil
}

func (x *approvalService) ApproveApproval(ctx context.Context, req *pb.DecideApprovalRequest) (*pb.Approval, error) {
	return x.decide(ctx, req, true)
}

func (x *approvalService) RejectApproval(ctx context.Context, req *pb.DecideApprovalRequest) (*pb.Approval, error) {
	return x.decide(ctx, req, false)
}

// A snapshot restore held for approval: its body (up to
// --max-restore-bytes) is not kept in the replicated state. The leader that
// received it keeps the file under the data directory, named by the
// approval, and the change request records its size and SHA-256; once
// approved, the restore runs from that file after checking the hash. A
// leader change in between leaves the file on the old leader: the approved
// request then fails, asking for the upload again.

func (s *Server) pendingRestore(id string) string {
	return filepath.Join(s.cfg.DataDir, "pending-restores", id+".snap")
}

// holdRestore receives a restore's snapshot into a file and holds it for
// approval.
func (s *Server) holdRestore(ctx context.Context, r io.Reader) error {
	dir := filepath.Join(s.cfg.DataDir, "pending-restores")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "upload-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // renamed when held
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	herr := s.holdForApproval(ctx, "cluster.restore_snapshot", &pb.RestoreSnapshotResponse{Size: uint64(n), Sha256: sum},
		fmt.Sprintf("restore a snapshot of %d bytes (sha256 %.16s…) over the whole state", n, sum), "snapshot restore")
	var held *approvalRequiredError
	if errors.As(herr, &held) {
		if err := os.Rename(f.Name(), s.pendingRestore(held.a.Id)); err != nil {
			return err
		}
	}
	return herr
}

// runRestore carries out an approved restore from the file its upload left.
func (s *Server) runRestore(ctx context.Context, want *pb.RestoreSnapshotResponse) error {
	id, _ := ctx.Value(approvedKey{}).(string)
	path := s.pendingRestore(id)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("the uploaded snapshot is not on this node (%s leads now; the upload stayed with the leader that received it): upload it again", s.cfg.NodeID)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want.Sha256 {
		return fmt.Errorf("the uploaded snapshot's sha256 is %s, not the approved %s", got, want.Sha256)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if _, err := s.restore(ctx, f); err != nil {
		return err
	}
	return os.Remove(path)
}
