package sdktest_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

var errDown = errors.New("dependency down")

func circuits(t *testing.T, addr string) pb.CircuitServiceClient {
	return pb.NewCircuitServiceClient(dialConn(t, addr))
}

func endpoints(c *testcluster.Cluster) string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.GRPCAddr)
	}
	return strings.Join(out, ",")
}

// fleet dials n SDK clients, spread over the nodes.
func fleet(t *testing.T, c *testcluster.Cluster, n int) []*baldur.Client {
	var out []*baldur.Client
	for i := 0; i < n; i++ {
		first := c.Nodes[i%len(c.Nodes)].GRPCAddr
		out = append(out, dialSDK(t, first+","+endpoints(c), baldur.WithInstanceID(fmt.Sprintf("i-%02d", i)),
			baldur.WithReportInterval(50*time.Millisecond)))
	}
	return out
}

func setPolicy(t *testing.T, cl pb.CircuitServiceClient, name string, p *pb.CircuitPolicy) {
	t.Helper()
	if _, err := cl.SetPolicy(ctxT(t), &pb.SetPolicyRequest{Name: name, Policy: p}); err != nil {
		t.Fatal(err)
	}
}

func TestFleetTripReachesEveryClient(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	admin := circuits(t, c.Leader().GRPCAddr)
	// Local views must not trip first: the fleet trip is what is measured.
	setPolicy(t, admin, "payments", &pb.CircuitPolicy{FailureThreshold: 1000, FailureRateThreshold: proto.Float64(50), MinimumCalls: 20, WindowSize: 200, RecoveryTimeout: durationpb.New(time.Hour)})
	clients := fleet(t, c, 50)
	for _, cl := range clients {
		waitFleetState(t, cl.Breaker("payments"), baldur.StateClosed)
	}
	// Each client makes one failing call per 20 ms until it is rejected.
	onset := time.Now()
	var wg sync.WaitGroup
	rejectedAt := make([]time.Duration, len(clients))
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := cl.Breaker("payments")
			for time.Since(onset) < 10*time.Second {
				if err := b.Allow(); err != nil {
					var coe *baldur.CircuitOpenError
					if !errors.As(err, &coe) || !coe.Fleet {
						t.Errorf("client %d rejected by %v, want the fleet view", i, err)
					}
					rejectedAt[i] = time.Since(onset)
					return
				}
				b.Record(errDown)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	sort.Slice(rejectedAt, func(i, j int) bool { return rejectedAt[i] < rejectedAt[j] })
	if rejectedAt[0] == 0 {
		t.Fatalf("some client never rejected")
	}
	t.Logf("failure onset → all %d clients rejecting: first %v, median %v, last %v", len(clients), rejectedAt[0], rejectedAt[len(rejectedAt)/2], rejectedAt[len(rejectedAt)-1])
	got, err := admin.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "payments"})
	if err != nil || got.State != pb.CircuitState_OPEN || got.Evidence.Trigger != "failure_rate_threshold_exceeded" || got.Evidence.Reporters < 1 {
		t.Fatalf("breaker after the trip: %v %v", got, err)
	}
}

func TestOneBadInstanceDoesNotTripTheFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	admin := circuits(t, c.Leader().GRPCAddr)
	setPolicy(t, admin, "search", &pb.CircuitPolicy{MinReporters: 3, RecoveryTimeout: durationpb.New(time.Hour)})
	clients := fleet(t, c, 5)
	for _, cl := range clients {
		waitFleetState(t, cl.Breaker("search"), baldur.StateClosed)
	}
	bad := clients[0].Breaker("search")
	for i := 0; i < 50; i++ {
		if bad.Allow() == nil {
			bad.Record(errDown)
		}
		for _, good := range clients[1:] {
			if b := good.Breaker("search"); b.Allow() == nil {
				b.Record(nil)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // several report intervals
	if bad.LocalState() != baldur.StateOpen {
		t.Fatalf("the failing instance's local view is %v, want OPEN", bad.LocalState())
	}
	if err := bad.Allow(); !errors.Is(err, baldur.ErrCircuitOpen) {
		t.Fatalf("failing instance admits calls: %v", err)
	}
	got, _ := admin.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "search"})
	if got.State != pb.CircuitState_CLOSED {
		t.Fatalf("fleet state %v with one bad reporter and min_reporters=3", got.State)
	}
	for _, good := range clients[1:] {
		if err := good.Breaker("search").Allow(); err != nil {
			t.Fatalf("healthy instance rejects: %v", err)
		}
	}
}

func waitFleetState(t *testing.T, b *baldur.Breaker, want baldur.State) {
	t.Helper()
	if !testcluster.Eventually(10*time.Second, func() bool { return b.FleetRevision() > 0 && b.FleetState() == want }) {
		t.Fatalf("%s: fleet state %v, want %v", b.Name(), b.FleetState(), want)
	}
}

