package circuit_test

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// machine applies commands to a real bbolt state, one transaction each,
// with an increasing index and a controllable time.
type machine struct {
	t     *testing.T
	db    *bolt.DB
	index uint64
	now   time.Time
}

func newMachine(t *testing.T, p circuit.Policy) *machine {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	db.Update(func(tx *bolt.Tx) error {
		for _, b := range circuit.Buckets() {
			tx.CreateBucket(b)
		}
		return nil
	})
	m := &machine{t: t, db: db, now: t0}
	raw, _ := json.Marshal(p)
	m.must(&raftv1.CircuitCommand{Op: raftv1.CircuitCommand_UPSERT, Name: "svc", PolicyJson: raw})
	return m
}

func (m *machine) apply(c *raftv1.CircuitCommand, reason string) (circuit.Result, error) {
	m.index++
	var r circuit.Result
	var err error
	m.db.Update(func(tx *bolt.Tx) error {
		r, err = circuit.Apply(raftstore.NewKV(tx), fsm.Meta{Index: m.index, Time: m.now, Actor: "test", Reason: reason}, c)
		return nil
	})
	return r, err
}

func (m *machine) must(c *raftv1.CircuitCommand) circuit.Result {
	m.t.Helper()
	r, err := m.apply(c, "because")
	if err != nil {
		m.t.Fatalf("%v: %v", c.Op, err)
	}
	return r
}

func (m *machine) get() circuit.Breaker {
	var b circuit.Breaker
	m.db.View(func(tx *bolt.Tx) error { b, _ = circuit.Get(raftstore.NewKV(tx), "svc"); return nil })
	return b
}

func (m *machine) due() []circuit.DueAction {
	var d []circuit.DueAction
	m.db.View(func(tx *bolt.Tx) error { d = circuit.Due(raftstore.NewKV(tx), m.now); return nil })
	return d
}

func op(o raftv1.CircuitCommand_Op) *raftv1.CircuitCommand {
	return &raftv1.CircuitCommand{Op: o, Name: "svc"}
}

func policy() circuit.Policy {
	p := circuit.DefaultPolicy()
	p.RecoveryTimeout = 10 * time.Second
	return p
}

func TestLifecycleAndSingleWinnerTransitions(t *testing.T) {
	m := newMachine(t, policy())
	type step struct {
		name    string
		advance time.Duration
		cmd     func() *raftv1.CircuitCommand
		changed bool
		granted bool
		state   circuit.State
	}
	trip := func() *raftv1.CircuitCommand {
		c := op(raftv1.CircuitCommand_TRIP)
		c.EvidenceJson = []byte(`{"window_calls":20,"window_failures":12,"reporters":2,"trigger":"failure_rate_threshold_exceeded"}`)
		return c
	}
	halfOpen := func() *raftv1.CircuitCommand {
		c := op(raftv1.CircuitCommand_HALF_OPEN)
		c.ProbeWindow = m.get().OpenedRevision
		return c
	}
	probe := func() *raftv1.CircuitCommand { return op(raftv1.CircuitCommand_PROBE) }
	result := func(ok, fail int64, window func() uint64) func() *raftv1.CircuitCommand {
		return func() *raftv1.CircuitCommand {
			c := op(raftv1.CircuitCommand_PROBE_RESULT)
			c.Successes, c.Failures, c.ProbeWindow = ok, fail, window()
			return c
		}
	}
	current := func() uint64 { return m.get().ProbeWindow }
	stale := func() uint64 { return 1 }
	steps := []step{
		{"trip from CLOSED", 0, trip, true, false, circuit.Open},
		{"second trip is a no-op", 0, trip, false, false, circuit.Open},
		{"half-open before the recovery timeout is a no-op", 9 * time.Second, halfOpen, false, false, circuit.Open},
		{"half-open after it", time.Second, halfOpen, true, false, circuit.HalfOpen},
		{"repeated half-open is a no-op", 0, halfOpen, false, false, circuit.HalfOpen},
		{"probe 1", 0, probe, true, true, circuit.HalfOpen},
		{"probe 2", 0, probe, true, true, circuit.HalfOpen},
		{"probe 3", 0, probe, true, true, circuit.HalfOpen},
		{"probe 4 refused: window full", 0, probe, false, false, circuit.HalfOpen},
		{"result for another window ignored", 0, result(5, 0, stale), false, false, circuit.HalfOpen},
		{"one success", 0, result(1, 0, current), true, false, circuit.HalfOpen},
		{"second success closes", 0, result(1, 0, current), true, false, circuit.Closed},
		{"late probe result after close ignored", 0, result(0, 1, stale), false, false, circuit.Closed},
		{"trip again", 0, trip, true, false, circuit.Open},
		{"half-open", 10 * time.Second, halfOpen, true, false, circuit.HalfOpen},
		{"one probe failure reopens", 0, result(3, 1, current), true, false, circuit.Open},
	}
	for _, s := range steps {
		m.now = m.now.Add(s.advance)
		r := m.must(s.cmd())
		if r.Changed != s.changed || r.Granted != s.granted || m.get().State != s.state {
			t.Fatalf("%s: changed=%v granted=%v state=%v; want %v %v %v", s.name, r.Changed, r.Granted, m.get().State, s.changed, s.granted, s.state)
		}
	}
	if ev := m.get().Evidence; ev.Trigger != circuit.TriggerHalfOpenFailure {
		t.Fatalf("evidence after reopening: %+v", ev)
	}
}

