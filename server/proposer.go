package server

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/protobuf/proto"
)

// route says where a command may be proposed from.
type route int

const (
	// anyNode: a follower forwards the command to the leader (Internal.Apply)
	// and then waits until it has applied it itself, so a read that follows
	// sees the write. Only the revision comes back from a forwarded command.
	anyNode route = iota
	// onLeader: this node must lead (ErrNotLeader otherwise). Leader tasks
	// and leader-only methods, which read the domain's result, use it.
	onLeader
)

// proposer is the one way a command reaches Raft. Every write goes through
// propose; commit is the only function that calls raftstore.Store.Apply.
// Group commit is a property of the command kind (groupable), not a
// separate road.
type proposer struct {
	s       *Server
	groups  *storeGroups // DLQ stores and replay completions
	batches *storeGroups // idempotency gate commands
}

func newProposer(s *Server) *proposer {
	p := &proposer{s: s}
	p.groups = &storeGroups{p: p, observe: func(n int) { s.metrics.dlqGroupSize.Observe(float64(n)) }}
	p.groups.commitGroup = p.groups.commitDLQ
	p.batches = &storeGroups{p: p, keyOf: batchedKey, observe: func(n int) { s.metrics.commandGroupSize.Observe(float64(n)) }}
	p.batches.commitGroup = p.batches.commitCommands
	return p
}

// propose commits cmd and returns what the state machine answered. The
// command's time is the leader's clock when it is committed, unless the
// caller set cmd.TimeUnixNano (a body that carries the same time, such as a
// DLQ store).
func (p *proposer) propose(ctx context.Context, cmd *raftv1.Command, r route) (applyResult, error) {
	if len(cmd.RequestId) > 128 {
		return applyResult{}, invalidField(mdRequestID, "request id longer than 128 bytes")
	}
	if r == onLeader {
		return p.local(ctx, cmd)
	}
	if forwardedHere(ctx) {
		// A node forwarded the call here as to the leader: never a second
		// hop. If leadership moved, say so; that node tries the next one.
		if !p.s.store.IsLeader() {
			return applyResult{}, raftstore.ErrNotLeader
		}
		return p.local(ctx, cmd)
	}
	if p.s.store.IsLeader() {
		res, err := p.local(ctx, cmd)
		switch {
		case errors.Is(err, raftstore.ErrNotLeader):
			// Leadership moved before the entry was appended: nothing
			// applied; forward to the next leader.
		case errors.Is(err, raftstore.ErrIndeterminate) && cmd.RequestId != "" && ctx.Err() == nil:
			// Lost while committing: the request id makes sending it to
			// the next leader apply it once.
		default:
			return res, err
		}
	}
	return p.forward(ctx, cmd)
}

// forward sends cmd to the leader (through an election if need be, see
// failover.go), or commits it here if this node becomes the leader, and
// waits until this node has applied it.
func (p *proposer) forward(ctx context.Context, cmd *raftv1.Command) (applyResult, error) {
	data, err := proto.Marshal(cmd)
	if err != nil {
		return applyResult{}, fmt.Errorf("encode command: %w", err)
	}
	var res applyResult
	local, err := p.s.viaLeader(ctx, writeKind(cmd.RequestId), func(ctx context.Context, conn *grpc.ClientConn) error {
		p.s.metrics.forwarded.Inc()
		resp, err := raftv1.NewInternalClient(conn).Apply(forwardContext(ctx), &raftv1.ApplyRequest{Command: data})
		if err == nil {
			res = applyResult{Revision: resp.Revision}
		}
		return err
	})
	if err != nil {
		return applyResult{}, err
	}
	if local {
		return p.local(ctx, cmd)
	}
	if err := p.s.store.WaitApplied(ctx, res.Revision); err != nil {
		return applyResult{}, err
	}
	return res, nil
}

// local commits cmd on this node, which must lead; a groupable command
// joins the next group.
func (p *proposer) local(ctx context.Context, cmd *raftv1.Command) (applyResult, error) {
	if groupable(cmd) {
		return p.groups.submit(ctx, cmd)
	}
	if batchedKey(cmd) != "" {
		return p.batches.submit(ctx, cmd)
	}
	return p.commit(ctx, cmd)
}

// commit stamps the leader's time (unless the command carries one) and
// appends cmd to the log. It is the only caller of Store.Apply.
func (p *proposer) commit(ctx context.Context, cmd *raftv1.Command) (applyResult, error) {
	if err := validCommand(cmd); err != nil {
		return applyResult{}, err
	}
	if err := p.s.checkCommandVersion(cmd.Version); err != nil {
		return applyResult{}, err
	}
	if cmd.TimeUnixNano == 0 {
		cmd.TimeUnixNano = p.s.now().UnixNano()
	}
	data, err := proto.Marshal(cmd)
	if err != nil {
		return applyResult{}, fmt.Errorf("encode command: %w", err)
	}
	resp, _, err := p.s.store.Apply(ctx, data)
	if err != nil {
		return applyResult{}, err
	}
	r, ok := resp.(applyResult)
	if !ok {
		return applyResult{}, fmt.Errorf("unexpected apply response %T", resp)
	}
	return r, r.Err
}

// proposed adapts propose's answer for a caller that reads the domain's
// result of type R.
func proposed[R any](res applyResult, err error) (R, uint64, error) {
	return resultOf[R](res), res.Revision, err
}
