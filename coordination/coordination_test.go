package coordination_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/coordination"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

type machine struct {
	t     *testing.T
	db    *bolt.DB
	index uint64
	now   time.Time
}

func newMachine(t *testing.T) *machine {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.Update(func(tx *bolt.Tx) error {
		for _, b := range coordination.Buckets() {
			tx.CreateBucket(b)
		}
		return nil
	})
	return &machine{t: t, db: db, now: t0}
}

func (m *machine) apply(c *raftv1.CoordinationCommand) (coordination.Result, error) {
	m.index++
	var r coordination.Result
	var err error
	m.db.Update(func(tx *bolt.Tx) error {
		r, err = coordination.Apply(raftstore.NewKV(tx), fsm.Meta{Index: m.index, Time: m.now, Actor: "t", Reason: "r"}, c)
		return nil
	})
	return r, err
}

func acquire(holder string, ttl time.Duration) *raftv1.CoordinationCommand {
	return &raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_ACQUIRE, Name: "res", Holder: holder, TtlNanos: int64(ttl), LockDelayNanos: int64(3 * time.Second)}
}

func TestLeaseLifecycleAndFencing(t *testing.T) {
	m := newMachine(t)
	r, err := m.apply(acquire("a", 10*time.Second))
	if err != nil || r.Lease == nil || r.Lease.FencingToken != 1 {
		t.Fatalf("grant: %+v %v", r, err)
	}
	first := *r.Lease
	var held *coordination.HeldError
	if _, err := m.apply(acquire("b", 10*time.Second)); !errors.As(err, &held) || held.Holder != "a" {
		t.Fatalf("second holder: %v", err)
	}
	m.now = m.now.Add(8 * time.Second)
	if _, err := m.apply(&raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_KEEPALIVE, Name: "res", LeaseId: first.ID}); err != nil {
		t.Fatalf("keepalive: %v", err)
	}
	m.now = m.now.Add(9 * time.Second) // 17s after grant, 9s after keepalive: still held
	if _, err := m.apply(acquire("b", 10*time.Second)); !errors.As(err, &held) {
		t.Fatalf("kept-alive lease lost: %v", err)
	}
	m.now = m.now.Add(2 * time.Second) // lapsed
	var lost *coordination.LostError
	if _, err := m.apply(&raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_KEEPALIVE, Name: "res", LeaseId: first.ID}); !errors.As(err, &lost) {
		t.Fatalf("keepalive of a lapsed lease: %v", err)
	}
	// Lapsed without release: the 3s lock-delay applies, even before EXPIRE.
	var delay *coordination.LockDelayError
	if _, err := m.apply(acquire("b", 10*time.Second)); !errors.As(err, &delay) {
		t.Fatalf("inside the lock-delay: %v", err)
	}
	// EXPIRE for the lapsed lease applies once.
	exp := &raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_EXPIRE, Name: "res", LeaseId: first.ID}
	if r, _ := m.apply(exp); !r.Changed {
		t.Fatal("expire did not apply")
	}
	if r, _ := m.apply(exp); r.Changed {
		t.Fatal("expire applied twice")
	}
	m.now = m.now.Add(3 * time.Second)
	r, err = m.apply(acquire("b", 10*time.Second))
	if err != nil || r.Lease.FencingToken <= first.FencingToken {
		t.Fatalf("after the lock-delay: %+v %v", r.Lease, err)
	}
	second := *r.Lease
	// Revoke: only the holder (or force), and no lock-delay after a release.
	if _, err := m.apply(&raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_REVOKE, Name: "res", LeaseId: second.ID, Holder: "a"}); !errors.Is(err, coordination.ErrNotHolder) {
		t.Fatalf("revoke by non-holder: %v", err)
	}
	if _, err := m.apply(&raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_REVOKE, Name: "res", LeaseId: second.ID, Holder: "b"}); err != nil {
		t.Fatal(err)
	}
	if r, err := m.apply(acquire("c", 10*time.Second)); err != nil || r.Lease.FencingToken <= second.FencingToken {
		t.Fatalf("after release: %+v %v", r, err)
	}
}

func TestLeaseValidation(t *testing.T) {
	m := newMachine(t)
	for _, c := range []*raftv1.CoordinationCommand{
		acquire("a", time.Second),
		acquire("a", 301*time.Second),
		acquire("", 10*time.Second),
		{Op: raftv1.CoordinationCommand_ACQUIRE, Name: "bad name!", Holder: "a"},
		{Op: raftv1.CoordinationCommand_ACQUIRE, Name: "res", Holder: "a", LockDelayNanos: int64(2 * time.Minute)},
	} {
		if _, err := m.apply(c); err == nil {
			t.Errorf("accepted %v", c)
		}
	}
}

func TestJobRunsNeedTheCurrentTokenAndRunOncePerSlot(t *testing.T) {
	m := newMachine(t)
	r, _ := m.apply(&raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_ACQUIRE, Name: "sched", Holder: "a", TtlNanos: int64(10 * time.Second)})
	tok := r.Lease.FencingToken
	m.apply(&raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_JOB_DECLARE, Name: "sched", Job: "j", IntervalNanos: int64(time.Second), NextRunUnixNano: t0.UnixNano()})
	start := func(token uint64, expected time.Time) (coordination.Result, error) {
		return m.apply(&raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_JOB_START, Name: "sched", Job: "j", FencingToken: token,
			ScheduledUnixNano: expected.UnixNano(), NextRunUnixNano: expected.Add(time.Second).UnixNano(), ExpectedNextUnixNano: expected.UnixNano()})
	}
	if _, err := start(tok+1, t0); !errors.Is(err, coordination.ErrStaleToken) {
		t.Fatalf("wrong token: %v", err)
	}
	if r, err := start(tok, t0); err != nil || !r.Started {
		t.Fatalf("first run: %+v %v", r, err)
	}
	if r, _ := start(tok, t0); r.Started {
		t.Fatal("the same slot ran twice")
	}
	if _, err := m.apply(&raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_JOB_FINISH, Name: "sched", Job: "j", FencingToken: tok, Error: "boom"}); err != nil {
		t.Fatal(err)
	}
	var j coordination.Job
	m.db.View(func(tx *bolt.Tx) error { j, _ = coordination.GetJob(raftstore.NewKV(tx), "sched", "j"); return nil })
	if j.RunCount != 1 || j.ErrorCount != 1 || j.LastError != "boom" || !j.NextRunAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("job after one run: %+v", j)
	}
	// Redeclaring (another client starting) keeps the records.
	m.apply(&raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_JOB_DECLARE, Name: "sched", Job: "j", IntervalNanos: int64(time.Second), NextRunUnixNano: t0.Add(time.Hour).UnixNano()})
	m.db.View(func(tx *bolt.Tx) error { j, _ = coordination.GetJob(raftstore.NewKV(tx), "sched", "j"); return nil })
	if j.RunCount != 1 || !j.NextRunAt.Equal(t0.Add(time.Second)) {
		t.Fatalf("redeclare reset the job: %+v", j)
	}
	// After the holder's lease lapses its token no longer starts runs.
	m.now = m.now.Add(11 * time.Second)
	if _, err := start(tok, t0.Add(time.Second)); !errors.Is(err, coordination.ErrStaleToken) {
		t.Fatalf("lapsed holder: %v", err)
	}
}
