package circuit_test

import (
	"fmt"
	"reflect"
	"testing"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/circuit"
	"github.com/baldurhq/baldurd/raftstore"
	bolt "go.etcd.io/bbolt"
)

func (m *machine) ingest(ev *circuit.Evaluator, defaults circuit.Policy, batch ...circuit.Outcome) circuit.Ingested {
	var in circuit.Ingested
	m.db.View(func(tx *bolt.Tx) error {
		in = circuit.Ingest(raftstore.NewKV(tx), ev, defaults, "i-1", batch, m.now, 1000)
		return nil
	})
	return in
}

func ops(in circuit.Ingested) []raftv1.CircuitCommand_Op {
	var out []raftv1.CircuitCommand_Op
	for _, c := range in.Commands {
		out = append(out, c.GetCircuit().GetOp())
	}
	return out
}

func TestIngestRegistersUnknownBreakersAndTripsOnFleetEvidence(t *testing.T) {
	p := circuit.DefaultPolicy()
	p.FailureThreshold, p.FailureRateThreshold = 3, 0
	m := newMachine(t, p)
	ev := circuit.NewEvaluator()

	// An unknown breaker is registered with the defaults, and the same
	// batch's failures already count against it: two reports of it trip.
	in := m.ingest(ev, p, circuit.Outcome{Name: "new", Failures: 2}, circuit.Outcome{Name: "new", Failures: 1}, circuit.Outcome{Name: "new", Failures: 5})
	if got := ops(in); len(got) != 2 || got[0] != raftv1.CircuitCommand_UPSERT || got[1] != raftv1.CircuitCommand_TRIP {
		t.Fatalf("commands %v, want UPSERT then one TRIP (the third report sees the breaker OPEN)", got)
	}
	if len(in.Registered) != 1 || in.Registered[0] != "new" || in.Trips["new"].Trigger != circuit.TriggerFailureThreshold {
		t.Fatalf("registered %v, trips %+v", in.Registered, in.Trips)
	}

	// A known CLOSED breaker under the threshold: nothing to propose.
	if in := m.ingest(ev, p, circuit.Outcome{Name: "svc", Failures: 2}); len(in.Commands) != 0 {
		t.Fatalf("below threshold proposed %v", ops(in))
	}
	// The next failure crosses it; the window starts over after the trip.
	in = m.ingest(ev, p, circuit.Outcome{Name: "svc", Failures: 1})
	if got := ops(in); len(got) != 1 || got[0] != raftv1.CircuitCommand_TRIP {
		t.Fatalf("commands %v, want TRIP", got)
	}
	if snap := ev.Snapshot("svc"); snap.WindowCalls != 0 {
		t.Fatalf("window after trip holds %d calls", snap.WindowCalls)
	}
}

func TestIngestTurnsProbeOutcomesIntoProbeResultAndIgnoresPinnedBreakers(t *testing.T) {
	p := circuit.DefaultPolicy()
	m := newMachine(t, p)
	ev := circuit.NewEvaluator()
	m.must(op(raftv1.CircuitCommand_TRIP))
	m.now = m.now.Add(p.RecoveryTimeout)
	opened := m.get().OpenedRevision
	m.must(&raftv1.CircuitCommand{Op: raftv1.CircuitCommand_HALF_OPEN, Name: "svc", ProbeWindow: opened})
	if m.get().State != circuit.HalfOpen {
		t.Fatalf("state %v", m.get().State)
	}
	// Plain outcomes of a HALF_OPEN breaker are not evidence; probe
	// outcomes are, once.
	in := m.ingest(ev, p, circuit.Outcome{Name: "svc", Failures: 100}, circuit.Outcome{Name: "svc", ProbeWindow: 7, ProbeSuccesses: 1},
		circuit.Outcome{Name: "svc", ProbeWindow: 7, ProbeFailures: 1})
	if got := ops(in); len(got) != 1 || got[0] != raftv1.CircuitCommand_PROBE_RESULT {
		t.Fatalf("commands %v, want one PROBE_RESULT", got)
	}
	if c := in.Commands[0].GetCircuit(); c.ProbeWindow != 7 || c.Successes != 1 {
		t.Fatalf("probe result %+v", c)
	}

	// A pinned breaker counts nothing.
	m.must(&raftv1.CircuitCommand{Op: raftv1.CircuitCommand_FORCE, Name: "svc", State: int32(circuit.Closed), TtlNanos: int64(p.RecoveryTimeout)})
	if in := m.ingest(ev, p, circuit.Outcome{Name: "svc", Failures: 1000}); len(in.Commands) != 0 || ev.Snapshot("svc").WindowCalls != 0 {
		t.Fatalf("pinned breaker: commands %v, window %+v", ops(in), ev.Snapshot("svc"))
	}
}

