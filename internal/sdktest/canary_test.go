package sdktest_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/canary"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// canaryFleet is SDK clients calling a fake dependency through Protect: a call
// fails with failNew when the client sees the "new-path" flag on (the
// rollout's values), with failOld otherwise.
type canaryFleet struct {
	t       *testing.T
	c       *testcluster.Cluster
	clients []*baldur.Client
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startFleet(t *testing.T, c *testcluster.Cluster, n int, every time.Duration, failNew, failOld float64) *canaryFleet {
	t.Helper()
	f := &canaryFleet{t: t, c: c, stop: make(chan struct{})}
	for i := range n {
		f.clients = append(f.clients, dialSDK(t, endpoints(c), baldur.WithInstanceID(fmt.Sprintf("fleet-%d", i))))
	}
	for _, cl := range f.clients {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-f.stop:
					return
				case <-tick.C:
				}
				p := failOld
				if cl.Config().Flag("new-path").On() {
					p = failNew
				}
				_, _ = baldur.Protect(context.Background(), cl, "checkout", func(context.Context) (int, error) {
					if rand.Float64() < p {
						return 0, errors.New("dependency failed")
					}
					return 1, nil
				})
			}
		}()
	}
	t.Cleanup(f.halt)
	return f
}

func (f *canaryFleet) halt() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	f.wg.Wait()
}

// canaryCluster is three nodes whose breakers never trip on the test's
// failure rates (the rollout's judgment is what is under test).
func canaryCluster(t *testing.T) (*testcluster.Cluster, pb.CanaryServiceClient) {
	c := testcluster.New(t, 3)
	leader := c.WaitForLeader(10 * time.Second)
	cfg := pb.NewConfigServiceClient(dialConn(t, leader.GRPCAddr))
	setSection(t, cfg, "circuit_defaults", map[string]any{"failure_threshold": 1000, "failure_rate_threshold": 95}, 0)
	return c, pb.NewCanaryServiceClient(dialConn(t, c.Followers()[0].GRPCAddr))
}

func stage(name string, pct float64, d time.Duration, minRequests int64) *pb.CanaryStage {
	auto := true
	return &pb.CanaryStage{Name: name, Percentage: pct, Duration: durationpb.New(d), AutoPromote: &auto,
		PassCriteria: &pb.PassCriteria{MinRequests: &minRequests, EvaluationWindow: durationpb.New(10 * time.Second)}}
}

func create(t *testing.T, cl pb.CanaryServiceClient, stages ...*pb.CanaryStage) string {
	t.Helper()
	v, _ := structpb.NewStruct(map[string]any{"new-path": map[string]any{"enabled": true}})
	resp, err := cl.CreateRollout(ctxT(t), &pb.CreateRolloutRequest{Section: "flags", NewValues: v, Reason: "new checkout path", Stages: stages})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.StartRollout(ctxT(t), &pb.RolloutActionRequest{Id: resp.Rollout.Id, Reason: "go"}); err != nil {
		t.Fatal(err)
	}
	return resp.Rollout.Id
}

func rolloutOf(t *testing.T, cl pb.CanaryServiceClient, id string) *pb.Rollout {
	resp, err := cl.GetRollout(ctxT(t), &pb.GetRolloutRequest{Id: id})
	if err != nil {
		t.Fatalf("get rollout: %v", err)
	}
	return resp.Rollout
}

func waitState(t *testing.T, cl pb.CanaryServiceClient, id string, want pb.RolloutState_Value, within time.Duration) *pb.Rollout {
	t.Helper()
	var r *pb.Rollout
	if !testcluster.Eventually(within, func() bool { r = rolloutOf(t, cl, id); return r.State == want }) {
		t.Fatalf("rollout %s is %s at stage %d (evidence %v), want %s", id, r.State, r.CurrentStageIndex, r.LastEvidence, want)
	}
	return r
}

