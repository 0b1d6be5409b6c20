package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestJoinTransferAndRemove(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	// A new node asks the running member to add it.
	cfg := server.Defaults()
	cfg.NodeID, cfg.DataDir = "n2", t.TempDir()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.RaftAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Join = c.Nodes[0].GRPCAddr
	cfg.Timing, cfg.WALSegmentSize = testcluster.Timing, 4<<20
	srv, err := server.New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()

	cl := pb.NewClusterServiceClient(dial(t, c.Nodes[0].GRPCAddr))
	var view *pb.Cluster
	if !testcluster.Eventually(15*time.Second, func() bool {
		view, err = cl.GetCluster(ctxT(t), &pb.GetClusterRequest{})
		if err != nil || len(view.Members) != 2 {
			return false
		}
		for _, m := range view.Members {
			if m.Id == "n2" && m.Suffrage == pb.Member_VOTER && m.GrpcAddr == srv.GRPCAddr() {
				return true
			}
		}
		return false
	}) {
		t.Fatalf("n2 did not join: %v %v", view, err)
	}
	// The joined node serves linearizable reads of writes made elsewhere.
	rev := trigger(t, emergencyClient(t, c.Nodes[0]), pb.EmergencyLevel_LEVEL_1, "seen by n2", 0).Revision
	got, err := pb.NewEmergencyServiceClient(dial(t, srv.GRPCAddr())).GetEmergency(ctxT(t), &pb.GetEmergencyRequest{})
	if err != nil || got.Revision < rev || got.State.Reason != "seen by n2" {
		t.Fatalf("read on joined node: %v %v", got, err)
	}

	// Leadership moves to n2 on request (sent to n2, forwarded to the leader).
	tr, err := pb.NewClusterServiceClient(dial(t, srv.GRPCAddr())).TransferLeadership(ctxT(t), &pb.TransferLeadershipRequest{Id: "n2", Reason: "maintenance"})
	if err != nil || tr.LeaderId != "n2" {
		t.Fatalf("transfer: %v %v", tr, err)
	}
	if !testcluster.Eventually(10*time.Second, srv.Store().Ready) {
		t.Fatal("n2 did not become a ready leader")
	}
	// Remove n1 through n1 (forwarded to the new leader).
	if _, err := cl.RemoveMember(ctxT(t), &pb.RemoveMemberRequest{Id: "n1", Reason: "decommissioned"}); err != nil {
		t.Fatalf("remove n1: %v", err)
	}
	n2 := pb.NewClusterServiceClient(dial(t, srv.GRPCAddr()))
	if !testcluster.Eventually(10*time.Second, func() bool {
		v, err := n2.GetCluster(ctxT(t), &pb.GetClusterRequest{})
		return err == nil && len(v.Members) == 1 && v.Members[0].Id == "n2"
	}) {
		t.Fatal("n1 still a member")
	}
	// The member table forgets n1 too (leader reconcile loop).
	if !testcluster.Eventually(10*time.Second, func() bool {
		l, err := pb.NewAuditServiceClient(dial(t, srv.GRPCAddr())).ListAudit(ctxT(t), &pb.ListAuditRequest{Action: "cluster.member_remove"})
		return err == nil && len(l.Records) == 1 && l.Records[0].Target == "member/n1"
	}) {
		t.Fatal("member table row of n1 was not removed")
	}
}

func TestRetriedWriteWithRequestIDAppliesOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	for _, n := range []*testcluster.Node{c.Leader(), c.Followers()[0]} {
		e := emergencyClient(t, n)
		ctx := metadata.AppendToOutgoingContext(ctxT(t), "baldur-request-id", "req-"+n.ID)
		first, err := e.TriggerEmergency(ctx, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_2, Reason: "once"})
		if err != nil {
			t.Fatal(err)
		}
		again, err := e.TriggerEmergency(ctx, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_2, Reason: "once"})
		if err != nil {
			t.Fatal(err)
		}
		if again.Revision != first.Revision {
			t.Fatalf("via %s: retry applied at %d, first at %d", n.ID, again.Revision, first.Revision)
		}
	}
	hist, err := emergencyClient(t, c.Leader()).ListEmergencyHistory(ctxT(t), &pb.ListEmergencyHistoryRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist.Changes) != 2 {
		t.Fatalf("history has %d changes for 2 distinct requests sent twice each", len(hist.Changes))
	}
	// The same id on a different write is refused, not silently dropped.
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "baldur-request-id", "req-"+c.Leader().ID)
	_, err = emergencyClient(t, c.Leader()).ReleaseEmergency(ctx, &pb.ReleaseEmergencyRequest{Reason: "other write", Force: true})
	if status.Code(err) != codes.AlreadyExists || reasonOf(err) != "REQUEST_ID_REUSED" {
		t.Fatalf("reused request id: %v", err)
	}
	if st, _ := emergencyClient(t, c.Leader()).GetEmergency(ctxT(t), &pb.GetEmergencyRequest{}); !st.State.Active {
		t.Fatal("the refused release took effect")
	}
}

