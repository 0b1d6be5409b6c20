package server

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// Failover as a client feels it. A follower forwards to the leader; when
// the leader cannot be reached or says it no longer leads, the follower
// waits for Raft to report another leader (or a newer term) and forwards
// there, within the caller's deadline (forwardBound when it has none).
// Only then does it answer, and the answer says whether the write may
// have applied:
//
//   - NO_LEADER, NOT_LEADER, LEADER_UNREACHABLE: the request never reached
//     a leader that took it; nothing applied; retry anywhere.
//   - RESULT_UNKNOWN: the request was sent and no answer came; it may have
//     applied; retry with the same request id (applied once).
//
// A write that carries a request id is itself retried on the next leader
// after an unknown outcome (the id makes it apply once), so its caller
// sees RESULT_UNKNOWN only when the deadline ends first. Reads are always
// safe to retry and never answer RESULT_UNKNOWN.

// forwardBound bounds a forwarded call whose caller set no deadline (a
// REST call, say).
const forwardBound = 10 * time.Second

var errLeaderUnreachable = errors.New("server: the leader could not be reached")

// withForwardBound gives ctx a deadline when it has none.
func withForwardBound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, forwardBound)
}

// leaderSeen names a leader a call was sent to: after a definite failure
// the next attempt waits for another leader, a newer term or another
// address for it (a restarted node publishes its new one), and asks the
// same one again only after avoidFor (this node's view may be stale).
type leaderSeen struct {
	id, addr string
	term     uint64
	at       time.Time
}

const avoidFor = 500 * time.Millisecond

// sentKey marks a forwarded call's context; sentTracker sets the flag when
// the request message has been handed to the transport (after which the
// leader may have received it).
type sentKey struct{}

type sentTracker struct{}

func (sentTracker) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (sentTracker) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (sentTracker) HandleConn(context.Context, stats.ConnStats) {}
func (sentTracker) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if _, ok := s.(*stats.OutPayload); ok {
		if f, ok := ctx.Value(sentKey{}).(*atomic.Bool); ok {
			f.Store(true)
		}
	}
}

// definiteReasons are the answers that say the request was not taken.
// (LEADER_NOT_READY: a new leader finishing its first round; it is asked
// again.)
var definiteReasons = map[string]bool{"NOT_LEADER": true, "NO_LEADER": true, "LEADER_UNREACHABLE": true}

// callKind says what a forwarded call that got no answer may have done.
type callKind int

const (
	readCall       callKind = iota // nothing: send it again
	writeCall                      // it may have applied: RESULT_UNKNOWN
	idempotentCall                 // a write with a request id: send it again
)

// kindOf is the kind of a write proposed with cmd's request id, if any.
func writeKind(requestID string) callKind {
	if requestID != "" {
		return idempotentCall
	}
	return writeCall
}

// viaLeader runs call against the leader, riding out an election (see the
// top of this file). local is true when this node leads: the caller then
// serves the request itself.
func (s *Server) viaLeader(ctx context.Context, kind callKind, call func(ctx context.Context, conn *grpc.ClientConn) error) (local bool, err error) {
	ctx, cancel := withForwardBound(ctx)
	defer cancel()
	var avoid leaderSeen
	for {
		conn, seen, err := s.leaderConnAvoiding(ctx, avoid)
		if err != nil {
			return false, err
		}
		if conn == nil {
			return true, nil
		}
		sent := new(atomic.Bool)
		err = call(context.WithValue(ctx, sentKey{}, sent), conn)
		switch {
		case err == nil:
			return false, nil
		case ctx.Err() != nil:
			if kind != readCall && sent.Load() {
				return false, fmt.Errorf("%w: the deadline passed after the request was sent to leader %s", raftstore.ErrIndeterminate, seen.id)
			}
			return false, fmt.Errorf("%w: %s did not answer before the deadline: %v", errLeaderUnreachable, seen.id, status.Convert(err).Message())
		case statusReason(err) == "LEADER_NOT_READY":
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
			continue
		case definiteReasons[statusReason(err)]:
			avoid, avoid.at = seen, time.Now() // the leader did not take it: try the next one
		case statusReason(err) == "RESULT_UNKNOWN" || statusReason(err) == "SHUTTING_DOWN" ||
			(status.Code(err) == codes.Unavailable && statusReason(err) == "" && sent.Load()):
			// Taken, or perhaps taken, and the outcome is unknown.
			if kind == writeCall {
				if statusReason(err) == "RESULT_UNKNOWN" {
					return false, err
				}
				return false, fmt.Errorf("%w: leader %s: %v", raftstore.ErrIndeterminate, seen.id, status.Convert(err).Message())
			}
			avoid, avoid.at = seen, time.Now() // a read, or a write its request id applies once
		case status.Code(err) == codes.Unavailable && statusReason(err) == "":
			avoid, avoid.at = seen, time.Now() // the transport failed before the request left
		default:
			return false, err
		}
		s.log.Debug("forward.retry_next_leader", "leader", seen.id, "term", seen.term, "err", err)
	}
}

// leaderConnAvoiding waits until Raft reports a leader other than avoid
// (or avoid again in a newer term) whose API address is known, and
// returns a connection to it; nil when this node leads.
func (s *Server) leaderConnAvoiding(ctx context.Context, avoid leaderSeen) (*grpc.ClientConn, leaderSeen, error) {
	for {
		term := s.store.Term()
		if s.store.IsLeader() {
			return nil, leaderSeen{id: s.cfg.NodeID, term: term}, nil
		}
		id, _ := s.store.Leader()
		if addr := s.memberGRPCAddr(id); id != "" && addr != "" &&
			(id != avoid.id || term > avoid.term || addr != avoid.addr || time.Since(avoid.at) > avoidFor) {
			c, err := s.peers.conn(addr)
			if err != nil {
				return nil, leaderSeen{}, err
			}
			return c, leaderSeen{id: id, addr: addr, term: term}, nil
		}
		select {
		case <-ctx.Done():
			switch {
			case avoid.id != "":
				return nil, leaderSeen{}, fmt.Errorf("%w: %s did not take the request and no other leader was elected in time", errLeaderUnreachable, avoid.id)
			case id != "":
				return nil, leaderSeen{}, fmt.Errorf("%w: leader %s has not published its API address yet", raftstore.ErrNoLeader, id)
			default:
				return nil, leaderSeen{}, fmt.Errorf("%w: none was elected before the deadline", raftstore.ErrNoLeader)
			}
		case <-s.store.LeaderChanged():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) memberGRPCAddr(id string) string {
	var m memberRecord
	_ = s.store.View(func(kv raftstore.KV) error { m, _ = getMember(kv, id); return nil })
	return m.GRPCAddr
}