func actions(t *testing.T, cl pb.CanaryServiceClient, id string) string {
	resp, err := cl.ListRolloutHistory(ctxT(t), &pb.ListRolloutHistoryRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for i := len(resp.Transitions) - 1; i >= 0; i-- {
		tr := resp.Transitions[i]
		a := tr.Action
		if tr.Automatic {
			a += "(auto)"
		}
		out = append(out, a)
	}
	return strings.Join(out, ",")
}

// (a) A healthy rollout passes its three stages and completes by itself:
// the section takes the new values and every client has them.
func TestCanaryHealthyRolloutCompletes(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c, cl := canaryCluster(t)
	f := startFleet(t, c, 30, 20*time.Millisecond, 0.01, 0.01)
	id := create(t, cl, stage("20pct", 20, 2*time.Second, 50), stage("50pct", 50, 2*time.Second, 50), stage("all", 100, 2*time.Second, 50))
	r := waitState(t, cl, id, pb.RolloutState_COMPLETED, 30*time.Second)
	if r.LastEvidence.GetVerdict() != "pass" || r.LastEvidence.Canary.Requests < 50 {
		t.Fatalf("completed on evidence %v", r.LastEvidence)
	}
	if got := actions(t, cl, id); got != "create,start,promote(auto),promote(auto),complete(auto)" {
		t.Fatalf("history %s", got)
	}
	for i, client := range f.clients {
		if !testcluster.Eventually(5*time.Second, func() bool { return client.Config().Flag("new-path").On() && !client.Canary("flags").Active() }) {
			t.Fatalf("client %d does not have the completed values", i)
		}
	}
}

// (b) The canary cohort fails at 20 % against 1 % for the baseline: the
// cluster rolls back by itself, with the evidence, and every client is
// back on the old values.
func TestCanaryFailingCohortRollsBack(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c, cl := canaryCluster(t)
	f := startFleet(t, c, 30, 20*time.Millisecond, 0.20, 0.01)
	id := create(t, cl, stage("half", 50, 30*time.Second, 50), stage("all", 100, 30*time.Second, 50))
	inCanary := 0
	for _, client := range f.clients {
		if baldur.InCohort(id, client.InstanceID(), 50) {
			inCanary++
		}
	}
	if inCanary == 0 || inCanary == len(f.clients) {
		t.Fatalf("%d of %d clients in the 50%% cohort", inCanary, len(f.clients)) // 2 × 0.5^30
	}
	r := waitState(t, cl, id, pb.RolloutState_ROLLED_BACK, 20*time.Second)
	ev := r.LastEvidence
	if ev.GetVerdict() != "fail" || ev.Canary.ErrorRate < 0.1 || ev.Baseline.ErrorRate > 0.05 || !strings.Contains(ev.Reason, "canary error rate") {
		t.Fatalf("rolled back on evidence %v", ev)
	}
	for i, client := range f.clients {
		if !testcluster.Eventually(5*time.Second, func() bool { return !client.Config().Flag("new-path").On() && !client.Canary("flags").Active() }) {
			t.Fatalf("client %d still has the rolled-back values", i)
		}
	}
	if got := actions(t, cl, id); got != "create,start,rollback(auto)" {
		t.Fatalf("history %s", got)
	}
}

// (c) The leader is killed mid-stage: the rollout goes on from the
// replicated state under the next leader and no stage is applied twice.
func TestCanarySurvivesLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c, _ := canaryCluster(t)
	startFleet(t, c, 30, 20*time.Millisecond, 0.01, 0.01)
	leader := c.LeaderIndex()
	follower := c.Nodes[(leader+1)%3]
	cl := pb.NewCanaryServiceClient(dialConn(t, follower.GRPCAddr))
	id := create(t, cl, stage("20pct", 20, 2*time.Second, 50), stage("50pct", 50, 4*time.Second, 50), stage("all", 100, 2*time.Second, 50))
	if !testcluster.Eventually(15*time.Second, func() bool { return rolloutOf(t, cl, id).CurrentStageIndex == 1 }) {
		m, err := cl.GetRolloutMetrics(ctxT(t), &pb.GetRolloutRequest{Id: id})
		t.Fatalf("the first stage was never promoted: %v; metrics %v %v", rolloutOf(t, cl, id), m, err)
	}
	c.Kill(leader)
	c.WaitForLeader(10 * time.Second)
	waitState(t, cl, id, pb.RolloutState_COMPLETED, 40*time.Second)
	if got := actions(t, cl, id); got != "create,start,promote(auto),promote(auto),complete(auto)" {
		t.Fatalf("history %s: a stage applied twice or skipped", got)
	}
}

