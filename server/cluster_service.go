package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

type clusterService struct {
	pb.UnimplementedClusterServiceServer
	s *Server
}

func (c *clusterService) GetCluster(ctx context.Context, req *pb.GetClusterRequest) (*pb.Cluster, error) {
	if err := c.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	return c.s.ClusterView()
}

// ClusterView is the local view of the cluster (as GetCluster with
// consistency=stale returns it).
func (s *Server) ClusterView() (*pb.Cluster, error) {
	servers, err := s.store.Servers()
	if err != nil {
		return nil, err
	}
	leaderID, _ := s.store.Leader()
	out := &pb.Cluster{LeaderId: leaderID, CommitIndex: s.store.CommitIndex(), Term: s.store.Term(), NodeId: s.store.NodeID()}
	err = s.store.View(func(kv raftstore.KV) error {
		out.AppliedIndex = kv.AppliedIndex()
		table := listMembers(kv)
		for _, sv := range servers {
			m := &pb.Member{Id: sv.ID, RaftAddr: sv.Address, Suffrage: pb.Member_NONVOTER, State: pb.Member_FOLLOWER}
			if sv.Voter {
				m.Suffrage = pb.Member_VOTER
			}
			if sv.ID == leaderID {
				m.State = pb.Member_LEADER
			}
			if rec, ok := table[sv.ID]; ok {
				m.GrpcAddr, m.HttpAddr, m.CommandVersion = rec.GRPCAddr, rec.HTTPAddr, rec.CommandVersion
				if rec.PromotionPending && !sv.Voter {
					m.Suffrage = pb.Member_STAGING
					m.TrailingEntries, _ = s.promo.trailingOf(sv.ID)
				}
			}
			out.Members = append(out.Members, m)
		}
		return nil
	})
	sort.Slice(out.Members, func(i, j int) bool { return out.Members[i].Id < out.Members[j].Id })
	return out, err
}

// leaderConn is a connection to the leader (nil when this node leads),
// waiting for one to be elected within the caller's deadline.
func (s *Server) leaderConn(ctx context.Context) (*grpc.ClientConn, error) {
	ctx, cancel := withForwardBound(ctx)
	defer cancel()
	conn, _, err := s.leaderConnAvoiding(ctx, leaderSeen{})
	return conn, err
}

