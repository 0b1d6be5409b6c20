package governance_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/governance"
	"github.com/baldurhq/baldurd/internal/fsm"
	"github.com/baldurhq/baldurd/raftstore"
	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

type state struct {
	t     *testing.T
	db    *bolt.DB
	index uint64
}

func newState(t *testing.T) *state {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range governance.Buckets() {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return &state{t: t, db: db}
}

func (s *state) apply(at time.Duration, reason string, c *raftv1.GovernanceCommand) (governance.Result, error) {
	if c.GetOp() >= raftv1.GovernanceCommand_APPROVAL_CREATE {
		s.index++
		var err error
		_ = s.db.Update(func(tx *bolt.Tx) error {
			_, err = governance.ApplyApproval(raftstore.NewKV(tx), fsm.Meta{Index: s.index, Time: t0.Add(at), Actor: "alice", Reason: reason}, c)
			return nil
		})
		return governance.Result{}, err
	}
	s.index++
	var r governance.Result
	var err error
	if uerr := s.db.Update(func(tx *bolt.Tx) error {
		r, err = governance.Apply(raftstore.NewKV(tx), fsm.Meta{Index: s.index, Time: t0.Add(at), Actor: "alice", Reason: reason}, c)
		return nil
	}); uerr != nil {
		s.t.Fatal(uerr)
	}
	return r, err
}

func (s *state) proposals(at time.Duration) []*raftv1.Command {
	var out []*raftv1.Command
	_ = s.db.View(func(tx *bolt.Tx) error { out = governance.Proposals(raftstore.NewKV(tx), t0.Add(at)); return nil })
	return out
}

func op(o raftv1.GovernanceCommand_Op) *raftv1.GovernanceCommand {
	return &raftv1.GovernanceCommand{Op: o}
}

// The gate's fixed order: break glass allows (flagged) before anything
// else; the kill switch blocks before the emergency level; below the
// minimum level everything passes.
func TestGateOrder(t *testing.T) {
	now := t0
	glass := governance.System{BreakGlass: &governance.BreakGlass{By: "root", Since: now.Add(-time.Minute), Until: now.Add(time.Hour)}}
	expired := governance.System{BreakGlass: &governance.BreakGlass{By: "root", Since: now.Add(-2 * time.Hour), Until: now.Add(-time.Hour)}}
	for _, tc := range []struct {
		name    string
		in      governance.GateInput
		allowed bool
		reason  string
		message string
	}{
		{"clear", governance.GateInput{Now: now}, true, "", ""},
		{"LEVEL_1 passes", governance.GateInput{Level: 1, Now: now}, true, "", ""},
		{"kill switch", governance.GateInput{KillSwitch: true, Level: 3, Now: now}, false, governance.BlockedKillSwitch, "kill switch"},
		{"LEVEL_2", governance.GateInput{Level: 2, ExpiresAt: now.Add(3*time.Hour + 24*time.Minute), Now: now}, false, governance.BlockedEmergency,
			"Emergency mode LEVEL_2 is active. Auto-restore in ~3.4h."},
		{"LEVEL_3 without expiry", governance.GateInput{Level: 3, Now: now}, false, governance.BlockedEmergency, "Emergency mode LEVEL_3 is active."},
		{"minimum LEVEL_3", governance.GateInput{Level: 2, MinLevel: 3, Now: now}, true, "", ""},
		{"break glass first", governance.GateInput{System: glass, KillSwitch: true, Level: 3, Now: now}, true, governance.AllowedBreakGlass, "flagged for review"},
		{"break glass ended", governance.GateInput{System: expired, KillSwitch: true, Now: now}, false, governance.BlockedKillSwitch, ""},
	} {
		d := governance.Gate(tc.in)
		if d.Allowed != tc.allowed || d.Reason != tc.reason || !strings.Contains(d.Message, tc.message) {
			t.Errorf("%s: %+v", tc.name, d)
		}
	}
}

func TestSystemControl(t *testing.T) {
	s := newState(t)
	if r, err := s.apply(0, "", op(raftv1.GovernanceCommand_DRY_RUN)); err != nil || !r.System.DryRun || r.Applied().Action != "governance.dry_run" {
		t.Fatalf("dry run: %+v %v", r, err)
	}
	var ae *fsm.ArgumentError
	if _, err := s.apply(0, "", op(raftv1.GovernanceCommand_LIVE)); !errors.As(err, &ae) || ae.FieldName != "confirm" {
		t.Fatalf("live without confirm: %v", err)
	}
	if r, err := s.apply(0, "", &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_LIVE, Confirm: true}); err != nil || r.System.DryRun {
		t.Fatalf("live: %+v %v", r, err)
	}
	if _, err := s.apply(0, "", op(raftv1.GovernanceCommand_STRICT)); !errors.As(err, &ae) || ae.FieldName != "reason" {
		t.Fatalf("strict without a reason: %v", err)
	}
	for _, ttl := range []time.Duration{0, 5 * time.Hour} {
		if _, err := s.apply(0, "incident 42 hotfix", &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_BREAK_GLASS, TtlNanos: int64(ttl)}); !errors.As(err, &ae) || ae.FieldName != "ttl" {
			t.Fatalf("break glass for %v: %v", ttl, err)
		}
	}
	if _, err := s.apply(0, "short", &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_BREAK_GLASS, TtlNanos: int64(time.Hour)}); !errors.As(err, &ae) || ae.FieldName != "reason" {
		t.Fatalf("break glass with a short reason: %v", err)
	}
	r, err := s.apply(0, "incident 42 hotfix", &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_BREAK_GLASS, TtlNanos: int64(time.Hour)})
	if err != nil || !r.System.BreakGlassActive(t0.Add(59*time.Minute)) || r.System.BreakGlassActive(t0.Add(time.Hour)) {
		t.Fatalf("break glass: %+v %v", r, err)
	}
	// The leader's expiry applies only at the TTL and only to that break
	// glass.
	if cmds := s.proposals(30 * time.Minute); len(cmds) != 0 {
		t.Fatalf("proposals inside the TTL: %v", cmds)
	}
	end := s.proposals(time.Hour)
	if len(end) != 1 || end[0].GetGovernance().GetOp() != raftv1.GovernanceCommand_END_BREAK_GLASS {
		t.Fatalf("at the TTL: %v", end)
	}
	if r, _ := s.apply(30*time.Minute, "", end[0].GetGovernance()); r.Changed {
		t.Fatal("an expiry proposed early applied")
	}
	if r, _ := s.apply(time.Hour, "", end[0].GetGovernance()); !r.Changed || r.System.BreakGlass != nil {
		t.Fatalf("expiry: %+v", r)
	}
}