// (d) LEVEL_2 pauses the rollout (the canary cohort keeps its values, the
// stage does not move), LEVEL_3 rolls it back.
func TestCanaryEmergencyInterlockWithAFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c, cl := canaryCluster(t)
	f := startFleet(t, c, 30, 20*time.Millisecond, 0.01, 0.01)
	id := create(t, cl, stage("20pct", 20, 2*time.Second, 50), stage("all", 100, 2*time.Second, 50))
	em := admin(t, c.Nodes[0].GRPCAddr)
	if _, err := em.TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_2, Reason: "outage", Duration: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	r := waitState(t, cl, id, pb.RolloutState_PAUSED, 5*time.Second)
	if !r.PausedByInterlock || r.CurrentStageIndex != 0 {
		t.Fatalf("paused rollout %v", r)
	}
	time.Sleep(3 * time.Second) // past the stage's duration: paused, nothing promotes
	if r := rolloutOf(t, cl, id); r.State != pb.RolloutState_PAUSED || r.CurrentStageIndex != 0 {
		t.Fatalf("a paused rollout moved: %v", r)
	}
	if _, err := em.TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_3, Reason: "meltdown", Duration: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	waitState(t, cl, id, pb.RolloutState_ROLLED_BACK, 5*time.Second)
	for i, client := range f.clients {
		if !testcluster.Eventually(5*time.Second, func() bool { return !client.Config().Flag("new-path").On() }) {
			t.Fatalf("client %d still has the rolled-back values", i)
		}
	}
}

// (e) Too little traffic: the stage waits, it never passes; the watchdog
// flags it once it has waited twice its duration.
func TestCanaryWithTooLittleTrafficWaits(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c, cl := canaryCluster(t)
	startFleet(t, c, 30, 500*time.Millisecond, 0.01, 0.01)
	id := create(t, cl, stage("20pct", 20, 2*time.Second, 1000), stage("all", 100, 2*time.Second, 1000))
	var r *pb.Rollout
	if !testcluster.Eventually(10*time.Second, func() bool { r = rolloutOf(t, cl, id); return r.Stuck }) {
		t.Fatalf("the watchdog never flagged the waiting rollout: %v", r)
	}
	if r.State != pb.RolloutState_CANARY || r.CurrentStageIndex != 0 {
		t.Fatalf("a rollout without evidence moved: %v", r)
	}
	m, err := cl.GetRolloutMetrics(ctxT(t), &pb.GetRolloutRequest{Id: id})
	if err != nil || m.Evidence.GetVerdict() != "insufficient" {
		t.Fatalf("metrics %v %v", m, err)
	}
}

// The SDK and the cluster put the same instances in a cohort, and 10,000
// request keys at 10 % give 10 ± 1 % canary, the same on every client.
func TestCanaryCohortsAgree(t *testing.T) {
	in := 0
	for i := range 10000 {
		id := fmt.Sprintf("instance-%d", i)
		a, b := canary.InCohort("r-7", id, 10), baldur.InCohort("r-7", id, 10)
		if a != b {
			t.Fatalf("%s: the cluster says %v, the SDK %v", id, a, b)
		}
		if baldur.RequestBucket("flags", fmt.Sprintf("user-%d", i)) < 10 {
			in++
		}
	}
	if share := float64(in) / 100; math.Abs(share-10) > 1 {
		t.Fatalf("%.2f%% of request keys in at 10%%", share)
	}
}

