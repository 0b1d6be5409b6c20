package server

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/idempotency"
	"github.com/baldurhq/baldurd/postgres"
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

// raftIdempotency is the gate's records in the replicated state (the
// default store): each call is a command, grouped with concurrent ones.
type raftIdempotency struct{ s *Server }

func (x raftIdempotency) propose(ctx context.Context, body *raftv1.IdempotencyCommand) (idempotency.Result, error) {
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

func (x raftIdempotency) Acquire(ctx context.Context, _ idempotency.Caller, key string, execTTL, memTTL time.Duration) (string, idempotency.Record, error) {
	r, err := x.propose(ctx, &raftv1.IdempotencyCommand{Op: raftv1.IdempotencyCommand_ACQUIRE, Key: key,
		ExecutionTtlNanos: int64(execTTL), MemoryTtlNanos: int64(memTTL)})
	return r.Decision, r.Record, err
}

func (x raftIdempotency) Finish(ctx context.Context, _ idempotency.Caller, key string, token uint64, result json.RawMessage, failMsg *string) (idempotency.Record, error) {
	body := &raftv1.IdempotencyCommand{Op: raftv1.IdempotencyCommand_COMPLETE, Key: key, Token: token, ResultJson: result}
	if failMsg != nil {
		body = &raftv1.IdempotencyCommand{Op: raftv1.IdempotencyCommand_FAIL, Key: key, Token: token, Error: *failMsg}
	}
	r, err := x.propose(ctx, body)
	return r.Record, err
}

func (x raftIdempotency) Get(ctx context.Context, key, consistency string) (idempotency.Record, error) {
	if err := x.s.readBarrier(ctx, consistency); err != nil {
		return idempotency.Record{}, err
	}
	var r idempotency.Record
	var ok bool
	_ = x.s.store.View(func(kv raftstore.KV) error { r, ok = idempotency.Get(kv, key); return nil })
	if !ok || !idempotency.Live(r, x.s.now()) {
		return idempotency.Record{}, fmt.Errorf("%w: %q", idempotency.ErrNotFound, key)
	}
	return r, nil
}

// newIdempotencyStore wires the configured store.
func (s *Server) newIdempotencyStore() idempotency.Store {
	if s.cfg.IdempotencyStore == "postgres" {
		return &postgres.Idempotency{DB: s.pg, Now: s.now}
	}
	return raftIdempotency{s: s}
}

// expireIdempotencyPG is the leader's sweep of the PostgreSQL store.
func (s *Server) expireIdempotencyPG(ctx context.Context, now time.Time) error {
	pg, ok := s.idem.(*postgres.Idempotency)
	if !ok {
		return nil
	}
	_, err := pg.Expire(ctx, now, 1000)
	return err
}

func gateCaller(ctx context.Context) idempotency.Caller {
	cmd := newCommand(ctx, "")
	return idempotency.Caller{Actor: cmd.Actor, RequestID: cmd.RequestId}
}

// checkWindow reads an optional window: left out, the default; given,
// above 0 and at most idempotency.MaxTTL.
func checkWindow(field string, v *durationpb.Duration) (time.Duration, error) {
	d, err := checkedDuration(field, v)
	if err != nil {
		return 0, err
	}
	if v != nil && d <= 0 {
		return 0, invalidField(field, fmt.Sprintf("%v: must be above 0 (leave it out for the default)", d))
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
	decision, r, err := x.s.idem.Acquire(ctx, gateCaller(ctx), req.Key, exec, mem)
	if err != nil {
		return nil, err
	}
	return &pb.AcquireIdempotencyResponse{Decision: decision, Record: idemRecordToPB(r)}, nil
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
	r, err := x.s.idem.Finish(ctx, gateCaller(ctx), req.Key, req.Token, raw, nil)
	if err != nil {
		return nil, err
	}
	return idemRecordToPB(r), nil
}

func (x *idempotencyService) FailIdempotency(ctx context.Context, req *pb.FailIdempotencyRequest) (*pb.IdempotencyRecord, error) {
	if err := idempotency.CheckKey(req.Key); err != nil {
		return nil, err
	}
	if len(req.Error) > idempotency.MaxError {
		return nil, invalidField("error", fmt.Sprintf("is %d bytes: at most %d", len(req.Error), idempotency.MaxError))
	}
	r, err := x.s.idem.Finish(ctx, gateCaller(ctx), req.Key, req.Token, nil, &req.Error)
	if err != nil {
		return nil, err
	}
	return idemRecordToPB(r), nil
}

func (x *idempotencyService) GetIdempotency(ctx context.Context, req *pb.GetIdempotencyRequest) (*pb.IdempotencyRecord, error) {
	if err := idempotency.CheckKey(req.Key); err != nil {
		return nil, err
	}
	r, err := x.s.idem.Get(ctx, req.Key, req.Consistency)
	if err != nil {
		return nil, err
	}
	return idemRecordToPB(r), nil
}