func TestProposalsNameWhatTheyActOn(t *testing.T) {
	p := circuit.DefaultPolicy()
	m := newMachine(t, p)
	m.must(op(raftv1.CircuitCommand_TRIP))
	var got []*raftv1.Command
	m.db.View(func(tx *bolt.Tx) error { got = circuit.Proposals(raftstore.NewKV(tx), m.now); return nil })
	if len(got) != 0 {
		t.Fatalf("before the recovery timeout: %v", got)
	}
	m.now = m.now.Add(p.RecoveryTimeout)
	m.db.View(func(tx *bolt.Tx) error { got = circuit.Proposals(raftstore.NewKV(tx), m.now); return nil })
	if len(got) != 1 || got[0].GetCircuit().GetOp() != raftv1.CircuitCommand_HALF_OPEN || got[0].GetCircuit().GetProbeWindow() != m.get().OpenedRevision {
		t.Fatalf("proposals %v", got)
	}
	// Applied twice, it acts once.
	m.must(got[0].GetCircuit())
	before := m.get()
	m.must(got[0].GetCircuit())
	if after := m.get(); after.State != circuit.HalfOpen || after.ProbeWindow != before.ProbeWindow {
		t.Fatalf("second HALF_OPEN changed the breaker: %+v → %+v", before, after)
	}
}

// Outcomes recorded under a revision older than the breaker's last reset,
// close or policy change do not count toward the new window.
func TestIngestIgnoresOutcomesFromBeforeTheLastReset(t *testing.T) {
	p := circuit.DefaultPolicy()
	p.FailureThreshold, p.FailureRateThreshold = 3, 0
	m := newMachine(t, p)
	ev := circuit.NewEvaluator()
	seen := m.get().Revision // what an instance saw before the reset
	m.must(op(raftv1.CircuitCommand_TRIP))
	if _, err := m.apply(op(raftv1.CircuitCommand_RESET), "operator reset"); err != nil {
		t.Fatal(err)
	}
	b := m.get()
	if b.State != circuit.Closed || b.Epoch != b.Revision || b.Epoch <= seen {
		t.Fatalf("after reset: %+v", b)
	}
	if in := m.ingest(ev, p, circuit.Outcome{Name: "svc", Failures: 50, Revision: seen}); len(in.Commands) != 0 || ev.Snapshot("svc").WindowCalls != 0 {
		t.Fatalf("stale outcomes counted: %v, window %+v", ops(in), ev.Snapshot("svc"))
	}
	// Outcomes from after the reset, or of unknown revision, count.
	if in := m.ingest(ev, p, circuit.Outcome{Name: "svc", Failures: 2, Revision: b.Revision}, circuit.Outcome{Name: "svc", Failures: 1}); len(in.Commands) != 1 {
		t.Fatalf("fresh outcomes: %v", ops(in))
	}
}