func TestPartitionedLeaderLosesAndRejoins(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	old := c.LeaderIndex()
	var others []int
	for i := range c.Nodes {
		if i != old {
			others = append(others, i)
		}
	}
	c.Partition([]int{old}, others)
	// The majority elects a new leader and keeps accepting writes.
	var nl *testcluster.Node
	if !testcluster.Eventually(10*time.Second, func() bool {
		for _, i := range others {
			if c.Nodes[i].Store().Ready() {
				nl = c.Nodes[i]
				return true
			}
		}
		return false
	}) {
		t.Fatal("majority side elected no leader")
	}
	rev := trigger(t, emergencyClient(t, nl), pb.EmergencyLevel_LEVEL_3, "majority write", 0).Revision
	// The isolated old leader cannot serve a linearizable read.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := emergencyClient(t, c.Nodes[old]).GetEmergency(ctx, &pb.GetEmergencyRequest{}); err == nil {
		t.Fatal("isolated node answered a linearizable read")
	}
	c.Heal()
	c.WaitForApplied(rev, 15*time.Second)
	hashes := contentHashes(t, c)
	if hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("replicas differ after heal")
	}
}

func TestGradualRecoveryIsDrivenByTheLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	e := emergencyClient(t, c.Followers()[0])
	_, err := e.UpdateEmergencyConfig(ctxT(t), &pb.UpdateEmergencyConfigRequest{Reason: "fast steps for the test", Config: &pb.EmergencyConfig{
		Levels: []*pb.LevelRule{
			{Level: pb.EmergencyLevel_LEVEL_1, Admission: &pb.Admission{Critical: 1, Standard: 1}},
			{Level: pb.EmergencyLevel_LEVEL_2, Admission: &pb.Admission{Critical: 1, Standard: 0.1}},
			{Level: pb.EmergencyLevel_LEVEL_3, Admission: &pb.Admission{Critical: 0.5}},
		},
		StabilizationPeriod: durationOf(0), LevelStepDelay: durationOf(time.Second), AutoDuration: durationOf(time.Hour),
	}})
	if err != nil {
		t.Fatal(err)
	}
	trigger(t, e, pb.EmergencyLevel_LEVEL_3, "severe", 0)
	rel, err := e.ReleaseEmergency(ctxT(t), &pb.ReleaseEmergencyRequest{Reason: "recovering", Gradual: true})
	if err != nil || !rel.State.Recovering {
		t.Fatalf("gradual release: %v %v", rel, err)
	}
	if !testcluster.Eventually(15*time.Second, func() bool {
		g, err := e.GetEmergency(ctxT(t), &pb.GetEmergencyRequest{})
		return err == nil && !g.State.Active
	}) {
		t.Fatal("gradual recovery did not reach NORMAL")
	}
	hist, _ := e.ListEmergencyHistory(ctxT(t), &pb.ListEmergencyHistoryRequest{})
	var steps []string
	for _, ch := range hist.Changes {
		if ch.Action == "recovery_step" {
			steps = append(steps, ch.FromLevel.String()+">"+ch.ToLevel.String())
		}
	}
	if strings.Join(steps, ",") != "LEVEL_1>NORMAL,LEVEL_2>LEVEL_1,LEVEL_3>LEVEL_2" {
		t.Fatalf("recovery steps %v", steps)
	}
}

func TestTokenAuthentication(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	tokens := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(tokens, []byte("# operators\nalice s3cret-token-for-alice-0001\nnode n-token-for-the-nodes-00002\n"), 0o600)
	key := filepath.Join(t.TempDir(), "audit.key")
	os.WriteFile(key, []byte("a-shared-audit-hmac-key-0123456789\n"), 0o600)
	c := testcluster.New(t, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) {
		cfg.TokenFile = tokens
		cfg.Token = "n-token-for-the-nodes-00002"
		cfg.AuditKeyFile = key
	}))
	e := emergencyClient(t, c.Followers()[0])
	if _, err := e.GetEmergency(ctxT(t), &pb.GetEmergencyRequest{}); reasonOf(err) != "UNAUTHENTICATED" {
		t.Fatalf("no token: %v", err)
	}
	bad := metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer wrong-token-0000000000")
	if _, err := e.GetEmergency(bad, &pb.GetEmergencyRequest{}); reasonOf(err) != "UNAUTHENTICATED" {
		t.Fatalf("bad token: %v", err)
	}
	good := metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer s3cret-token-for-alice-0001")
	resp, err := e.TriggerEmergency(good, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Reason: "authenticated"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.State.ActivatedBy != "alice" {
		t.Fatalf("actor = %q, want alice (forwarded through a follower)", resp.State.ActivatedBy)
	}
	v, err := pb.NewAuditServiceClient(dial(t, c.Nodes[0].GRPCAddr)).VerifyAudit(good, &pb.VerifyAuditRequest{})
	if err != nil || !v.Ok || !v.Keyed || v.Records < 2 {
		t.Fatalf("keyed audit chain: %v %v", v, err)
	}
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	if code, body := r.do("GET", "/v1/emergency", ""); code != 401 || body["reason"] != "UNAUTHENTICATED" {
		t.Fatalf("REST without token: %d %v", code, body)
	}
	if code, _ := r.do("GET", "/readyz", ""); code != 200 {
		t.Fatalf("/readyz needs no token, got %d", code)
	}
}

