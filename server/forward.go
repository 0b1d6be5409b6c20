package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// peers caches gRPC connections to other members by address.
type peers struct {
	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	dial   grpc.DialOption // transport credentials: TLS with the node certificate, or plaintext
	closed bool            // the node is closing: no new connections
}

// errPeersClosed: a forward asked for a connection while the node closes
// (work that outlives its request, such as a merged report batch on its
// way to the leader, must not open one nobody will close).
var errPeersClosed = errors.New("server: node is shutting down")

func (p *peers) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errPeersClosed
	}
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, p.dial, grpc.WithStatsHandler(sentTracker{}),
		grpc.WithInitialWindowSize(flowWindow), grpc.WithInitialConnWindowSize(flowWindow))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if p.conns == nil {
		p.conns = map[string]*grpc.ClientConn{}
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peers) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for a, c := range p.conns {
		c.Close()
		delete(p.conns, a)
	}
}

// newCommand builds a command for the caller in ctx.
func newCommand(ctx context.Context, reason string) *raftv1.Command {
	cmd := &raftv1.Command{Actor: identityFrom(ctx).Name, Reason: reason, Version: 1}
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		cmd.RequestId = first(md, mdRequestID)
	}
	return cmd
}

var errUpgradePending = errors.New("server: a voter does not support this command version yet")

// checkCommandVersion refuses a command some member cannot apply.
func (s *Server) checkCommandVersion(v uint32) error {
	if v <= 1 {
		return nil
	}
	var err error
	_ = s.store.View(func(kv raftstore.KV) error {
		for id, m := range listMembers(kv) {
			if m.CommandVersion < v && m.GRPCAddr != "" { // a row without addresses is a staged node not yet heard from
				err = fmt.Errorf("%w: member %s supports command version %d, need %d", errUpgradePending, id, m.CommandVersion, v)
			}
		}
		return nil
	})
	return err
}

