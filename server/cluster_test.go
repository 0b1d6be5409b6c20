package server_test

import (
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
)

func TestClusterForwardingFailoverCatchUp(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)

	// A write through a follower is forwarded to the leader.
	follower := c.Followers()[0]
	resp := trigger(t, emergencyClient(t, follower), pb.EmergencyLevel_LEVEL_1, "forwarded", 0)
	if !resp.Changed || resp.State.Level != pb.EmergencyLevel_LEVEL_1 {
		t.Fatalf("trigger through follower: got %v", resp)
	}
	if got := resp.State.ActivatedBy; got != "anonymous" {
		t.Errorf("actor recorded on forwarded write = %q, want anonymous", got)
	}
	c.WaitForApplied(resp.Revision, 5*time.Second)

	// Kill the leader; writes continue on a new leader.
	old := c.LeaderIndex()
	c.Kill(old)
	start := time.Now()
	nl := c.WaitForLeader(10 * time.Second)
	t.Logf("new leader %s after %v", nl.ID, time.Since(start))
	var survivor *testcluster.Node
	for i, n := range c.Nodes {
		if i != old && n.Running() {
			survivor = n
		}
	}
	resp = trigger(t, emergencyClient(t, survivor), pb.EmergencyLevel_LEVEL_3, "after failover", 0)
	if resp.State.Level != pb.EmergencyLevel_LEVEL_3 {
		t.Fatalf("write after failover: got %v", resp.State)
	}

	// The killed node restarts and catches up.
	c.Restart(old)
	last := trigger(t, emergencyClient(t, nl), pb.EmergencyLevel_LEVEL_2, "after restart", 0).Revision
	c.WaitForApplied(last, 10*time.Second)
	got, err := emergencyClient(t, c.Nodes[old]).GetEmergency(ctxT(t), &pb.GetEmergencyRequest{Consistency: "stale"})
	if err != nil {
		t.Fatal(err)
	}
	if got.State.Level != pb.EmergencyLevel_LEVEL_2 || got.State.Reason != "after restart" {
		t.Fatalf("restarted node state = %v, want LEVEL_2 'after restart'", got.State)
	}
	hashes := contentHashes(t, c)
	if len(hashes) != 3 || hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("state.db contents differ across replicas: %v", hashes)
	}
}

func TestLinearizableReadOnFollowerSeesLatestWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	leader := emergencyClient(t, c.Leader())
	followers := c.Followers()
	for i := 0; i < 5; i++ {
		resp := trigger(t, leader, pb.EmergencyLevel_Value(1+i%3), "step", 0)
		for _, f := range followers {
			got, err := emergencyClient(t, f).GetEmergency(ctxT(t), &pb.GetEmergencyRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Revision < resp.Revision || got.State.Level != resp.State.Level {
				t.Fatalf("follower %s read revision %d level %v after write at %d level %v", f.ID, got.Revision, got.State.Level, resp.Revision, resp.State.Level)
			}
		}
	}
}

func TestEmergencyExpiresOnceAcrossLeaderChange(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	resp := trigger(t, emergencyClient(t, c.Leader()), pb.EmergencyLevel_LEVEL_2, "short outage", 2*time.Second)
	c.WaitForApplied(resp.Revision, 5*time.Second)
	old := c.LeaderIndex()
	c.Kill(old)
	nl := c.WaitForLeader(10 * time.Second)
	client := emergencyClient(t, nl)
	if !testcluster.Eventually(15*time.Second, func() bool {
		got, err := client.GetEmergency(ctxT(t), &pb.GetEmergencyRequest{})
		return err == nil && !got.State.Active
	}) {
		t.Fatal("emergency did not expire")
	}
	got, _ := client.GetEmergency(ctxT(t), &pb.GetEmergencyRequest{})
	expiresAt := resp.State.ExpiresAt.AsTime()
	if ended := got.State.DeactivatedAt.AsTime(); ended.Before(expiresAt) {
		t.Fatalf("ended at %v, before its expiry %v", ended, expiresAt)
	}
	// Give any stale proposal time to land, then count.
	c.Restart(old)
	final := trigger(t, client, pb.EmergencyLevel_LEVEL_1, "marker", 0).Revision
	c.WaitForApplied(final, 10*time.Second)
	hist, err := client.ListEmergencyHistory(ctxT(t), &pb.ListEmergencyHistoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	expires := 0
	for _, ch := range hist.Changes {
		if ch.Action == "expire" {
			expires++
			if ch.Actor != "system:leader" {
				t.Errorf("expiry actor = %q, want system:leader", ch.Actor)
			}
		}
	}
	if expires != 1 {
		t.Fatalf("history has %d expiries, want exactly 1: %v", expires, hist.Changes)
	}
	audits, err := pb.NewAuditServiceClient(dial(t, nl.GRPCAddr)).ListAudit(ctxT(t), &pb.ListAuditRequest{Action: "emergency.expire"})
	if err != nil {
		t.Fatal(err)
	}
	if len(audits.Records) != 1 {
		t.Fatalf("audit has %d expiry records, want 1", len(audits.Records))
	}
	hashes := contentHashes(t, c)
	if hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("replicas differ: %v", hashes)
	}
}
