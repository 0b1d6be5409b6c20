package postgres_test

import (
	"context"
	"testing"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/dlq"
	"github.com/baldurhq/baldurd/postgres"
)

// The dlq.Store over PostgreSQL leases several entries per call, oldest
// first, and audits operator actions through its hook.
func TestStoreLeasesSeveralAndAuditsOperatorActions(t *testing.T) {
	d := open(t)
	ctx := context.Background()
	var audited []string
	s := &postgres.Store{DB: d, Limits: dlq.DefaultLimits, Now: func() time.Time { return t0.Add(time.Minute) },
		Audit: func(_ context.Context, c dlq.Caller, action, target string) {
			audited = append(audited, action+" "+target+" by "+c.Actor)
		}}
	for _, id := range []string{"a1", "a2", "a3"} {
		if _, _, err := s.Store(ctx, dlq.Caller{Actor: "app"}, entry(id, "payment")); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Acquire(ctx, dlq.Caller{Actor: "w1"}, "payment", "w1", 30*time.Second, 2)
	if err != nil || len(got) != 2 || got[0].ID != "a1" || got[1].ID != "a2" || got[0].Status != dlq.Replaying {
		t.Fatalf("acquire 2: %+v %v", got, err)
	}
	rest, err := s.Acquire(ctx, dlq.Caller{Actor: "w2"}, "payment", "w2", 30*time.Second, 5)
	if err != nil || len(rest) != 1 || rest[0].ID != "a3" {
		t.Fatalf("acquire the rest: %+v %v", rest, err)
	}
	if _, err := s.Transition(ctx, dlq.Caller{Actor: "ops", Reason: "fixed by hand"}, &raftv1.DLQCommand{Op: raftv1.DLQCommand_RESOLVE, Id: "a3"}); err == nil {
		t.Fatal("resolving a REPLAYING entry was allowed")
	}
	if _, err := s.Transition(ctx, dlq.Caller{Actor: "w2"}, &raftv1.DLQCommand{Op: raftv1.DLQCommand_COMPLETE, Id: "a3", Worker: "w2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Transition(ctx, dlq.Caller{Actor: "ops", Reason: "retry now"}, &raftv1.DLQCommand{Op: raftv1.DLQCommand_REPLAY, Id: "a3"}); err != nil {
		t.Fatal(err)
	}
	if len(audited) != 1 || audited[0] != "dlq.replay_requested dlq/a3 by ops" {
		t.Fatalf("audited %v", audited)
	}
}