// TestNewMembersAreStagedUntilCaughtUp: a node added as a voter joins as a
// non-voter STAGING for promotion; an unreachable one never counts toward
// the quorum (writes go on) and is never promoted; a real one is promoted
// once it kept up for --promote-stabilization, and the promotion is audited.
func TestNewMembersAreStagedUntilCaughtUp(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.PromoteStabilization = 2 * time.Second }))
	cl := pb.NewClusterServiceClient(dial(t, c.Nodes[0].GRPCAddr))
	suffrage := func(v *pb.Cluster, id string) pb.Member_Suffrage {
		for _, m := range v.GetMembers() {
			if m.Id == id {
				return m.Suffrage
			}
		}
		return pb.Member_SUFFRAGE_UNSPECIFIED
	}

	// An unreachable node: accepted as STAGING, and the single voter keeps
	// its quorum of one.
	view, err := cl.AddMember(ctxT(t), &pb.AddMemberRequest{Id: "n9", RaftAddr: "127.0.0.1:9", Reason: "planned node, not started yet"})
	if err != nil || suffrage(view, "n9") != pb.Member_STAGING {
		t.Fatalf("add unreachable: %v %v", view, err)
	}
	em := emergencyClient(t, c.Nodes[0])
	for i := 0; i < 200; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := em.TriggerEmergency(ctx, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Reason: fmt.Sprintf("write %d", i), Scope: fmt.Sprintf("svc-%d", i)})
		cancel()
		if err != nil {
			t.Fatalf("write %d with an unreachable member staged: %v", i, err)
		}
	}
	// An explicit non-voter is not staged; asking again as a voter stages it.
	if view, err = cl.AddMember(ctxT(t), &pb.AddMemberRequest{Id: "n8", RaftAddr: "127.0.0.1:10", Nonvoter: true, Reason: "read replica"}); err != nil || suffrage(view, "n8") != pb.Member_NONVOTER {
		t.Fatalf("add non-voter: %v %v", view, err)
	}
	if view, err = cl.AddMember(ctxT(t), &pb.AddMemberRequest{Id: "n8", RaftAddr: "127.0.0.1:10", Reason: "make it a voter"}); err != nil || suffrage(view, "n8") != pb.Member_STAGING {
		t.Fatalf("stage non-voter: %v %v", view, err)
	}

	// A real node joins, is seen STAGING, then VOTER.
	cfg := server.Defaults()
	cfg.NodeID, cfg.DataDir = "n2", t.TempDir()
	cfg.GRPCAddr, cfg.HTTPAddr, cfg.RaftAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Join = c.Nodes[0].GRPCAddr
	cfg.Timing, cfg.WALSegmentSize, cfg.LogLevel = testcluster.Timing, 4<<20, "error"
	srv, err := server.New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	seen := map[pb.Member_Suffrage]bool{}
	if !testcluster.Eventually(30*time.Second, func() bool {
		v, err := cl.GetCluster(ctxT(t), &pb.GetClusterRequest{})
		if err != nil {
			return false
		}
		seen[suffrage(v, "n2")] = true
		return suffrage(v, "n2") == pb.Member_VOTER
	}) || !seen[pb.Member_STAGING] {
		t.Fatalf("n2 was not staged and then promoted: saw %v", seen)
	}
	v, _ := cl.GetCluster(ctxT(t), &pb.GetClusterRequest{})
	if suffrage(v, "n9") != pb.Member_STAGING || suffrage(v, "n8") != pb.Member_STAGING {
		t.Fatalf("an unreachable node was promoted: %v", v)
	}
	audit := pb.NewAuditServiceClient(dial(t, c.Nodes[0].GRPCAddr))
	if !testcluster.Eventually(5*time.Second, func() bool {
		l, err := audit.ListAudit(ctxT(t), &pb.ListAuditRequest{Action: "cluster.member_promoted"})
		return err == nil && len(l.Records) == 1 && l.Records[0].Target == "member/n2"
	}) {
		t.Fatal("the promotion of n2 is not in the audit trail")
	}
	// The promoted voter holds every write.
	got, err := pb.NewEmergencyServiceClient(dial(t, srv.GRPCAddr())).GetEmergency(ctxT(t), &pb.GetEmergencyRequest{Scope: "svc-199"})
	if err != nil || got.State.Reason != "write 199" {
		t.Fatalf("read on the promoted node: %v %v", got, err)
	}
	for _, id := range []string{"n9", "n8"} {
		if _, err := cl.RemoveMember(ctxT(t), &pb.RemoveMemberRequest{Id: id, Reason: "never started"}); err != nil {
			t.Fatalf("remove %s: %v", id, err)
		}
	}
}