func tripByFailures(t *testing.T, b *baldur.Breaker, admin pb.CircuitServiceClient) {
	t.Helper()
	if !testcluster.Eventually(10*time.Second, func() bool {
		if b.Allow() == nil {
			b.Record(errDown)
		}
		got, err := admin.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: b.Name()})
		return err == nil && got.State == pb.CircuitState_OPEN
	}) {
		t.Fatalf("%s did not trip", b.Name())
	}
}

func TestHalfOpenProbesAreLimitedFleetWide(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	admin := circuits(t, c.Leader().GRPCAddr)
	setPolicy(t, admin, "ledger", &pb.CircuitPolicy{FailureThreshold: 3, FailureRateThreshold: proto.Float64(0), RecoveryTimeout: durationpb.New(300 * time.Millisecond),
		HalfOpenMaxCalls: 3, SuccessThreshold: 3, HalfOpenStuckTimeout: durationpb.New(time.Hour)})
	clients := fleet(t, c, 20)
	tripByFailures(t, clients[0].Breaker("ledger"), admin)
	for _, cl := range clients {
		waitFleetState(t, cl.Breaker("ledger"), baldur.StateHalfOpen)
	}
	// Everyone hammers the half-open breaker without finishing its calls.
	var mu sync.Mutex
	admitted := map[int]int{}
	var wg sync.WaitGroup
	for i, cl := range clients[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := cl.Breaker("ledger")
			for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
				if b.Allow() == nil {
					mu.Lock()
					admitted[i+1]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	total := 0
	for _, n := range admitted {
		total += n
	}
	got, _ := admin.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "ledger"})
	t.Logf("calls admitted fleet-wide in HALF_OPEN: %d (by client: %v); permits granted %d", total, admitted, got.ProbesGranted)
	if total == 0 || total > 3 || got.ProbesGranted > 3 {
		t.Fatalf("%d calls admitted and %d permits granted, want 1..3", total, got.ProbesGranted)
	}
	// The probes succeed: the breaker closes for everyone.
	for i := range admitted {
		for k := 0; k < admitted[i]; k++ {
			clients[i].Breaker("ledger").Record(nil)
		}
	}
	if total == 3 {
		for _, cl := range clients {
			waitFleetState(t, cl.Breaker("ledger"), baldur.StateClosed)
		}
	}
}

func TestLeaderKilledWhileOpenHonoursRecoveryOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	admin := circuits(t, c.Leader().GRPCAddr)
	setPolicy(t, admin, "billing", &pb.CircuitPolicy{FailureThreshold: 3, RecoveryTimeout: durationpb.New(2 * time.Second)})
	cl := dialSDK(t, endpoints(c), baldur.WithReportInterval(20*time.Millisecond))
	tripByFailures(t, cl.Breaker("billing"), admin)
	opened, _ := admin.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "billing"})
	c.Kill(c.LeaderIndex())
	nl := c.WaitForLeader(10 * time.Second)
	admin = circuits(t, nl.GRPCAddr)
	got, err := admin.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "billing"})
	// Still OPEN, or HALF_OPEN when the election outlasted the 2 s
	// recovery timeout (a loaded machine): not reset by the new leader.
	// When and how often it moved is checked below.
	if err != nil || (got.State != pb.CircuitState_OPEN && got.State != pb.CircuitState_HALF_OPEN) {
		t.Fatalf("after the leader change: %v %v, want OPEN", got, err)
	}
	if !testcluster.Eventually(10*time.Second, func() bool {
		got, err = admin.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "billing"})
		return err == nil && got.State == pb.CircuitState_HALF_OPEN
	}) {
		t.Fatal("never moved to HALF_OPEN")
	}
	if waited := got.ProbeWindowStartedAt.AsTime().Sub(opened.OpenedAt.AsTime()); waited < 2*time.Second {
		t.Fatalf("HALF_OPEN after %v, before the 2s recovery timeout", waited)
	}
	time.Sleep(500 * time.Millisecond)
	audit, err := pb.NewAuditServiceClient(dialConn(t, nl.GRPCAddr)).ListAudit(ctxT(t), &pb.ListAuditRequest{Action: "circuit.half_open"})
	if err != nil || len(audit.Records) != 1 {
		t.Fatalf("half-open transitions in the audit trail: %d (%v), want 1", len(audit.Records), err)
	}
}