// checkRaftAddr validates a member's Raft address: host:port, a real
// port, and short.
func checkRaftAddr(addr string) error {
	if len(addr) > 255 {
		return invalidField("raft_addr", fmt.Sprintf("%d bytes, at most 255", len(addr)))
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return invalidField("raft_addr", fmt.Sprintf("%q: %v", addr, err))
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 || host == "" {
		return invalidField("raft_addr", fmt.Sprintf("%q: want host:port with a port in 1..65535", addr))
	}
	return nil
}

// checkMembershipReason requires the reason a membership change is
// audited with.
func checkMembershipReason(reason string) error {
	if strings.TrimSpace(reason) == "" {
		return &fsm.ArgumentError{FieldName: "reason", Code: "REASON_REQUIRED", Msg: "a membership or leadership change needs a reason (audited)"}
	}
	if len(reason) > 500 {
		return invalidField("reason", "at most 500 bytes")
	}
	return nil
}

// auditCluster records a membership or leadership change (through
// whichever node leads now: a transfer has just moved it).
func (c *clusterService) auditCluster(ctx context.Context, action, target, reason string) {
	cmd := &raftv1.Command{Actor: identityFrom(ctx).Name, Reason: reason, Version: 1,
		Body: &raftv1.Command_AuditNote{AuditNote: &raftv1.AuditNote{Action: action, Target: target, Detail: reason}}}
	if _, err := c.s.writes.propose(ctx, cmd, anyNode); err != nil {
		c.s.log.Warn("audit.note_failed", "action", action, "target", target, "err", err)
	}
}

// isVoter reports whether id is a voter at addr already.
func (c *clusterService) isVoter(id, addr string) bool {
	servers, _ := c.s.store.Servers()
	for _, sv := range servers {
		if sv.ID == id && sv.Address == addr && sv.Voter {
			return true
		}
	}
	return false
}

func (c *clusterService) AddMember(ctx context.Context, req *pb.AddMemberRequest) (*pb.Cluster, error) {
	if !nodeIDPattern.MatchString(req.Id) {
		return nil, invalidField("id", fmt.Sprintf("%.80q is not a node id (letters, digits, '.', '_', '-', at most 63)", req.Id))
	}
	if err := checkRaftAddr(req.RaftAddr); err != nil {
		return nil, err
	}
	if err := checkMembershipReason(req.Reason); err != nil {
		return nil, err
	}
	// A voter is added as a non-voter and staged: the leader promotes it
	// once it has caught up (membership.go), so it never counts toward the
	// quorum before it can vote.
	if !req.Nonvoter && c.isVoter(req.Id, req.RaftAddr) {
		return c.s.ClusterView() // nothing to do
	}
	stage := !req.Nonvoter
	if stage {
		if err := c.s.checkCommandVersion(promotionVersion); err != nil {
			return nil, err
		}
	}
	if err := c.s.store.AddServer(ctx, req.Id, req.RaftAddr, false); err != nil {
		return nil, err
	}
	if stage {
		if err := c.s.stagePromotion(ctx, req.Id, true, identityFrom(ctx).Name, req.Reason); err != nil {
			return nil, err
		}
	}
	c.s.log.Info("cluster.member_added", "id", req.Id, "raft_addr", req.RaftAddr, "staged_for_promotion", stage, "actor", identityFrom(ctx).Name)
	c.auditCluster(ctx, "cluster.member_added", "member/"+req.Id, fmt.Sprintf("%s (raft %s, %s)", req.Reason, req.RaftAddr, map[bool]string{true: "non-voter staged for promotion", false: "non-voter"}[stage]))
	return c.s.ClusterView()
}

func (c *clusterService) RemoveMember(ctx context.Context, req *pb.RemoveMemberRequest) (*pb.Cluster, error) {
	if req.Id == "" {
		return nil, invalidField("id", "is required")
	}
	if err := checkMembershipReason(req.Reason); err != nil {
		return nil, err
	}
	if err := c.s.holdForApproval(ctx, "cluster.remove_member", req, "remove member "+req.Id+" from the Raft configuration", req.Reason); err != nil {
		return nil, err
	}
	if err := c.s.store.RemoveServer(ctx, req.Id); err != nil {
		return nil, err
	}
	c.s.log.Info("cluster.member_removed", "id", req.Id, "actor", identityFrom(ctx).Name)
	c.auditCluster(ctx, "cluster.member_removed", "member/"+req.Id, req.Reason)
	return c.s.ClusterView()
}

func (c *clusterService) TransferLeadership(ctx context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	if err := checkMembershipReason(req.Reason); err != nil {
		return nil, err
	}
	if req.Id == c.s.store.NodeID() {
		return &pb.TransferLeadershipResponse{LeaderId: req.Id}, nil
	}
	if err := c.s.store.TransferLeadership(ctx, req.Id); err != nil {
		return nil, err
	}
	// The new leader is usually known within an election round.
	var id string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if id, _ = c.s.store.Leader(); id != "" {
			break
		}
	}
	c.s.log.Info("cluster.leadership_transferred", "to", id, "actor", identityFrom(ctx).Name)
	c.auditCluster(ctx, "cluster.leadership_transferred", "member/"+id, req.Reason)
	return &pb.TransferLeadershipResponse{LeaderId: id}, nil
}

// chunkWriter sends what it is given as HttpBody messages of at most 64 KiB.
type chunkWriter struct {
	stream pb.ClusterService_SaveSnapshotServer
}

