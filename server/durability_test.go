package server_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
)

func auditState(t *testing.T, n *testcluster.Node) (*pb.ListAuditResponse, *pb.VerifyAuditResponse) {
	t.Helper()
	a := pb.NewAuditServiceClient(dial(t, n.GRPCAddr))
	list, err := a.ListAudit(ctxT(t), &pb.ListAuditRequest{PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	v, err := a.VerifyAudit(ctxT(t), &pb.VerifyAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return list, v
}

func TestRestartReplayChangesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	e := emergencyClient(t, c.Nodes[0])
	for i := 0; i < 10; i++ {
		trigger(t, e, pb.EmergencyLevel_Value(1+i%3), "replay check", 0)
	}
	if _, err := e.ReleaseEmergency(ctxT(t), &pb.ReleaseEmergencyRequest{Reason: "done", Force: true}); err != nil {
		t.Fatal(err)
	}
	hist1, _ := e.ListEmergencyHistory(ctxT(t), &pb.ListEmergencyHistoryRequest{Limit: 100})
	audit1, verify1 := auditState(t, c.Nodes[0])
	hash1 := contentHashes(t, c)[0]

	// No snapshot has been taken, so raft re-applies the whole log at start.
	c.Kill(0)
	c.Restart(0)
	c.WaitForLeader(10 * time.Second)
	e = emergencyClient(t, c.Nodes[0])
	hist2, _ := e.ListEmergencyHistory(ctxT(t), &pb.ListEmergencyHistoryRequest{Limit: 100})
	audit2, verify2 := auditState(t, c.Nodes[0])
	if len(hist1.Changes) != len(hist2.Changes) {
		t.Errorf("history length %d before restart, %d after", len(hist1.Changes), len(hist2.Changes))
	}
	if len(audit1.Records) != len(audit2.Records) || verify1.HeadHash != verify2.HeadHash || !verify2.Ok {
		t.Errorf("audit chain changed by replay: %d records head %s before, %d head %s (ok=%v) after",
			len(audit1.Records), verify1.HeadHash, len(audit2.Records), verify2.HeadHash, verify2.Ok)
	}
	if hash2 := contentHashes(t, c)[0]; hash1 != hash2 {
		t.Errorf("state.db contents changed by replay")
	}
}

func saveSnapshot(t *testing.T, n *testcluster.Node) []byte {
	t.Helper()
	stream, err := pb.NewClusterServiceClient(dial(t, n.GRPCAddr)).SaveSnapshot(ctxT(t), &pb.SaveSnapshotRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("save snapshot: %v", err)
		}
		buf.Write(chunk.Data)
	}
	return buf.Bytes()
}

func restoreSnapshot(t *testing.T, n *testcluster.Node, data []byte) (*pb.RestoreSnapshotResponse, error) {
	t.Helper()
	stream, err := pb.NewClusterServiceClient(dial(t, n.GRPCAddr)).RestoreSnapshot(ctxT(t))
	if err != nil {
		return nil, err
	}
	for len(data) > 0 {
		k := min(len(data), 32<<10)
		if err := stream.Send(&pb.RestoreSnapshotRequest{Data: data[:k]}); err != nil {
			break
		}
		data = data[k:]
	}
	return stream.CloseAndRecv()
}

func TestSnapshotSaveRestoreIntoFreshCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	src := testcluster.New(t, 1)
	e := emergencyClient(t, src.Nodes[0])
	trigger(t, e, pb.EmergencyLevel_LEVEL_2, "before backup", 0)
	if _, err := e.TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Reason: "eu", Scope: "eu-west"}); err != nil {
		t.Fatal(err)
	}
	snap := saveSnapshot(t, src.Nodes[0])
	srcState, _ := e.GetEmergency(ctxT(t), &pb.GetEmergencyRequest{})
	srcHist, _ := e.ListEmergencyHistory(ctxT(t), &pb.ListEmergencyHistoryRequest{Limit: 100})
	srcAudit, _ := auditState(t, src.Nodes[0])

	dst := testcluster.New(t, 3)
	trigger(t, emergencyClient(t, dst.Leader()), pb.EmergencyLevel_LEVEL_3, "state to be replaced", 0)

	// A corrupted snapshot is refused and changes nothing. (The data, not
	// the applied index: under load an election's no-op may land between.)
	dataHash := func() string {
		h, err := dst.Nodes[0].Store().DataHash()
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	before := dataHash()
	bad := bytes.Clone(snap)
	bad[len(bad)-100] ^= 0xff
	if _, err := restoreSnapshot(t, dst.Followers()[0], bad); err == nil || reasonOf(err) != "INVALID_SNAPSHOT" {
		t.Fatalf("corrupt snapshot: err = %v (reason %q), want INVALID_SNAPSHOT", err, reasonOf(err))
	}
	if _, err := restoreSnapshot(t, dst.Leader(), snap[:len(snap)/2]); err == nil || reasonOf(err) != "INVALID_SNAPSHOT" {
		t.Fatalf("truncated snapshot: err = %v, want INVALID_SNAPSHOT", err)
	}
	if after := dataHash(); after != before {
		t.Fatal("a refused restore changed the state")
	}

	// A good one, sent through a follower, replaces the state everywhere.
	resp, err := restoreSnapshot(t, dst.Followers()[0], snap)
	if err != nil {
		t.Fatalf("restore: %v", err)
	}
	if resp.AppliedIndex == 0 || resp.Sha256 == "" {
		t.Fatalf("restore response = %v", resp)
	}
	for _, n := range dst.Nodes {
		n := n
		if !testcluster.Eventually(10*time.Second, func() bool {
			got, err := emergencyClient(t, n).GetEmergency(ctxT(t), &pb.GetEmergencyRequest{Consistency: "stale"})
			return err == nil && got.State.Reason == "before backup"
		}) {
			t.Fatalf("%s did not receive the restored state", n.ID)
		}
		ec := emergencyClient(t, n)
		got, _ := ec.GetEmergency(ctxT(t), &pb.GetEmergencyRequest{})
		if len(got.Scopes) != len(srcState.Scopes) {
			t.Fatalf("%s: %d scopes after restore, want %d", n.ID, len(got.Scopes), len(srcState.Scopes))
		}
		for i := range got.Scopes {
			if got.Scopes[i].Level != srcState.Scopes[i].Level || got.Scopes[i].Revision != srcState.Scopes[i].Revision {
				t.Fatalf("%s scope %s: got %v, want %v", n.ID, got.Scopes[i].Scope, got.Scopes[i], srcState.Scopes[i])
			}
		}
		hist, _ := ec.ListEmergencyHistory(ctxT(t), &pb.ListEmergencyHistoryRequest{Limit: 100})
		if len(hist.Changes) != len(srcHist.Changes) {
			t.Fatalf("%s: history %d entries, want %d", n.ID, len(hist.Changes), len(srcHist.Changes))
		}
		aud, ver := auditState(t, n)
		if !ver.Ok {
			t.Fatalf("%s: audit chain does not verify after restore: %s", n.ID, ver.Problem)
		}
		for i, r := range srcAudit.Records {
			if aud.Records[i].Hash != r.Hash {
				t.Fatalf("%s: audit record %d differs from the source", n.ID, r.Seq)
			}
		}
	}
	// The restored cluster keeps working.
	trigger(t, emergencyClient(t, dst.Leader()), pb.EmergencyLevel_LEVEL_1, "after restore", 0)
}

func TestAuditVerifyDetectsTamperedRecord(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	e := emergencyClient(t, c.Nodes[0])
	for i := 0; i < 4; i++ {
		trigger(t, e, pb.EmergencyLevel_LEVEL_1, "honest", 0)
	}
	_, v := auditState(t, c.Nodes[0])
	if !v.Ok {
		t.Fatalf("fresh chain does not verify: %s", v.Problem)
	}
	c.Kill(0)
	c.TamperAuditRecord(0, 3, "reason", "forged")
	c.Restart(0)
	c.WaitForLeader(10 * time.Second)
	_, v = auditState(t, c.Nodes[0])
	if v.Ok || v.FirstBrokenSeq != 3 {
		t.Fatalf("verify after tampering: ok=%v first_broken=%d (%s), want broken at 3", v.Ok, v.FirstBrokenSeq, v.Problem)
	}
}