func TestClusterOutageFailsStaticThenLocalThenResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	admin := circuits(t, c.Leader().GRPCAddr)
	if _, err := admin.SetPolicy(ctxT(t), &pb.SetPolicyRequest{Name: "db", Policy: &pb.CircuitPolicy{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ForceOpen(ctxT(t), &pb.ForceRequest{Name: "db", Reason: "maintenance"}); err != nil {
		t.Fatal(err)
	}
	cl := dialSDK(t, endpoints(c), baldur.WithStaleAfter(time.Second), baldur.WithReportInterval(20*time.Millisecond))
	b := cl.Breaker("db")
	other := cl.Breaker("cache")
	waitFleetState(t, b, baldur.StateOpen)
	for i := range c.Nodes {
		c.Kill(i)
	}
	// Last known state: still rejecting, and never waiting on the network.
	var worst time.Duration
	outage := time.Now()
	for time.Since(outage) < 500*time.Millisecond {
		start := time.Now()
		err := b.Allow()
		worst = max(worst, time.Since(start))
		if !errors.Is(err, baldur.ErrCircuitOpen) {
			t.Fatalf("%v into the outage Allow = %v, want the last known OPEN", time.Since(outage), err)
		}
		if other.Allow() == nil {
			other.Record(nil)
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("slowest Allow during the outage: %v", worst)
	// Past the stale bound: local decisions only.
	if !testcluster.Eventually(5*time.Second, func() bool { return b.Allow() == nil }) {
		t.Fatal("still rejecting after the stale bound")
	}
	b.Record(nil)
	for i := 0; i < 20; i++ {
		if other.Allow() == nil {
			other.Record(errDown)
		}
	}
	if !testcluster.Eventually(2*time.Second, func() bool { return cl.Stats().BatchesBuffered > 0 }) {
		t.Fatalf("no outcome batch buffered during the outage: %+v", cl.Stats())
	}
	sentBefore := cl.Stats().BatchesSent
	for i := range c.Nodes {
		c.Restart(i)
	}
	nl := c.WaitForLeader(15 * time.Second)
	if !testcluster.Eventually(15*time.Second, func() bool { return errors.Is(b.Allow(), baldur.ErrCircuitOpen) }) {
		t.Fatal("the fleet view (forced OPEN) did not come back")
	}
	if !testcluster.Eventually(15*time.Second, func() bool { s := cl.Stats(); return s.BatchesBuffered == 0 && s.BatchesSent > sentBefore }) {
		t.Fatalf("buffered batches not delivered: %+v", cl.Stats())
	}
	got, err := circuits(t, nl.GRPCAddr).GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "cache"})
	// The failures recorded during the outage either sit in the leader's
	// window or have already tripped the breaker.
	if err != nil || (got.Window.GetWindowFailures() == 0 && got.Evidence.GetWindowFailures() == 0) {
		t.Fatalf("outcomes recorded during the outage did not reach the leader's window: %v %v", got, err)
	}
	if cl.Stats().DroppedBatches != 0 {
		t.Fatalf("batches dropped: %+v", cl.Stats())
	}
}

func TestDryRunAndKillSwitchNeverReject(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	admin := circuits(t, c.Nodes[0].GRPCAddr)
	setPolicy(t, admin, "shadow", &pb.CircuitPolicy{FailureThreshold: 3, DryRun: true, RecoveryTimeout: durationpb.New(time.Hour)})
	setPolicy(t, admin, "live", &pb.CircuitPolicy{RecoveryTimeout: durationpb.New(time.Hour)})
	cl := dialSDK(t, c.Nodes[0].GRPCAddr, baldur.WithReportInterval(20*time.Millisecond))
	shadow := cl.Breaker("shadow")
	waitFleetState(t, shadow, baldur.StateClosed)
	for i := 0; i < 20; i++ {
		if err := shadow.Allow(); err != nil {
			t.Fatalf("dry-run breaker rejected: %v", err)
		}
		shadow.Record(errDown)
	}
	waitFleetState(t, shadow, baldur.StateOpen) // it trips, for the record
	if err := shadow.Allow(); err != nil || shadow.Stats().WouldReject == 0 {
		t.Fatalf("dry run: Allow %v, would-reject count %d", err, shadow.Stats().WouldReject)
	}
	live := cl.Breaker("live")
	waitFleetState(t, live, baldur.StateClosed)
	if _, err := admin.ForceOpen(ctxT(t), &pb.ForceRequest{Name: "live", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	waitFleetState(t, live, baldur.StateOpen)
	if !errors.Is(live.Allow(), baldur.ErrCircuitOpen) {
		t.Fatal("forced-open breaker admits calls")
	}
	if _, err := admin.SetKillSwitch(ctxT(t), &pb.SetKillSwitchRequest{Enabled: true, Reason: "incident"}); err != nil {
		t.Fatal(err)
	}
	if !testcluster.Eventually(5*time.Second, cl.KillSwitch) {
		t.Fatal("kill switch never arrived")
	}
	if err := live.Allow(); err != nil {
		t.Fatalf("kill switch on, Allow = %v", err)
	}
	v, err := baldur.Protect(ctxT(t), cl, "live", func(context.Context) (int, error) { return 7, nil })
	if err != nil || v != 7 {
		t.Fatalf("Protect with the kill switch on: %v %v", v, err)
	}
}
