package canary_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/canary"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	bolt "go.etcd.io/bbolt"
)

type state struct {
	t     *testing.T
	db    *bolt.DB
	index uint64
	now   time.Time
}

func newState(t *testing.T) *state {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range canary.Buckets() {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return &state{t: t, db: db, now: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}
}

func (s *state) view(fn func(kv fsm.KV)) {
	if err := s.db.View(func(tx *bolt.Tx) error { fn(raftstore.NewKV(tx)); return nil }); err != nil {
		s.t.Fatal(err)
	}
}

// apply runs one command in its own transaction, as the FSM does.
func (s *state) apply(c *raftv1.CanaryCommand, gate canary.Gate) (canary.Result, error) {
	s.index++
	var r canary.Result
	var err error
	if uerr := s.db.Update(func(tx *bolt.Tx) error {
		r, err = canary.Apply(raftstore.NewKV(tx), fsm.Meta{Index: s.index, Time: s.now, Actor: "alice", Reason: "test"}, c, gate)
		return nil
	}); uerr != nil {
		s.t.Fatal(uerr)
	}
	return r, err
}

func rollout(id, section string, pcts ...float64) canary.Rollout {
	r := canary.Rollout{ID: id, Section: section, NewValues: json.RawMessage(`{"x":1}`), PreviousValues: json.RawMessage(`{"x":0}`),
		Tier: "standard", Selection: canary.Selection{Strategy: "user_id_hash"}}
	for i, p := range pcts {
		r.Stages = append(r.Stages, canary.Stage{Name: fmt.Sprintf("s%d", i), Percentage: p, Duration: time.Minute, AutoPromote: true, Criteria: canary.DefaultCriteria()})
	}
	return r
}

func (s *state) create(r canary.Rollout) (canary.Result, error) {
	b, _ := json.Marshal(r)
	return s.apply(&raftv1.CanaryCommand{Op: raftv1.CanaryCommand_CREATE, Id: r.ID, RolloutJson: b}, canary.Gate{})
}

func op(o raftv1.CanaryCommand_Op, id string) *raftv1.CanaryCommand {
	return &raftv1.CanaryCommand{Op: o, Id: id}
}

// Every action from every state: what is allowed moves the rollout, the
// rest is refused with INVALID_TRANSITION and changes nothing.
func TestLifecycleTable(t *testing.T) {
	type step struct {
		op   raftv1.CanaryCommand_Op
		want canary.State // -1: refused
	}
	ops := []raftv1.CanaryCommand_Op{raftv1.CanaryCommand_START, raftv1.CanaryCommand_PROMOTE, raftv1.CanaryCommand_PAUSE,
		raftv1.CanaryCommand_RESUME, raftv1.CanaryCommand_ROLLBACK, raftv1.CanaryCommand_CANCEL}
	// reach brings a fresh rollout (two stages) to a state.
	reach := map[canary.State][]raftv1.CanaryCommand_Op{
		canary.Created:    nil,
		canary.Canary:     {raftv1.CanaryCommand_START},
		canary.Paused:     {raftv1.CanaryCommand_START, raftv1.CanaryCommand_PAUSE},
		canary.Completed:  {raftv1.CanaryCommand_START, raftv1.CanaryCommand_PROMOTE, raftv1.CanaryCommand_PROMOTE},
		canary.RolledBack: {raftv1.CanaryCommand_START, raftv1.CanaryCommand_ROLLBACK},
		canary.Cancelled:  {raftv1.CanaryCommand_CANCEL},
	}
	allowed := map[canary.State]map[raftv1.CanaryCommand_Op]canary.State{
		canary.Created: {raftv1.CanaryCommand_START: canary.Canary, raftv1.CanaryCommand_CANCEL: canary.Cancelled},
		canary.Canary: {raftv1.CanaryCommand_PROMOTE: canary.Canary, raftv1.CanaryCommand_PAUSE: canary.Paused,
			raftv1.CanaryCommand_ROLLBACK: canary.RolledBack},
		canary.Paused: {raftv1.CanaryCommand_PROMOTE: canary.Completed, raftv1.CanaryCommand_RESUME: canary.Canary,
			raftv1.CanaryCommand_ROLLBACK: canary.RolledBack},
	}
	for from, path := range reach {
		for _, o := range ops {
			t.Run(fmt.Sprintf("%s/%s", from, o), func(t *testing.T) {
				s := newState(t)
				if _, err := s.create(rollout("r1", "flags", 10, 50)); err != nil {
					t.Fatal(err)
				}
				for _, p := range path {
					if _, err := s.apply(op(p, "r1"), canary.Gate{}); err != nil {
						t.Fatalf("reaching %s: %v", from, err)
					}
				}
				var before canary.Rollout
				s.view(func(kv fsm.KV) { before, _ = canary.Get(kv, "r1") })
				if before.State != from {
					t.Fatalf("reached %s, want %s", before.State, from)
				}
				r, err := s.apply(op(o, "r1"), canary.Gate{})
				want, ok := allowed[from][o]
				var te *canary.TransitionError
				switch {
				case ok && err != nil:
					t.Fatalf("%s from %s refused: %v", o, from, err)
				case ok && r.Rollout.State != want:
					t.Fatalf("%s from %s reached %s, want %s", o, from, r.Rollout.State, want)
				case !ok && !errors.As(err, &te):
					t.Fatalf("%s from %s: %v, want a TransitionError", o, from, err)
				}
				var after canary.Rollout
				var holder string
				s.view(func(kv fsm.KV) { after, _ = canary.Get(kv, "r1"); holder = canary.Holder(kv, "flags") })
				if !ok && after.Version != before.Version {
					t.Fatalf("a refused %s changed the rollout", o)
				}
				if after.State.Terminal() == (holder == "r1") {
					t.Fatalf("state %s with holder %q: a rollout holds its section exactly while active", after.State, holder)
				}
			})
		}
	}
}

func TestOneActiveRolloutPerSectionAndStageConflicts(t *testing.T) {
	s := newState(t)
	if _, err := s.create(rollout("r1", "flags", 10, 50, 100)); err != nil {
		t.Fatal(err)
	}
	var conflict *canary.ConflictError
	if _, err := s.create(rollout("r2", "flags", 10)); !errors.As(err, &conflict) || conflict.Holder != "r1" {
		t.Fatalf("second rollout of a held section: %v", err)
	}
	if _, err := s.create(rollout("r3", "retry_defaults", 10)); err != nil {
		t.Fatalf("another section: %v", err)
	}
	if _, err := s.apply(op(raftv1.CanaryCommand_START, "r1"), canary.Gate{}); err != nil {
		t.Fatal(err)
	}
	// Two operators promote stage 0: one wins, the other is told the
	// stage moved on.
	promote := &raftv1.CanaryCommand{Op: raftv1.CanaryCommand_PROMOTE, Id: "r1", CheckStage: true, ExpectedStageIndex: 0}
	if r, err := s.apply(promote, canary.Gate{}); err != nil || r.Rollout.Stage != 1 {
		t.Fatalf("first promotion: %+v %v", r.Rollout, err)
	}
	var stage *canary.StageConflictError
	if _, err := s.apply(promote, canary.Gate{}); !errors.As(err, &stage) || stage.Current != 1 {
		t.Fatalf("second promotion of stage 0: %v", err)
	}
	// An automatic promotion of a stage left is a no-op, not an error.
	auto := &raftv1.CanaryCommand{Op: raftv1.CanaryCommand_PROMOTE, Id: "r1", CheckStage: true, ExpectedStageIndex: 0, Automatic: true}
	if r, err := s.apply(auto, canary.Gate{}); err != nil || r.Changed {
		t.Fatalf("stale automatic promotion: %+v %v", r, err)
	}
	s.apply(op(raftv1.CanaryCommand_PROMOTE, "r1"), canary.Gate{})
	r, err := s.apply(op(raftv1.CanaryCommand_PROMOTE, "r1"), canary.Gate{})
	if err != nil || r.Rollout.State != canary.Completed || !r.Complete {
		t.Fatalf("last promotion: %+v %v", r.Rollout, err)
	}
	if _, err := s.create(rollout("r2", "flags", 10)); err != nil {
		t.Fatalf("a new rollout once the first completed: %v", err)
	}
	var hist []canary.Transition
	s.view(func(kv fsm.KV) { hist = canary.History(kv, "r1", 0, 100) })
	var actions []string
	for _, h := range hist {
		actions = append(actions, h.Action)
	}
	if got := strings.Join(actions, ","); got != "complete,promote,promote,start,create" {
		t.Fatalf("history %s", got)
	}
}

// Start, promote and resume are refused under the kill switch or LEVEL_2+
// unless a bypass reason of 10+ characters is given (the rollout is then
// flagged); rollback and pause are never gated.
func TestGates(t *testing.T) {
	s := newState(t)
	s.create(rollout("r1", "flags", 10, 50))
	var blocked *canary.BlockedError
	for _, g := range []canary.Gate{{Blocked: "The system is disabled (kill switch)."}, {Level: 2, Blocked: "Emergency mode LEVEL_2 is active."}, {Level: 3, Blocked: "Emergency mode LEVEL_3 is active."}} {
		if _, err := s.apply(op(raftv1.CanaryCommand_START, "r1"), g); !errors.As(err, &blocked) {
			t.Fatalf("start under %+v: %v", g, err)
		}
	}
	short := &raftv1.CanaryCommand{Op: raftv1.CanaryCommand_START, Id: "r1", BypassReason: "urgent"}
	var ae *fsm.ArgumentError
	if _, err := s.apply(short, canary.Gate{Level: 2, Blocked: "Emergency mode LEVEL_2 is active."}); !errors.As(err, &ae) || ae.FieldName != "bypass_reason" {
		t.Fatalf("short bypass: %v", err)
	}
	if r, err := s.apply(op(raftv1.CanaryCommand_START, "r1"), canary.Gate{Level: 1}); err != nil || r.Rollout.Flagged {
		t.Fatalf("start at LEVEL_1: %+v %v", r.Rollout, err)
	}
	if _, err := s.apply(op(raftv1.CanaryCommand_PROMOTE, "r1"), canary.Gate{Blocked: "The system is disabled (kill switch)."}); !errors.As(err, &blocked) {
		t.Fatalf("promote under the kill switch: %v", err)
	}
	bypass := &raftv1.CanaryCommand{Op: raftv1.CanaryCommand_PROMOTE, Id: "r1", BypassReason: "vendor fix must ship now"}
	if r, err := s.apply(bypass, canary.Gate{Blocked: "The system is disabled (kill switch)."}); err != nil || !r.Rollout.Flagged || !strings.Contains(r.Reason, "gate bypassed") {
		t.Fatalf("bypassed promotion: %+v %v", r, err)
	}
	if _, err := s.apply(op(raftv1.CanaryCommand_PAUSE, "r1"), canary.Gate{Level: 3, Blocked: "Emergency mode LEVEL_3 is active."}); err != nil {
		t.Fatalf("pause under LEVEL_3: %v", err)
	}
	if _, err := s.apply(op(raftv1.CanaryCommand_RESUME, "r1"), canary.Gate{Level: 2, Blocked: "Emergency mode LEVEL_2 is active."}); !errors.As(err, &blocked) {
		t.Fatalf("resume under LEVEL_2: %v", err)
	}
	if r, err := s.apply(op(raftv1.CanaryCommand_ROLLBACK, "r1"), canary.Gate{Level: 3, Blocked: "The system is disabled (kill switch)."}); err != nil || r.Rollout.State != canary.RolledBack {
		t.Fatalf("rollback under every gate: %v", err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for field, mut := range map[string]func(*canary.Rollout){
		"stages":                               func(r *canary.Rollout) { r.Stages = nil },
		"stages[1].percentage":                 func(r *canary.Rollout) { r.Stages[1].Percentage = 5 },
		"stages[0].percentage":                 func(r *canary.Rollout) { r.Stages[0].Percentage = 0 },
		"stages[1].duration":                   func(r *canary.Rollout) { r.Stages[1].Duration = 0 },
		"stages[1].name":                       func(r *canary.Rollout) { r.Stages[1].Name = "s0" },
		"stages[0].pass_criteria.min_requests": func(r *canary.Rollout) { r.Stages[0].Criteria.MinRequests = 0 },
		"tier":                                 func(r *canary.Rollout) { r.Tier = "gold" },
		"selection.strategy":                   func(r *canary.Rollout) { r.Selection.Strategy = "coin" },
	} {
		r := rollout("r1", "flags", 10, 50)
		mut(&r)
		var ae *fsm.ArgumentError
		if err := canary.Validate(r); !errors.As(err, &ae) || ae.FieldName != field {
			t.Errorf("%s: %v", field, err)
		}
	}
	r := rollout("r1", "flags", 10, 50)
	r.Stages[1].Percentage = 150
	var ae *fsm.ArgumentError
	if err := canary.Validate(r); !errors.As(err, &ae) || ae.FieldName != "stages[1].percentage" {
		t.Errorf("percentage above 100: %v", err)
	}
}

// 10,000 instances at 10 %: 10 ± 1 % in the canary cohort; the same ones
// in at a higher percentage (sticky), whoever computes it.
func TestCohortShareAndStickiness(t *testing.T) {
	in10, in50 := 0, 0
	for i := range 10000 {
		id := fmt.Sprintf("instance-%d", i)
		a, b := canary.InCohort("r-1", id, 10), canary.InCohort("r-1", id, 50)
		if a && !b {
			t.Fatalf("%s in at 10%% but out at 50%%", id)
		}
		if a {
			in10++
		}
		if b {
			in50++
		}
	}
	if math.Abs(float64(in10)/100-10) > 1 || math.Abs(float64(in50)/100-50) > 1 {
		t.Fatalf("%d and %d of 10000 in at 10%% and 50%%", in10, in50)
	}
}

func TestJudgeVerdicts(t *testing.T) {
	start := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	r := rollout("r1", "flags", 10, 50)
	r.State, r.StageStartedAt = canary.Canary, start
	key := canary.CohortKey([]string{"r1"}, nil)
	base := canary.CohortKey(nil, []string{"r1"})
	lat := func(ms int) []int64 {
		h := make([]int64, canary.LatencyBuckets)
		for i, b := range canary.LatencyBounds {
			if float64(ms) <= b {
				h[i] = 1
				return h
			}
		}
		h[len(h)-1] = 1
		return h
	}
	scale := func(h []int64, n int64) []int64 {
		out := make([]int64, len(h))
		for i := range h {
			out[i] = h[i] * n
		}
		return out
	}

	tr := canary.NewTracker()
	if ev := tr.Judge(r, start.Add(2*time.Minute)); ev.Verdict != canary.Insufficient {
		t.Fatalf("no traffic: %+v", ev)
	}
	// Before the stage began does not count.
	tr.Observe(key, "pay", 1000, 0, nil, start.Add(-time.Minute))
	if ev := tr.Judge(r, start.Add(2*time.Minute)); ev.Verdict != canary.Insufficient {
		t.Fatalf("outcomes from before the stage: %+v", ev)
	}
	tr.Observe(key, "pay", 99, 1, scale(lat(20), 100), start.Add(10*time.Second))
	tr.Observe(base, "pay", 990, 10, scale(lat(20), 1000), start.Add(10*time.Second))
	if ev := tr.Judge(r, start.Add(30*time.Second)); ev.Verdict != canary.Pending {
		t.Fatalf("healthy, stage not over: %+v", ev)
	}
	if ev := tr.Judge(r, start.Add(61*time.Second)); ev.Verdict != canary.Pass || ev.Canary.Requests != 100 || ev.Baseline.Requests != 1000 {
		t.Fatalf("healthy, stage over: %+v", ev)
	}
	// 20 % failing in the canary against 1 % in the baseline.
	tr.Observe(key, "pay", 80, 20, nil, start.Add(15*time.Second))
	if ev := tr.Judge(r, start.Add(20*time.Second)); ev.Verdict != canary.Fail || !strings.Contains(ev.Reason, "exceeds 5.00%") {
		t.Fatalf("failing canary: %+v", ev)
	}
	// Latency: the canary's p95 far above the baseline's.
	tr2 := canary.NewTracker()
	tr2.Observe(key, "pay", 200, 0, scale(lat(400), 200), start.Add(5*time.Second))
	tr2.Observe(base, "pay", 2000, 0, scale(lat(20), 2000), start.Add(5*time.Second))
	if ev := tr2.Judge(r, start.Add(10*time.Second)); ev.Verdict != canary.Fail || !strings.Contains(ev.Reason, "p95") {
		t.Fatalf("slow canary: %+v", ev)
	}
	// The tier's floor wins over a looser stage.
	r.Tier = "critical"
	r.Stages[0].Criteria.ErrorRateAbsoluteMax = 0.2
	tr3 := canary.NewTracker()
	tr3.Observe(key, "pay", 940, 60, nil, start.Add(5*time.Second))
	if ev := tr3.Judge(r, start.Add(10*time.Second)); ev.Verdict != canary.Fail || !strings.Contains(ev.Reason, "exceeds 3.00%") {
		t.Fatalf("critical tier at 6%%: %+v", ev)
	}
	// A few early failures at a healthy rate are not beyond doubt: the
	// stage waits for more calls instead of rolling back.
	r.Tier = "standard"
	tr4 := canary.NewTracker()
	tr4.Observe(key, "pay", 116, 5, nil, start.Add(5*time.Second))
	tr4.Observe(base, "pay", 99, 1, nil, start.Add(5*time.Second))
	if ev := tr4.Judge(r, start.Add(90*time.Second)); ev.Verdict != canary.Pending || !strings.Contains(ev.Reason, "not yet beyond doubt") {
		t.Fatalf("5 of 121 failing against 1 of 100: %+v", ev)
	}
}

// The interlock, judgments and the watchdog as commands.
func TestProposals(t *testing.T) {
	s := newState(t)
	s.create(rollout("r1", "flags", 10, 50))
	s.apply(op(raftv1.CanaryCommand_START, "r1"), canary.Gate{})
	judge := func(v string) func(canary.Rollout, time.Time) canary.Evidence {
		return func(canary.Rollout, time.Time) canary.Evidence { return canary.Evidence{Verdict: v, Reason: v} }
	}
	propose := func(gate canary.Gate, verdict string, now time.Time) []*raftv1.Command {
		var out []*raftv1.Command
		s.view(func(kv fsm.KV) { out = canary.Proposals(kv, judge(verdict), gate, now) })
		return out
	}
	only := func(cmds []*raftv1.Command, o raftv1.CanaryCommand_Op) bool {
		return len(cmds) == 1 && cmds[0].GetCanary().GetOp() == o
	}
	now := s.now.Add(10 * time.Second)
	if cmds := propose(canary.Gate{}, canary.Pending, now); len(cmds) != 0 {
		t.Fatalf("pending: %v", cmds)
	}
	if cmds := propose(canary.Gate{}, canary.Pass, now); !only(cmds, raftv1.CanaryCommand_PROMOTE) || !cmds[0].GetCanary().GetCheckStage() {
		t.Fatalf("pass: %v", cmds)
	}
	if cmds := propose(canary.Gate{}, canary.Fail, now); !only(cmds, raftv1.CanaryCommand_ROLLBACK) {
		t.Fatalf("fail: %v", cmds)
	}
	if cmds := propose(canary.Gate{Level: 2}, canary.Pass, now); !only(cmds, raftv1.CanaryCommand_PAUSE) || !cmds[0].GetCanary().GetInterlock() {
		t.Fatalf("LEVEL_2: %v", cmds)
	}
	if cmds := propose(canary.Gate{Level: 3}, canary.Pass, now); !only(cmds, raftv1.CanaryCommand_ROLLBACK) {
		t.Fatalf("LEVEL_3: %v", cmds)
	}
	if cmds := propose(canary.Gate{}, canary.Insufficient, s.now.Add(3*time.Minute)); !only(cmds, raftv1.CanaryCommand_FLAG_STUCK) {
		t.Fatalf("stage over twice its duration: %v", cmds)
	}
	// An interlock pause is not resumed by itself, and a judgment from
	// before a pause is stale.
	pause := propose(canary.Gate{Level: 2}, canary.Pass, now)[0].GetCanary()
	s.apply(pause, canary.Gate{Level: 2})
	if cmds := propose(canary.Gate{}, canary.Pass, now); len(cmds) != 0 {
		t.Fatalf("paused by the interlock at NORMAL again: %v", cmds)
	}
	s.now = s.now.Add(time.Minute)
	s.apply(op(raftv1.CanaryCommand_RESUME, "r1"), canary.Gate{})
	stale := &raftv1.CanaryCommand{Op: raftv1.CanaryCommand_PROMOTE, Id: "r1", Automatic: true, CheckStage: true, StageStartedUnixNano: pause.GetStageStartedUnixNano()}
	if r, err := s.apply(stale, canary.Gate{}); err != nil || r.Changed {
		t.Fatalf("a judgment of the stage before the pause: %+v %v", r, err)
	}
	// Retention.
	s.apply(op(raftv1.CanaryCommand_ROLLBACK, "r1"), canary.Gate{})
	if cmds := propose(canary.Gate{}, canary.Pass, s.now.Add(canary.Retention+time.Second)); !only(cmds, raftv1.CanaryCommand_PURGE) {
		t.Fatalf("retention: %v", cmds)
	}
}