func TestStuckHalfOpenWindowIsReclaimed(t *testing.T) {
	m := newMachine(t, policy())
	m.must(op(raftv1.CircuitCommand_TRIP))
	m.now = m.now.Add(10 * time.Second)
	c := op(raftv1.CircuitCommand_HALF_OPEN)
	c.ProbeWindow = m.get().OpenedRevision
	m.must(c)
	for i := 0; i < 3; i++ {
		m.must(op(raftv1.CircuitCommand_PROBE))
	}
	window := m.get().ProbeWindow
	m.now = m.now.Add(59 * time.Second)
	if m.must(op(raftv1.CircuitCommand_PROBE)).Granted {
		t.Fatal("permit granted from a full window before the stuck timeout")
	}
	m.now = m.now.Add(time.Second)
	r := m.must(op(raftv1.CircuitCommand_PROBE))
	if !r.Granted || m.get().ProbeWindow == window || m.get().ProbesGranted != 1 {
		t.Fatalf("stuck window not reset: %+v", m.get())
	}
}

func TestForcedOpenAdmitsNothingAndEveryForceExpires(t *testing.T) {
	m := newMachine(t, policy())
	force := op(raftv1.CircuitCommand_FORCE)
	force.State, force.TtlNanos = int32(circuit.Open), int64(5*time.Minute)
	m.must(force)
	b := m.get()
	if !b.Pinned || b.State != circuit.Open || !b.PinExpiresAt.Equal(t0.Add(5*time.Minute)) {
		t.Fatalf("after force open: %+v", b)
	}
	// Long past the recovery timeout: no timer fires, no permit, no trip.
	m.now = m.now.Add(4 * time.Minute)
	if d := m.due(); len(d) != 0 {
		t.Fatalf("due while pinned: %+v", d)
	}
	hc := op(raftv1.CircuitCommand_HALF_OPEN)
	hc.ProbeWindow = b.OpenedRevision
	for _, c := range []*raftv1.CircuitCommand{hc, op(raftv1.CircuitCommand_PROBE), op(raftv1.CircuitCommand_TRIP)} {
		if r := m.must(c); r.Changed || r.Granted {
			t.Fatalf("%v changed a pinned breaker", c.Op)
		}
	}
	m.now = m.now.Add(time.Minute)
	d := m.due()
	if len(d) != 1 || d[0].Op != raftv1.CircuitCommand_UNPIN {
		t.Fatalf("due at expiry: %+v", d)
	}
	unpin := op(raftv1.CircuitCommand_UNPIN)
	unpin.PinRevision = d[0].Revision + 1
	if m.must(unpin).Changed {
		t.Fatal("unpin naming another pin applied")
	}
	unpin.PinRevision = d[0].Revision
	m.must(unpin)
	if b := m.get(); b.Pinned || b.State != circuit.HalfOpen || b.Evidence.Trigger != circuit.TriggerForceExpired {
		t.Fatalf("lifted OPEN pin should go to trial calls: %+v", b)
	}
	// A forced CLOSE also expires.
	force.State = int32(circuit.Closed)
	m.must(force)
	m.now = m.now.Add(5 * time.Minute)
	unpin.PinRevision = m.get().PinRevision
	m.must(unpin)
	if b := m.get(); b.Pinned || b.State != circuit.Closed {
		t.Fatalf("after force-close expiry: %+v", b)
	}
}