func (w chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 64<<10)
		if err := w.stream.Send(&httpbody.HttpBody{ContentType: "application/octet-stream", Data: p[:k]}); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

func (c *clusterService) SaveSnapshot(req *pb.SaveSnapshotRequest, stream pb.ClusterService_SaveSnapshotServer) error {
	ctx := stream.Context()
	if err := c.s.readBarrier(ctx, ""); err != nil {
		return err
	}
	// The header adds a few hundred bytes to the state size; clients use
	// the figure for progress only.
	size := c.s.store.SnapshotSize()
	if err := stream.SendHeader(metadata.Pairs("baldur-snapshot-size", strconv.FormatInt(size, 10))); err != nil {
		return err
	}
	hdr, err := c.s.store.WriteSnapshot(chunkWriter{stream})
	if err != nil {
		return err
	}
	c.s.log.Info("cluster.snapshot_saved", "applied_index", hdr.AppliedIndex, "size", hdr.Size, "actor", identityFrom(ctx).Name)
	return nil
}

// restoreReader turns the client stream into an io.Reader of at most max
// bytes.
type restoreReader struct {
	stream pb.ClusterService_RestoreSnapshotServer
	buf    []byte
	read   int64
	max    int64
}

func (r *restoreReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF at the end
		}
		r.buf = msg.Data
		if r.read += int64(len(msg.Data)); r.max > 0 && r.read > r.max {
			return 0, withDetails(codes.InvalidArgument, "REQUEST_TOO_LARGE", fmt.Sprintf("the snapshot is larger than --max-restore-bytes (%d)", r.max))
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (c *clusterService) RestoreSnapshot(stream pb.ClusterService_RestoreSnapshotServer) error {
	ctx := stream.Context() // on the leader: the call is leader-only (api/proto)
	if c.s.approvalNeeded(ctx, "cluster.restore_snapshot") {
		return c.s.holdRestore(ctx, &restoreReader{stream: stream, max: c.s.cfg.MaxRestoreBytes})
	}
	resp, err := c.s.restore(ctx, &restoreReader{stream: stream, max: c.s.cfg.MaxRestoreBytes})
	if err != nil {
		return err
	}
	return stream.SendAndClose(resp)
}

// restore replaces the state with a snapshot and records it.
func (s *Server) restore(ctx context.Context, r io.Reader) (*pb.RestoreSnapshotResponse, error) {
	c := &clusterService{s: s}
	hdr, err := c.s.store.Restore(ctx, r)
	if err != nil {
		return nil, err
	}
	c.s.log.Warn("cluster.snapshot_restored", "applied_index", hdr.AppliedIndex, "size", hdr.Size, "actor", identityFrom(ctx).Name)
	// Record the restore in the (restored) audit trail; this also moves
	// every node's applied index past the restore point.
	note := newCommand(ctx, "snapshot restore")
	note.Body = &raftv1.Command_AuditNote{AuditNote: &raftv1.AuditNote{Action: "cluster.snapshot_restore", Target: "cluster",
		Detail: fmt.Sprintf("restored snapshot of applied index %d, %d bytes, sha256 %x", hdr.AppliedIndex, hdr.Size, hdr.Sha256)}}
	if _, err := c.s.writes.propose(ctx, note, anyNode); err != nil {
		c.s.log.Warn("cluster.snapshot_restore_note_failed", "err", err)
	}
	return &pb.RestoreSnapshotResponse{AppliedIndex: hdr.AppliedIndex, Size: hdr.Size, Sha256: fmt.Sprintf("%x", hdr.Sha256)}, nil
}

// WhoAmI is the caller as authenticated here.
func (c *clusterService) WhoAmI(ctx context.Context, _ *pb.WhoAmIRequest) (*pb.WhoAmIResponse, error) {
	id := identityFrom(ctx)
	return &pb.WhoAmIResponse{Name: id.Name, Role: id.Role, Scopes: append([]string{}, id.Scopes...)}, nil
}