// Merge sums per breaker, revision and probe window, counts instances
// and names each failing instance once.
func TestMergeSumsPerBreakerAndNamesFailingInstancesOnce(t *testing.T) {
	got := circuit.Merge([]circuit.InstanceOutcomes{
		{Instance: "a", Outcomes: []circuit.Outcome{{Name: "svc", Successes: 5, Failures: 1, Revision: 3}, {Name: "db", Successes: 2}}},
		{Instance: "b", Outcomes: []circuit.Outcome{{Name: "svc", Successes: 1, SlowCalls: 2, Revision: 3}, {Name: "svc", Failures: 4, Revision: 1}}},
		{Instance: "a", Outcomes: []circuit.Outcome{{Name: "svc", Failures: 2, Revision: 3}}},
		{Instance: "c", Outcomes: []circuit.Outcome{{Name: "db", ProbeWindow: 9, ProbeSuccesses: 1}, {Name: "svc", Successes: 7, Revision: 3}}},
		{Instance: "d", Outcomes: []circuit.Outcome{{Name: "db", ProbeWindow: 9, ProbeFailures: 1}}},
	})
	want := []circuit.Outcome{
		{Name: "svc", Revision: 3, Successes: 13, Failures: 3, SlowCalls: 2, Reporter: "a", Instances: 4, Failing: []string{"a", "b"}},
		{Name: "db", Successes: 2, Reporter: "a", Instances: 1},
		{Name: "svc", Revision: 1, Failures: 4, Reporter: "b", Instances: 1, Failing: []string{"b"}},
		{Name: "db", ProbeWindow: 9, ProbeSuccesses: 1, ProbeFailures: 1, Reporter: "c", Instances: 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("merged:\n%+v\nwant\n%+v", got, want)
	}
}

// Merged outcomes trip a breaker on the same fleet evidence as the
// batches one by one: min_reporters counts the distinct failing
// instances behind the merged counts.
func TestIngestOfMergedOutcomesCountsFailingInstances(t *testing.T) {
	p := circuit.DefaultPolicy()
	p.FailureThreshold, p.FailureRateThreshold, p.MinimumCalls, p.MinReporters = 1000, 50, 10, 3
	for _, tc := range []struct {
		failing int
		trips   bool
	}{{2, false}, {3, true}} {
		m := newMachine(t, p)
		ev := circuit.NewEvaluator()
		var batches []circuit.InstanceOutcomes
		for i := range 6 {
			o := circuit.Outcome{Name: "svc", Successes: 1}
			if i < tc.failing {
				o = circuit.Outcome{Name: "svc", Failures: 5}
			}
			batches = append(batches, circuit.InstanceOutcomes{Instance: fmt.Sprintf("i-%d", i), Outcomes: []circuit.Outcome{o}})
		}
		in := m.ingest(ev, p, circuit.Merge(batches)...)
		if tripped := len(in.Trips) == 1; tripped != tc.trips {
			t.Fatalf("%d failing instances: tripped %v, want %v (evidence %+v)", tc.failing, tripped, tc.trips, ev.Snapshot("svc"))
		}
		if tc.trips && in.Trips["svc"].Reporters != 3 {
			t.Fatalf("evidence names %d reporters, want 3", in.Trips["svc"].Reporters)
		}
	}
}

// Held successes (a quiet second an instance held back) are merged apart
// from the same breaker's current outcomes and come first, so a
// count-based window trims them before the failures that ended the quiet:
// a breaker whose window holds 20 calls trips on 20 failures from 10
// instances though each also reports 30 older successes.
func TestHeldSuccessesComeFirstAndDoNotDiluteFailures(t *testing.T) {
	p := circuit.DefaultPolicy()
	p.FailureThreshold, p.FailureRateThreshold, p.MinimumCalls, p.WindowSize, p.MinReporters = 1000, 50, 10, 20, 1
	m := newMachine(t, p)
	ev := circuit.NewEvaluator()
	var batches []circuit.InstanceOutcomes
	for i := range 10 {
		batches = append(batches, circuit.InstanceOutcomes{Instance: fmt.Sprintf("i-%d", i), Outcomes: []circuit.Outcome{
			{Name: "svc", Successes: 30, Held: true}, {Name: "svc", Failures: 2}}})
	}
	merged := circuit.Merge(batches)
	if len(merged) != 2 || !merged[0].Held || merged[0].Successes != 300 || merged[1].Held || merged[1].Failures != 20 {
		t.Fatalf("merged %+v", merged)
	}
	if in := m.ingest(ev, p, merged...); len(in.Trips) != 1 {
		t.Fatalf("no trip: window %+v", ev.Snapshot("svc"))
	}
	// Mixed with the failures (not held), the same successes would hide them.
	m2, ev2 := newMachine(t, p), circuit.NewEvaluator()
	if in := m2.ingest(ev2, p, circuit.Outcome{Name: "svc", Successes: 300, Failures: 20}); len(in.Trips) != 0 {
		t.Fatalf("tripped on 20 failures among 320 calls")
	}
}
