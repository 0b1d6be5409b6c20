package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/pgtest"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
	"github.com/jackc/pgx/v5"
)

// TestAuditRetentionExportAndMembers: every member verifies its own copy
// of the trail and the answer compares them; records past retention are
// exported to PostgreSQL and only then removed behind a signed anchor
// from which the chain still verifies on every member; a member whose
// copy was tampered with is named.
func TestAuditRetentionExportAndMembers(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	dsn := pgtest.Schema(t, "baldur_audit")
	c := testcluster.New(t, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.PostgresDSN = dsn }))
	leader := c.WaitForLeader(10 * time.Second)
	e := emergencyClient(t, leader)
	for i := 0; i < 5; i++ {
		trigger(t, e, pb.EmergencyLevel_LEVEL_1, "before", 0)
	}
	follower := c.Followers()[0]
	a := pb.NewAuditServiceClient(dial(t, follower.GRPCAddr))
	v, err := a.VerifyAudit(ctxT(t), &pb.VerifyAuditRequest{})
	if err != nil || !v.Ok || len(v.Members) != 3 {
		t.Fatalf("verify across members: %v %v", v, err)
	}
	for _, m := range v.Members {
		if !m.Ok || m.HeadSeq != v.HeadSeq || m.HeadHash != v.HeadHash {
			t.Fatalf("member %s disagrees: %v (answer %d %s)", m.NodeId, m, v.HeadSeq, v.HeadHash)
		}
	}
	before := v.HeadSeq

	// 91 days on: the old records are due (default retention 90 days).
	c.Clock.Advance(91 * 24 * time.Hour)
	trigger(t, e, pb.EmergencyLevel_LEVEL_2, "after", 0)
	if !testcluster.Eventually(20*time.Second, func() bool {
		v, err = a.VerifyAudit(ctxT(t), &pb.VerifyAuditRequest{})
		return err == nil && v.AnchorSeq >= before
	}) {
		t.Fatalf("retention did not remove the old records: %v %v", v, err)
	}
	if !v.Ok || len(v.Members) != 3 {
		t.Fatalf("verify after retention: %v", v)
	}
	for _, m := range v.Members {
		if !m.Ok {
			t.Fatalf("member %s after retention: %s", m.NodeId, m.Problem)
		}
	}
	list, err := a.ListAudit(ctxT(t), &pb.ListAuditRequest{PageSize: 1000})
	if err != nil || len(list.Records) == 0 || list.Records[0].Seq != v.AnchorSeq+1 {
		t.Fatalf("first record kept after anchor %d: %v %v", v.AnchorSeq, list, err)
	}
	found := false
	for _, r := range list.Records {
		found = found || r.Action == "audit.retention"
	}
	if !found {
		t.Fatal("the removal is not itself audited")
	}
	// PostgreSQL holds every removed record.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n, maxSeq int64
	if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(max(seq), 0) FROM baldur_audit WHERE seq <= $1`, int64(v.AnchorSeq)).Scan(&n, &maxSeq); err != nil {
		t.Fatal(err)
	}
	if n != int64(v.AnchorSeq) || maxSeq != int64(v.AnchorSeq) {
		t.Fatalf("PostgreSQL holds %d records up to %d, want all %d removed ones", n, maxSeq, v.AnchorSeq)
	}

	// A member whose copy was changed on disk is named by a verify asked
	// anywhere.
	idx := 0
	for i, n := range c.Nodes {
		if n.ID == follower.ID {
			idx = i
		}
	}
	c.Kill(idx)
	c.TamperAuditRecord(idx, v.AnchorSeq+1, "reason", "forged")
	c.Restart(idx)
	l := c.WaitForLeader(10 * time.Second)
	if !testcluster.Eventually(15*time.Second, func() bool {
		v, err = pb.NewAuditServiceClient(dial(t, l.GRPCAddr)).VerifyAudit(ctxT(t), &pb.VerifyAuditRequest{})
		return err == nil && !v.Ok && strings.Contains(v.Problem, "member "+follower.ID)
	}) {
		t.Fatalf("tampered copy on %s not reported: %v %v", follower.ID, v, err)
	}
	local, err := pb.NewAuditServiceClient(dial(t, l.GRPCAddr)).VerifyAudit(ctxT(t), &pb.VerifyAuditRequest{Local: l.ID != follower.ID})
	if err != nil || (l.ID != follower.ID && !local.Ok) {
		t.Fatalf("the leader's own copy: %v %v", local, err)
	}
}