// readBarrier makes a read linearizable unless consistency is "stale": it
// obtains the leader's commit index after a quorum round (locally or from
// the leader) and waits until this node has applied it.
func (s *Server) readBarrier(ctx context.Context, consistency string) error {
	switch consistency {
	case "stale":
		return nil
	case "", "linearizable":
	default:
		return invalidField("consistency", fmt.Sprintf("%q: use linearizable (default) or stale", consistency))
	}
	ctx, cancel := withForwardBound(ctx)
	defer cancel()
	for {
		idx, err := s.readIndex(ctx)
		if err == nil {
			return s.store.WaitApplied(ctx, idx)
		}
		retry := errors.Is(err, raftstore.ErrNotReady) || errors.Is(err, raftstore.ErrNotLeader) ||
			statusReason(err) == "LEADER_NOT_READY" || statusReason(err) == "NOT_LEADER"
		if !retry {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// readIndex obtains the leader's read index: here when this node leads,
// otherwise from the leader, through an election if need be (a read is
// always safe to send again).
func (s *Server) readIndex(ctx context.Context) (uint64, error) {
	if s.store.IsLeader() {
		return s.store.ReadIndex(ctx)
	}
	if forwardedHere(ctx) {
		return 0, raftstore.ErrNotLeader // never a second hop
	}
	var idx uint64
	local, err := s.viaLeader(ctx, readCall, func(ctx context.Context, conn *grpc.ClientConn) error {
		resp, err := raftv1.NewInternalClient(conn).ReadIndex(forwardContext(ctx), &raftv1.ReadIndexRequest{})
		if err == nil {
			idx = resp.Index
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	if local {
		return s.store.ReadIndex(ctx)
	}
	return idx, nil
}

// internalService serves node-to-node calls.
type internalService struct {
	raftv1.UnimplementedInternalServer
	s *Server
}

func (i *internalService) Apply(ctx context.Context, req *raftv1.ApplyRequest) (*raftv1.ApplyResponse, error) {
	cmd := &raftv1.Command{}
	if err := proto.Unmarshal(req.Command, cmd); err != nil {
		return nil, fmt.Errorf("%w: %v", errUndecodable, err)
	}
	if err := forwardable(cmd); err != nil {
		return nil, err
	}
	// The actor is whoever this node authenticated, never what the sender claims.
	cmd.Actor = identityFrom(ctx).Name
	// So is the time: the leader stamps it when it commits.
	cmd.TimeUnixNano = 0
	res, err := i.s.writes.propose(ctx, cmd, onLeader)
	if err != nil {
		return nil, err
	}
	return &raftv1.ApplyResponse{Revision: res.Revision}, nil
}

func (i *internalService) ReadIndex(ctx context.Context, _ *raftv1.ReadIndexRequest) (*raftv1.ReadIndexResponse, error) {
	idx, err := i.s.store.ReadIndex(ctx)
	if err != nil {
		return nil, err
	}
	return &raftv1.ReadIndexResponse{Index: idx}, nil
}

// leaderOnly holds the methods api/proto declares
// `option (baldur.v1.rpc) = {leader_only: true}`: a follower forwards the
// whole call (after authenticating it) so the answer comes from the leader's
// state and the follower need not wait to apply the entry itself.
var leaderOnly = leaderOnlyMethods()

func leaderOnlyMethods() map[string]bool {
	out := map[string]bool{}
	protoregistry.GlobalFiles.RangeFilesByPackage("baldur.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				if o, _ := proto.GetExtension(md.Options(), pb.E_Rpc).(*pb.RPCOptions); o.GetLeaderOnly() {
					out["/"+string(sd.FullName())+"/"+string(md.Name())] = true
				}
			}
		}
		return true
	})
	return out
}

// mdForwarded marks a call a follower forwarded; the receiver never
// forwards it again (no ping-pong while leadership moves).
const mdForwarded = "baldur-forwarded"

// secondHop decides a call another node already forwarded (second is
// false for a call from a client): it is never forwarded again, so this
// node serves it when it leads and refuses it with ErrNotLeader otherwise.
func (s *Server) secondHop(ctx context.Context) (second bool, err error) {
	if !forwardedHere(ctx) {
		return false, nil
	}
	if s.store.IsLeader() {
		return true, nil
	}
	return true, raftstore.ErrNotLeader
}

// forwardedHere reports whether another node forwarded this call here,
// taking this node for the leader.
func forwardedHere(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return first(md, mdForwarded) != ""
}

// forwardUnary sends a write call to the leader. handled is false when this
// node turned out to be the leader and should serve the call itself.
func (s *Server) forwardUnary(ctx context.Context, method string, req any) (resp any, handled bool, err error) {
	if second, err := s.secondHop(ctx); second {
		return nil, err != nil, err
	}
	reply, err := replyFor(method)
	if err != nil {
		return nil, true, err
	}
	if s.store.IsLeader() {
		return nil, false, nil
	}
	// A read sent twice is harmless; anything else that got no answer may
	// have applied.
	name := shortMethod(method)
	kind := readCall
	if !strings.HasPrefix(name, "Get") && !strings.HasPrefix(name, "List") {
		md, _ := metadata.FromIncomingContext(ctx)
		kind = writeKind(first(md, mdRequestID))
	}
	local, err := s.viaLeader(ctx, kind, func(ctx context.Context, conn *grpc.ClientConn) error {
		s.metrics.forwarded.Inc()
		return conn.Invoke(metadata.AppendToOutgoingContext(forwardContext(ctx), mdForwarded, s.cfg.NodeID), method, req, reply)
	})
	if local {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	return reply, true, nil
}

// forwardStream relays a leader-only streaming call to the leader, message
// by message in both directions, whatever the method. handled is false when
// this node turned out to be the leader (or the call was already forwarded
// to it) and should serve the call itself.
func (s *Server) forwardStream(ctx context.Context, method string, info *grpc.StreamServerInfo, in grpc.ServerStream) (handled bool, err error) {
	if second, err := s.secondHop(ctx); second {
		return err != nil, err
	}
	if s.store.IsLeader() {
		return false, nil
	}
	conn, err := s.leaderConn(ctx)
	if err != nil || conn == nil {
		return err != nil, err
	}
	reqType, replyType, err := messageTypes(method)
	if err != nil {
		return true, err
	}
	s.metrics.forwarded.Inc()
	fctx, cancel := context.WithCancel(metadata.AppendToOutgoingContext(forwardContext(ctx), mdForwarded, s.cfg.NodeID))
	defer cancel()
	desc := &grpc.StreamDesc{StreamName: method, ClientStreams: info.IsClientStream, ServerStreams: info.IsServerStream}
	out, err := conn.NewStream(fctx, desc, method)
	if err != nil {
		return true, err
	}
	// Caller → leader until the caller half-closes; a send error means the
	// leader ended the call, and the receive side below reports why.
	go func() {
		for {
			msg := reqType.New().Interface()
			if err := in.RecvMsg(msg); err != nil {
				if errors.Is(err, io.EOF) {
					out.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if out.SendMsg(msg) != nil {
				return
			}
		}
	}()
	// Leader → caller until the leader ends the call.
	for {
		msg := replyType.New().Interface()
		if err := out.RecvMsg(msg); err != nil {
			if errors.Is(err, io.EOF) {
				return true, nil
			}
			return true, err
		}
		if err := in.SendMsg(msg); err != nil {
			return true, err
		}
	}
}

// messageTypes are the request and response types of a gRPC method, from
// the registered descriptors.
func messageTypes(method string) (req, reply protoreflect.MessageType, err error) {
	name := strings.ReplaceAll(strings.TrimPrefix(method, "/"), "/", ".")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, nil, fmt.Errorf("describe %s: %w", method, err)
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return nil, nil, fmt.Errorf("%s is not a method", method)
	}
	if req, err = protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName()); err != nil {
		return nil, nil, fmt.Errorf("request type of %s: %w", method, err)
	}
	if reply, err = protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName()); err != nil {
		return nil, nil, fmt.Errorf("reply type of %s: %w", method, err)
	}
	return req, reply, nil
}

// replyFor makes an empty response message for a gRPC method.
func replyFor(method string) (proto.Message, error) {
	_, reply, err := messageTypes(method)
	if err != nil {
		return nil, err
	}
	return reply.New().Interface(), nil
}