func TestForceAndPolicyValidation(t *testing.T) {
	m := newMachine(t, policy())
	for _, ttl := range []time.Duration{30 * time.Second, 1441 * time.Minute, 90 * time.Second, -time.Minute} {
		f := op(raftv1.CircuitCommand_FORCE)
		f.State, f.TtlNanos = int32(circuit.Open), int64(ttl)
		if _, err := m.apply(f, "r"); err == nil {
			t.Errorf("ttl %v accepted", ttl)
		}
	}
	f := op(raftv1.CircuitCommand_FORCE)
	f.State = int32(circuit.Open)
	if _, err := m.apply(f, " "); err == nil {
		t.Error("force without a reason accepted")
	}
	if r, err := m.apply(f, "default ttl"); err != nil || !m.get().PinExpiresAt.Equal(m.now.Add(90*time.Minute)) {
		t.Errorf("default ttl: %v %+v", err, r)
	}
	bad := []func(p *circuit.Policy){
		func(p *circuit.Policy) { p.FailureRateThreshold = 101 },
		func(p *circuit.Policy) { p.FailureThreshold = 0 },
		func(p *circuit.Policy) { p.SuccessThreshold = p.HalfOpenMaxCalls + 1 },
		func(p *circuit.Policy) { p.RecoveryTimeout = time.Millisecond },
		func(p *circuit.Policy) { p.MinReporters = 0 },
		func(p *circuit.Policy) { p.WindowType = 7 },
	}
	for i, mut := range bad {
		p := circuit.DefaultPolicy()
		mut(&p)
		if p.Validate() == nil {
			t.Errorf("bad policy %d accepted", i)
		}
	}
}

