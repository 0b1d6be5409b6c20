package emergency_test

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/emergency"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
)

// state is a real bbolt file with the package's buckets; each step runs in
// its own write transaction, as the FSM does.
type state struct {
	t  *testing.T
	db *bolt.DB
}

func newState(t *testing.T) *state {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range emergency.Buckets() {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return &state{t: t, db: db}
}

func (s *state) do(fn func(kv raftstore.KV) error) error {
	var out error
	if err := s.db.Update(func(tx *bolt.Tx) error { out = fn(raftstore.NewKV(tx)); return nil }); err != nil {
		s.t.Fatal(err)
	}
	return out
}

func (s *state) get(scope string) emergency.State {
	var st emergency.State
	s.do(func(kv raftstore.KV) error { st = emergency.Get(kv, scope); return nil })
	return st
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func meta(index uint64, at time.Duration, reason string) fsm.Meta {
	return fsm.Meta{Index: index, Time: t0.Add(at), Actor: "alice", Reason: reason}
}

func TestTriggerValidation(t *testing.T) {
	cases := []struct {
		name   string
		level  emergency.Level
		reason string
		d      time.Duration
		scope  string
		field  string
	}{
		{"normal", emergency.Normal, "r", 0, "", "level"},
		{"unknown level", emergency.Level(9), "r", 0, "", "level"},
		{"negative level", emergency.Level(-1), "r", 0, "", "level"},
		{"empty reason", emergency.Level1, " ", 0, "", "reason"},
		{"long reason", emergency.Level1, string(make([]byte, 2000)), 0, "", "reason"},
		{"short duration", emergency.Level1, "r", 10 * time.Millisecond, "", "duration"},
		{"negative duration", emergency.Level1, "r", -time.Second, "", "duration"},
		{"long duration", emergency.Level1, "r", 8 * 24 * time.Hour, "", "duration"},
		{"bad scope", emergency.Level1, "r", 0, "EU West", "scope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := emergency.CheckTrigger(tc.level, tc.reason, tc.d, tc.scope)
			var ae *fsm.ArgumentError
			if !errors.As(err, &ae) || ae.Field() != tc.field {
				t.Fatalf("err = %v, want an ArgumentError on %q", err, tc.field)
			}
			// The FSM refuses the same input and writes nothing.
			s := newState(t)
			err = s.do(func(kv raftstore.KV) error {
				_, err := emergency.Trigger(kv, meta(1, 0, tc.reason), &raftv1.EmergencyTrigger{Level: int32(tc.level), DurationNanos: int64(tc.d), Scope: tc.scope})
				return err
			})
			if err == nil {
				t.Fatal("Trigger accepted invalid input")
			}
			if got := s.get("global"); got.Revision != 0 {
				t.Fatalf("refused trigger wrote state: %+v", got)
			}
		})
	}
	if err := emergency.CheckTrigger(emergency.Level3, "ok", time.Hour, "eu-west.1"); err != nil {
		t.Fatalf("valid trigger refused: %v", err)
	}
}

func TestTriggerReleaseAndTheRecoveryGate(t *testing.T) {
	s := newState(t)
	var r emergency.Result
	err := s.do(func(kv raftstore.KV) (err error) {
		r, err = emergency.Trigger(kv, meta(10, 0, "outage"), &raftv1.EmergencyTrigger{Level: 2, DurationNanos: int64(time.Hour)})
		return err
	})
	if err != nil || !r.Changed {
		t.Fatalf("trigger: %v %+v", err, r)
	}
	st := s.get("global")
	if !st.Active || st.Level != emergency.Level2 || st.ActivatedBy != "alice" || !st.ExpiresAt.Equal(t0.Add(time.Hour)) || st.Revision != 10 || st.ActivationRevision != 10 {
		t.Fatalf("state after trigger: %+v", st)
	}
	release := func(index uint64, at time.Duration, force bool) error {
		return s.do(func(kv raftstore.KV) error {
			_, err := emergency.Release(kv, meta(index, at, "recovered"), &raftv1.EmergencyRelease{Force: force})
			return err
		})
	}
	// Default stabilization is 300 s.
	err = release(11, 299*time.Second, false)
	var blocked *emergency.RecoveryBlockedError
	if !errors.As(err, &blocked) || !errors.Is(err, emergency.ErrRecoveryBlocked) || !blocked.Until.Equal(t0.Add(300*time.Second)) {
		t.Fatalf("release inside stabilization: %v", err)
	}
	if st := s.get("global"); !st.Active || st.Revision != 10 {
		t.Fatalf("a blocked release changed state: %+v", st)
	}
	if err := release(12, 300*time.Second, false); err != nil {
		t.Fatalf("release after stabilization: %v", err)
	}
	st = s.get("global")
	if st.Active || st.Level != emergency.Normal || st.DeactivatedBy != "alice" || st.Revision != 12 {
		t.Fatalf("after release: %+v", st)
	}
	if err := release(13, time.Hour, true); !errors.Is(err, emergency.ErrNotActive) {
		t.Fatalf("release when NORMAL: %v, want ErrNotActive", err)
	}
	// Force bypasses the gate.
	s.do(func(kv raftstore.KV) error {
		_, err := emergency.Trigger(kv, meta(14, time.Hour, "again"), &raftv1.EmergencyTrigger{Level: 3})
		return err
	})
	if err := release(15, time.Hour+time.Second, true); err != nil {
		t.Fatalf("forced release: %v", err)
	}
	var hist []emergency.Change
	s.do(func(kv raftstore.KV) error { hist = emergency.History(kv, "", 10); return nil })
	want := []string{"force_release", "trigger", "release", "trigger"}
	if len(hist) != len(want) {
		t.Fatalf("history %+v", hist)
	}
	for i, a := range want {
		if hist[i].Action != a {
			t.Fatalf("history[%d] = %s, want %s (%+v)", i, hist[i].Action, a, hist)
		}
	}
}

func TestAutomaticTriggersOnlyEscalate(t *testing.T) {
	s := newState(t)
	auto := func(index uint64, level int32) emergency.Result {
		var r emergency.Result
		if err := s.do(func(kv raftstore.KV) (err error) {
			r, err = emergency.Trigger(kv, meta(index, 0, "detector"), &raftv1.EmergencyTrigger{Level: level, Auto: true})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := auto(1, 2); !r.Changed || r.Action != "auto_trigger" {
		t.Fatalf("first auto trigger: %+v", r)
	}
	if st := s.get("global"); !st.Auto || !st.ExpiresAt.Equal(t0.Add(30*time.Minute)) {
		t.Fatalf("auto trigger should expire after the default 30 min: %+v", st)
	}
	if r := auto(2, 1); r.Changed {
		t.Fatal("auto trigger lowered LEVEL_2 to LEVEL_1")
	}
	if r := auto(3, 2); r.Changed {
		t.Fatal("auto trigger at the same level changed state")
	}
	if r := auto(4, 3); !r.Changed || s.get("global").Level != emergency.Level3 {
		t.Fatal("auto trigger did not escalate to LEVEL_3")
	}
}

func TestExpiryAppliesOnceAndOnlyWhenDue(t *testing.T) {
	s := newState(t)
	s.do(func(kv raftstore.KV) error {
		_, err := emergency.Trigger(kv, meta(5, 0, "short"), &raftv1.EmergencyTrigger{Level: 1, DurationNanos: int64(time.Minute)})
		return err
	})
	expire := func(index uint64, at time.Duration, activation uint64) bool {
		var r emergency.Result
		s.do(func(kv raftstore.KV) (err error) {
			r, err = emergency.Expire(kv, meta(index, at, "elapsed"), &raftv1.EmergencyExpire{Scope: "global", ActivationRevision: activation})
			return err
		})
		return r.Changed
	}
	var due []emergency.DueAction
	s.do(func(kv raftstore.KV) error { due = emergency.Due(kv, t0.Add(59*time.Second)); return nil })
	if len(due) != 0 {
		t.Fatalf("due before expiry: %+v", due)
	}
	if expire(6, 59*time.Second, 5) {
		t.Fatal("expired early")
	}
	s.do(func(kv raftstore.KV) error { due = emergency.Due(kv, t0.Add(time.Minute)); return nil })
	if len(due) != 1 || !due[0].Expire || due[0].ActivationRevision != 5 {
		t.Fatalf("due at expiry: %+v", due)
	}
	if expire(7, time.Minute, 4) {
		t.Fatal("expiry naming another activation applied")
	}
	if !expire(8, time.Minute, 5) {
		t.Fatal("due expiry did not apply")
	}
	if expire(9, time.Minute+time.Second, 5) {
		t.Fatal("a repeated expiry applied twice")
	}
	var hist []emergency.Change
	s.do(func(kv raftstore.KV) error { hist = emergency.History(kv, "global", 100); return nil })
	if len(hist) != 2 || hist[0].Action != "expire" {
		t.Fatalf("history: %+v", hist)
	}
}

func TestGradualRecoveryStepsDownOneLevelPerDelay(t *testing.T) {
	s := newState(t)
	s.do(func(kv raftstore.KV) error {
		_, err := emergency.Trigger(kv, meta(1, 0, "severe"), &raftv1.EmergencyTrigger{Level: 3})
		return err
	})
	err := s.do(func(kv raftstore.KV) error {
		_, err := emergency.Release(kv, meta(2, 10*time.Minute, "stepping down"), &raftv1.EmergencyRelease{Gradual: true})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	st := s.get("global")
	if !st.Recovering || st.Level != emergency.Level3 || !st.NextStepAt.Equal(t0.Add(11*time.Minute)) {
		t.Fatalf("after gradual release: %+v", st)
	}
	if err := s.do(func(kv raftstore.KV) error {
		_, err := emergency.Release(kv, meta(3, 10*time.Minute, "again"), &raftv1.EmergencyRelease{Gradual: true})
		return err
	}); !errors.Is(err, emergency.ErrAlreadyRecovering) {
		t.Fatalf("second gradual release: %v", err)
	}
	step := func(index uint64, at time.Duration, from emergency.Level) bool {
		var r emergency.Result
		s.do(func(kv raftstore.KV) (err error) {
			r, err = emergency.Step(kv, meta(index, at, "step"), &raftv1.EmergencyStep{Scope: "global", ActivationRevision: 1, FromLevel: int32(from)})
			return err
		})
		return r.Changed
	}
	if step(4, 10*time.Minute+30*time.Second, emergency.Level3) {
		t.Fatal("stepped before the delay")
	}
	if !step(5, 11*time.Minute, emergency.Level3) || s.get("global").Level != emergency.Level2 {
		t.Fatalf("first step: %+v", s.get("global"))
	}
	if step(6, 12*time.Minute, emergency.Level3) {
		t.Fatal("a stale step (from LEVEL_3) applied again")
	}
	if !step(7, 12*time.Minute, emergency.Level2) || s.get("global").Level != emergency.Level1 {
		t.Fatalf("second step: %+v", s.get("global"))
	}
	if !step(8, 13*time.Minute, emergency.Level1) {
		t.Fatal("last step did not apply")
	}
	if st := s.get("global"); st.Active || st.Recovering || st.Level != emergency.Normal {
		t.Fatalf("after the last step: %+v", st)
	}
}

func TestHistoryKeepsTheNewest100(t *testing.T) {
	s := newState(t)
	for i := uint64(1); i <= 130; i++ {
		s.do(func(kv raftstore.KV) error {
			_, err := emergency.Trigger(kv, meta(i, time.Duration(i)*time.Second, "n"), &raftv1.EmergencyTrigger{Level: int32(1 + i%3)})
			return err
		})
	}
	var hist []emergency.Change
	s.do(func(kv raftstore.KV) error { hist = emergency.History(kv, "", 1000); return nil })
	if len(hist) != emergency.MaxHistory || hist[0].Revision != 130 || hist[len(hist)-1].Revision != 31 {
		t.Fatalf("history has %d entries from %d to %d", len(hist), hist[0].Revision, hist[len(hist)-1].Revision)
	}
}

func TestConfigValidation(t *testing.T) {
	good := &raftv1.EmergencyConfig{
		Levels:             []*raftv1.LevelAdmission{{Level: 1, Critical: 1, Standard: 1}, {Level: 2, Critical: 1, Standard: 0.2}, {Level: 3, Critical: 0.3}},
		StabilizationNanos: int64(time.Minute), StepDelayNanos: int64(30 * time.Second), AutoDurationNanos: int64(time.Hour),
	}
	if _, err := emergency.ConfigFromCommand(good); err != nil {
		t.Fatalf("good config refused: %v", err)
	}
	bad := func(mut func(c *raftv1.EmergencyConfig)) *raftv1.EmergencyConfig {
		c := &raftv1.EmergencyConfig{StabilizationNanos: good.StabilizationNanos, StepDelayNanos: good.StepDelayNanos, AutoDurationNanos: good.AutoDurationNanos}
		for _, l := range good.Levels {
			c.Levels = append(c.Levels, proto.Clone(l).(*raftv1.LevelAdmission))
		}
		mut(c)
		return c
	}
	cases := map[string]*raftv1.EmergencyConfig{
		"fraction above 1":   bad(func(c *raftv1.EmergencyConfig) { c.Levels[1].Standard = 1.5 }),
		"negative fraction":  bad(func(c *raftv1.EmergencyConfig) { c.Levels[2].Critical = -0.1 }),
		"missing level":      bad(func(c *raftv1.EmergencyConfig) { c.Levels = c.Levels[:2] }),
		"duplicate level":    bad(func(c *raftv1.EmergencyConfig) { c.Levels[2].Level = 1 }),
		"NORMAL configured":  bad(func(c *raftv1.EmergencyConfig) { c.Levels[0].Level = 0 }),
		"step delay too low": bad(func(c *raftv1.EmergencyConfig) { c.StepDelayNanos = int64(time.Millisecond) }),
		"stabilization < 0":  bad(func(c *raftv1.EmergencyConfig) { c.StabilizationNanos = -1 }),
	}
	for name, c := range cases {
		if _, err := emergency.ConfigFromCommand(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
