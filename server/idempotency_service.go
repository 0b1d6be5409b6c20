package server

import (
	"context"
	"fmt"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/idempotency"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

type idempotencyService struct {
	pb.UnimplementedIdempotencyServiceServer
	s *Server
}

func idemRecordToPB(r idempotency.Record) *pb.IdempotencyRecord {
	out := &pb.IdempotencyRecord{Key: r.Key, Status: r.Status, RetryCount: int32(r.RetryCount), Error: r.Error,
		StartedAt: ts(r.StartedAt), ExpiresAt: ts(r.ExpiresAt), Token: r.Token}
	if len(r.Result) > 0 {
		st := &structpb.Struct{}
		if err := st.UnmarshalJSON(r.Result); err == nil {
			out.Result = st
		}
	}
	return out
}

func (x *idempotencyService) propose(ctx context.Context, body *raftv1.IdempotencyCommand) (idempotency.Result, error) {
	if err := x.s.checkCommandVersion(configVersion); err != nil {
		return idempotency.Result{}, err
	}
	cmd := newCommand(ctx, "")
	cmd.Version = configVersion
	cmd.Body = &raftv1.Command_Idempotency{Idempotency: body}
	r, rev, err := proposed[idempotency.Result](x.s.writes.propose(ctx, cmd, onLeader))
	if err != nil || r.Record.Key != "" {
		return r, err
	}
	// A retried call (same request id) applied before: answer from the
	// record as it is. An acquire whose token is that first revision is
	// this caller's own execution.
	_ = x.s.store.View(func(kv raftstore.KV) error { r.Record, _ = idempotency.Get(kv, body.Key); return nil })
	switch {
	case body.Op != raftv1.IdempotencyCommand_ACQUIRE:
	case r.Record.Status == idempotency.Executing && r.Record.Token == rev:
		r.Decision = idempotency.Continue
	case r.Record.Status == idempotency.Completed:
		r.Decision = idempotency.Skip
	default:
		r.Decision = idempotency.Abort
	}
	return r, nil
}

// checkWindow reads an optional window (0: the default).
func checkWindow(field string, v *durationpb.Duration) (time.Duration, error) {
	d, err := checkedDuration(field, v)
	if err != nil {
		return 0, err
	}
	return d, idempotency.CheckTTL(field, d)
}

func (x *idempotencyService) AcquireIdempotency(ctx context.Context, req *pb.AcquireIdempotencyRequest) (*pb.AcquireIdempotencyResponse, error) {
	if err := idempotency.CheckKey(req.Key); err != nil {
		return nil, err
	}
	exec, err := checkWindow("execution_ttl", req.ExecutionTtl)
	if err != nil {
		return nil, err
	}
	mem, err := checkWindow("memory_ttl", req.MemoryTtl)
	if err != nil {
		return nil, err
	}
	r, err := x.propose(ctx, &raftv1.IdempotencyCommand{Op: raftv1.IdempotencyCommand_ACQUIRE, Key: req.Key,
		ExecutionTtlNanos: int64(exec), MemoryTtlNanos: int64(mem)})
	if err != nil {
		return nil, err
	}
	return &pb.AcquireIdempotencyResponse{Decision: r.Decision, Record: idemRecordToPB(r.Record)}, nil
}

func (x *idempotencyService) CompleteIdempotency(ctx context.Context, req *pb.CompleteIdempotencyRequest) (*pb.IdempotencyRecord, error) {
	if err := idempotency.CheckKey(req.Key); err != nil {
		return nil, err
	}
	var raw []byte
	if req.Result != nil {
		b, err := structJSON("result", req.Result)
		if err != nil {
			return nil, err
		}
		if len(b) > idempotency.MaxResult {
			return nil, invalidField("result", fmt.Sprintf("is %d bytes as JSON: at most %d", len(b), idempotency.MaxResult))
		}
		raw = b
	}
	r, err := x.propose(ctx, &raftv1.IdempotencyCommand{Op: raftv1.IdempotencyCommand_COMPLETE, Key: req.Key, Token: req.Token, ResultJson: raw})
	if err != nil {
		return nil, err
	}
	return idemRecordToPB(r.Record), nil
}

func (x *idempotencyService) FailIdempotency(ctx context.Context, req *pb.FailIdempotencyRequest) (*pb.IdempotencyRecord, error) {
	if err := idempotency.CheckKey(req.Key); err != nil {
		return nil, err
	}
	if len(req.Error) > idempotency.MaxError {
		return nil, invalidField("error", fmt.Sprintf("is %d bytes: at most %d", len(req.Error), idempotency.MaxError))
	}
	r, err := x.propose(ctx, &raftv1.IdempotencyCommand{Op: raftv1.IdempotencyCommand_FAIL, Key: req.Key, Token: req.Token, Error: req.Error})
	if err != nil {
		return nil, err
	}
	return idemRecordToPB(r.Record), nil
}

func (x *idempotencyService) GetIdempotency(ctx context.Context, req *pb.GetIdempotencyRequest) (*pb.IdempotencyRecord, error) {
	if err := idempotency.CheckKey(req.Key); err != nil {
		return nil, err
	}
	if err := x.s.readBarrier(ctx, req.Consistency); err != nil {
		return nil, err
	}
	var r idempotency.Record
	var ok bool
	now := x.s.now()
	_ = x.s.store.View(func(kv raftstore.KV) error { r, ok = idempotency.Get(kv, req.Key); return nil })
	if !ok || (r.Status != idempotency.Executing && !now.Before(r.ExpiresAt)) {
		return nil, fmt.Errorf("%w: %q", idempotency.ErrNotFound, req.Key)
	}
	return idemRecordToPB(r), nil
}