func TestEvaluator(t *testing.T) {
	p := circuit.DefaultPolicy() // 5 consecutive, 50% over >=10 calls
	cases := []struct {
		name    string
		policy  func(p *circuit.Policy)
		reports []circuit.Report
		trigger string
	}{
		{"consecutive failures trip below minimum calls", nil,
			[]circuit.Report{{Instance: "a", Failures: 2}, {Instance: "a", Failures: 3}}, circuit.TriggerFailureThreshold},
		{"a success breaks the streak", nil,
			[]circuit.Report{{Instance: "a", Failures: 4}, {Instance: "a", Successes: 1}, {Instance: "a", Failures: 4}}, ""},
		{"rate needs minimum calls", func(p *circuit.Policy) { p.FailureThreshold = 100 },
			[]circuit.Report{{Instance: "a", Successes: 3, Failures: 4}}, ""},
		{"rate trips at the threshold", func(p *circuit.Policy) { p.FailureThreshold = 100 },
			[]circuit.Report{{Instance: "a", Successes: 5, Failures: 1}, {Instance: "b", Failures: 5}}, circuit.TriggerFailureRate},
		{"min_reporters holds back one bad instance", func(p *circuit.Policy) { p.MinReporters = 2 },
			[]circuit.Report{{Instance: "a", Failures: 50}, {Instance: "b", Successes: 50}}, ""},
		{"min_reporters met by two", func(p *circuit.Policy) { p.MinReporters = 2 },
			[]circuit.Report{{Instance: "a", Failures: 6}, {Instance: "b", Failures: 6}}, circuit.TriggerFailureRate},
		{"old outcomes leave a count window", func(p *circuit.Policy) { p.WindowSize = 10; p.FailureThreshold = 100; p.FailureRateThreshold = 40 },
			// Unbounded this would be 8 failures in 18 calls (44%); the
			// newest 10 calls hold 3 failures (30%).
			[]circuit.Report{{Instance: "a", Failures: 5}, {Instance: "a", Successes: 10}, {Instance: "a", Failures: 3}}, ""},
		{"the newest calls of a count window trip", func(p *circuit.Policy) { p.WindowSize = 10; p.FailureThreshold = 100; p.FailureRateThreshold = 40 },
			[]circuit.Report{{Instance: "a", Successes: 10}, {Instance: "a", Failures: 4}}, circuit.TriggerFailureRate},
		{"held successes of a later batch are older than the failures before it", func(p *circuit.Policy) { p.WindowSize = 10; p.FailureThreshold = 100; p.FailureRateThreshold = 50 },
			// One instance's failures, then another's successes held from
			// before the onset and its own failure: the window's newest 10
			// are the failures and 4 held successes at the oldest end, not
			// 8 held successes and 2 failures.
			[]circuit.Report{{Instance: "a", Failures: 5}, {Instance: "b", Successes: 8, Held: true}, {Instance: "b", Failures: 1}}, circuit.TriggerFailureRate},
		{"held successes fill a window that is not full", func(p *circuit.Policy) { p.WindowSize = 100; p.FailureThreshold = 100; p.FailureRateThreshold = 50 },
			[]circuit.Report{{Instance: "a", Failures: 4}, {Instance: "b", Successes: 8, Held: true}, {Instance: "b", Failures: 1}}, ""},
		{"a window begun before the breaker's last reset is dropped", func(p *circuit.Policy) { p.FailureThreshold = 100; p.MinimumCalls = 10 },
			// 5 of 9 failed before the reset; after it, 1 failure alone
			// is 1 call, not the tenth.
			[]circuit.Report{{Instance: "a", Failures: 5, Successes: 4, Epoch: 3}, {Instance: "a", Failures: 1, Epoch: 8}}, ""},
		{"the window begun by the registering report goes on", func(p *circuit.Policy) { p.FailureThreshold = 100; p.MinimumCalls = 10 },
			[]circuit.Report{{Instance: "a", Failures: 5, Successes: 4}, {Instance: "a", Failures: 1, Epoch: 8}}, circuit.TriggerFailureRate},
		{"the same epoch keeps its window", func(p *circuit.Policy) { p.FailureThreshold = 100; p.MinimumCalls = 10 },
			[]circuit.Report{{Instance: "a", Failures: 5, Successes: 4, Epoch: 3}, {Instance: "a", Failures: 1, Epoch: 3}}, circuit.TriggerFailureRate},
		{"held successes do not end a streak of failures", func(p *circuit.Policy) { p.FailureThreshold = 5 },
			[]circuit.Report{{Instance: "a", Failures: 3}, {Instance: "b", Successes: 4, Held: true}, {Instance: "b", Failures: 2}}, circuit.TriggerFailureThreshold},
		{"slow calls", func(p *circuit.Policy) { p.SlowCallRateThreshold = 80; p.FailureThreshold = 100 },
			[]circuit.Report{{Instance: "a", Successes: 10, SlowCalls: 9}}, circuit.TriggerSlowCallRate},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pp := p
			if tc.policy != nil {
				tc.policy(&pp)
			}
			e := circuit.NewEvaluator()
			var got *circuit.Evidence
			for _, r := range tc.reports {
				if ev := e.Observe("svc", pp, r, t0); ev != nil {
					got = ev
				}
			}
			switch {
			case tc.trigger == "" && got != nil:
				t.Fatalf("tripped: %+v", got)
			case tc.trigger != "" && (got == nil || got.Trigger != tc.trigger):
				t.Fatalf("evidence %+v, want trigger %s", got, tc.trigger)
			}
		})
	}
	t.Run("time window forgets", func(t *testing.T) {
		pp := p
		pp.WindowType, pp.WindowDuration, pp.FailureThreshold = circuit.TimeWindow, 10*time.Second, 100
		e := circuit.NewEvaluator()
		e.Observe("svc", pp, circuit.Report{Instance: "a", Failures: 8, Successes: 1}, t0)
		if ev := e.Observe("svc", pp, circuit.Report{Instance: "a", Failures: 1, Successes: 9}, t0.Add(11*time.Second)); ev != nil {
			t.Fatalf("failures older than the window counted: %+v", ev)
		}
	})
}