// BenchmarkCanaryUse is request-level selection with an active rollout
// (Baldur's sha256 bucket), beside Flag(name).Enabled.
func BenchmarkCanaryUse(b *testing.B) {
	c := testcluster.New(b, 1)
	leader := c.WaitForLeader(10 * time.Second)
	conn := benchConn(b, leader.GRPCAddr)
	v, _ := structpb.NewStruct(map[string]any{"new-path": map[string]any{"enabled": true}})
	cl := pb.NewCanaryServiceClient(conn)
	resp, err := cl.CreateRollout(context.Background(), &pb.CreateRolloutRequest{Section: "flags", NewValues: v,
		Stages: []*pb.CanaryStage{{Name: "a", Percentage: 10, Duration: durationpb.New(time.Hour)}}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cl.StartRollout(context.Background(), &pb.RolloutActionRequest{Id: resp.Rollout.Id}); err != nil {
		b.Fatal(err)
	}
	sdk, err := baldur.Dial(context.Background(), leader.GRPCAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer sdk.Close()
	if !testcluster.Eventually(10*time.Second, func() bool { return sdk.Canary("flags").Active() }) {
		b.Fatal("the rollout never reached the SDK")
	}
	for _, bc := range []struct {
		name string
		keys int
	}{{"1024-recurring-keys", 1024}, {"a-new-key-each-call", 1 << 20}} {
		keys := make([]string, bc.keys)
		for i := range keys {
			keys[i] = fmt.Sprintf("user-%d", i)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for i := 0; b.Loop(); i++ {
				if sdk.Canary("flags").Use(keys[i%len(keys)]) {
					n++
				}
			}
			if n == 0 {
				b.Fatal("no key used the canary")
			}
		})
	}
}

// BenchmarkCanaryRollback measures a failing canary's cost: from the
// rollout's start (the canary cohort, half of 100 SDK clients on 3 nodes,
// starts failing 20 % of its calls against 1 % for the baseline) to the
// moment every client is back on the old values. Each iteration is one
// rollout; p50 and p99 over the iterations are reported.
func BenchmarkCanaryRollback(b *testing.B) {
	c := testcluster.New(b, 3)
	leader := c.WaitForLeader(10 * time.Second)
	cfg := pb.NewConfigServiceClient(benchConn(b, leader.GRPCAddr))
	v, _ := structpb.NewStruct(map[string]any{"failure_threshold": 1000, "failure_rate_threshold": 95})
	if _, err := cfg.UpdateConfig(context.Background(), &pb.UpdateConfigRequest{Section: "circuit_defaults", Values: v, Force: true}); err != nil {
		b.Fatal(err)
	}
	var clients []*baldur.Client
	for i := range 100 {
		cl, err := baldur.Dial(context.Background(), endpoints(c), baldur.WithInstanceID(fmt.Sprintf("bench-%d", i)))
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		clients = append(clients, cl)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(40 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				p := 0.01
				if cl.Config().Flag("new-path").On() {
					p = 0.2
				}
				_, _ = baldur.Protect(context.Background(), cl, "checkout", func(context.Context) (int, error) {
					if rand.Float64() < p {
						return 0, errors.New("dependency failed")
					}
					return 1, nil
				})
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	cl := pb.NewCanaryServiceClient(benchConn(b, c.Followers()[0].GRPCAddr))
	nv, _ := structpb.NewStruct(map[string]any{"new-path": map[string]any{"enabled": true}})
	min := int64(50)
	var took []time.Duration
	b.ResetTimer()
	for b.Loop() {
		resp, err := cl.CreateRollout(context.Background(), &pb.CreateRolloutRequest{Section: "flags", NewValues: nv,
			Stages: []*pb.CanaryStage{{Name: "half", Percentage: 50, Duration: durationpb.New(time.Hour),
				PassCriteria: &pb.PassCriteria{MinRequests: &min, EvaluationWindow: durationpb.New(10 * time.Second)}}}})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := cl.StartRollout(context.Background(), &pb.RolloutActionRequest{Id: resp.Rollout.Id}); err != nil {
			b.Fatal(err)
		}
		if !testcluster.Eventually(10*time.Second, func() bool { return clients[0].Canary("flags").RolloutID() == resp.Rollout.Id }) {
			b.Fatal("the rollout never reached the clients")
		}
		if !testcluster.Eventually(60*time.Second, func() bool {
			for _, c := range clients {
				if c.Canary("flags").RolloutID() == resp.Rollout.Id || c.Config().Flag("new-path").On() {
					return false
				}
			}
			return true
		}) {
			b.Fatal("the failing rollout was not rolled back on every client")
		}
		took = append(took, time.Since(start))
		r, err := cl.GetRollout(context.Background(), &pb.GetRolloutRequest{Id: resp.Rollout.Id})
		if err != nil || r.Rollout.State != pb.RolloutState_ROLLED_BACK {
			b.Fatalf("rollout ended %v %v", r, err)
		}
	}
	b.StopTimer()
	sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(took[(len(took)*99)/100].Milliseconds()), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