// STRICT is warned about at 4h and 6h (once each) and ends at 8h; steps
// proposed for an earlier STRICT period apply to nothing.
func TestStrictModeLifecycle(t *testing.T) {
	s := newState(t)
	if r, err := s.apply(0, "audit week", op(raftv1.GovernanceCommand_STRICT)); err != nil || r.System.Mode() != "STRICT" {
		t.Fatalf("strict: %+v %v", r, err)
	}
	kinds := func(cmds []*raftv1.Command) string {
		var out []string
		for _, c := range cmds {
			out = append(out, c.GetGovernance().GetOp().String())
		}
		return strings.Join(out, ",")
	}
	if got := kinds(s.proposals(3 * time.Hour)); got != "" {
		t.Fatalf("at 3h: %s", got)
	}
	warn := s.proposals(4 * time.Hour)
	if kinds(warn) != "STRICT_WARN" || warn[0].GetGovernance().GetWarning() != 1 {
		t.Fatalf("at 4h: %v", warn)
	}
	s.apply(4*time.Hour, "", warn[0].GetGovernance())
	if r, _ := s.apply(4*time.Hour, "", warn[0].GetGovernance()); r.Changed {
		t.Fatal("a warning given twice")
	}
	if got := kinds(s.proposals(5 * time.Hour)); got != "" {
		t.Fatalf("at 5h: %s", got)
	}
	warn = s.proposals(6 * time.Hour)
	if kinds(warn) != "STRICT_WARN" || warn[0].GetGovernance().GetWarning() != 2 {
		t.Fatalf("at 6h: %v", warn)
	}
	s.apply(6*time.Hour, "", warn[0].GetGovernance())
	expire := s.proposals(8 * time.Hour)
	if kinds(expire) != "STRICT_EXPIRE" {
		t.Fatalf("at 8h: %v", expire)
	}
	// An operator ends STRICT and starts it again: the old period's
	// expiry applies to nothing.
	s.apply(7*time.Hour, "", op(raftv1.GovernanceCommand_NORMAL))
	s.apply(7*time.Hour, "again", op(raftv1.GovernanceCommand_STRICT))
	if r, _ := s.apply(8*time.Hour, "", expire[0].GetGovernance()); r.Changed || r.System.Mode() != "STRICT" {
		t.Fatalf("the old period's expiry: %+v", r)
	}
	next := s.proposals(15 * time.Hour)
	if r, _ := s.apply(15*time.Hour, "", next[0].GetGovernance()); !r.Changed || r.System.Mode() != "NORMAL" || r.Applied().Action != "governance.strict_expired" {
		t.Fatalf("expiry of the new period: %+v", r)
	}
}

// A decided change request is kept a week, then removed by the leader.
func TestDecidedApprovalsAreRemovedAfterAWeek(t *testing.T) {
	s := newState(t)
	if _, err := s.apply(0, "purge", &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_APPROVAL_CREATE,
		ApprovalJson: []byte(`{"id":"apr-1","operation":"dlq.purge","method":"/baldur.v1.DLQService/Purge"}`)}); err != nil {
		t.Fatal(err)
	}
	// The requester is alice (state.apply's actor); another identity decides.
	s.index++
	if err := s.db.Update(func(tx *bolt.Tx) error {
		_, err := governance.ApplyApproval(raftstore.NewKV(tx), fsm.Meta{Index: s.index, Time: t0.Add(time.Minute), Actor: "bob"},
			&raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_APPROVAL_DECIDE, ApprovalId: "apr-1"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	count := func(at time.Duration) (n int, cmds []*raftv1.Command) {
		_ = s.db.View(func(tx *bolt.Tx) error {
			n = len(governance.ListApprovals(raftstore.NewKV(tx)))
			cmds = governance.ApprovalProposals(raftstore.NewKV(tx), t0.Add(at))
			return nil
		})
		return n, cmds
	}
	if n, cmds := count(6 * 24 * time.Hour); n != 1 || len(cmds) != 0 {
		t.Fatalf("after 6 days: %d kept, %d proposals", n, len(cmds))
	}
	_, cmds := count(7*24*time.Hour + time.Minute)
	if len(cmds) != 1 {
		t.Fatalf("after a week: %d proposals", len(cmds))
	}
	s.apply(7*24*time.Hour+time.Minute, "", cmds[0].GetGovernance())
	if n, _ := count(8 * 24 * time.Hour); n != 0 {
		t.Fatalf("%d decided requests kept after a week", n)
	}
}
