package baldur

import (
	"testing"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
)

func TestAdmitFollowsTheLevelTable(t *testing.T) {
	e := newEmergency(0)
	e.apply(&pb.WatchEmergencyResponse{Snapshot: true, Revision: 7,
		States: []*pb.EmergencyState{{Scope: "global", Level: pb.EmergencyLevel_LEVEL_2, Active: true}, {Scope: "eu", Level: pb.EmergencyLevel_LEVEL_3, Active: false}},
		Config: &pb.EmergencyConfig{Levels: []*pb.LevelRule{
			{Level: pb.EmergencyLevel_LEVEL_1, Admission: &pb.Admission{Critical: 1, Standard: 1, NonEssential: 0}},
			{Level: pb.EmergencyLevel_LEVEL_2, Admission: &pb.Admission{Critical: 1, Standard: 0.1, NonEssential: 0}},
			{Level: pb.EmergencyLevel_LEVEL_3, Admission: &pb.Admission{Critical: 0.5, Standard: 0, NonEssential: 0}},
		}}})
	if got := e.Level(); got != Level2 {
		t.Fatalf("Level() = %v, want LEVEL_2", got)
	}
	if got := e.LevelOf("eu"); got != LevelNormal {
		t.Fatalf("inactive scope level = %v, want NORMAL", got)
	}
	if e.Revision() != 7 {
		t.Fatalf("Revision() = %d, want 7", e.Revision())
	}
	const n = 20000
	counts := map[Tier]int{}
	for i := 0; i < n; i++ {
		for _, tier := range []Tier{TierCritical, TierStandard, TierNonEssential} {
			if e.Admit(tier) {
				counts[tier]++
			}
		}
	}
	if counts[TierCritical] != n || counts[TierNonEssential] != 0 {
		t.Fatalf("critical admitted %d/%d, non-essential %d/%d; want all and none", counts[TierCritical], n, counts[TierNonEssential], n)
	}
	if frac := float64(counts[TierStandard]) / n; frac < 0.08 || frac > 0.12 {
		t.Fatalf("standard admitted fraction %.3f, want about 0.10", frac)
	}
	// A delta changes only the scopes it names.
	e.apply(&pb.WatchEmergencyResponse{Revision: 9, States: []*pb.EmergencyState{{Scope: "eu", Level: pb.EmergencyLevel_LEVEL_1, Active: true}}})
	if e.Level() != Level2 || e.LevelOf("eu") != Level1 || e.Revision() != 9 {
		t.Fatalf("after delta: global %v eu %v rev %d", e.Level(), e.LevelOf("eu"), e.Revision())
	}
	// A new snapshot replaces everything.
	e.apply(&pb.WatchEmergencyResponse{Snapshot: true, Revision: 12})
	if e.Level() != LevelNormal || e.LevelOf("eu") != LevelNormal {
		t.Fatalf("after empty snapshot: global %v eu %v", e.Level(), e.LevelOf("eu"))
	}
}

func TestBeforeFirstSnapshotLevelIsNormalAndStale(t *testing.T) {
	e := newEmergency(0)
	if e.Level() != LevelNormal || !e.Stale() || !e.Admit(TierNonEssential) {
		t.Fatalf("fresh view: level %v stale %v", e.Level(), e.Stale())
	}
}
