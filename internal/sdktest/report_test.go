package sdktest_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"github.com/baldurhq/baldurd/server"
)

// A healthy instance reports its successes about once a second (the idle
// report interval), not every 100 ms; while it records failures it reports
// at the report interval.
func TestHealthyInstancesReportLessOften(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	n := c.Nodes[0]
	cl := dialSDK(t, n.GRPCAddr, baldur.WithInstanceID("idle-reporter"))
	br := cl.Breaker("idle-reports")
	reports := func() float64 {
		return testcluster.MetricLabelled(t, n.HTTPAddr, "baldur_circuit_reports_total", `name="idle-reports"`)
	}
	// Outcomes recorded whatever the breaker says (its local view opens
	// after a few failures, and rejections alone wait like successes).
	record := func(d time.Duration, err error) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			br.Record(err)
		}
	}
	record(100*time.Millisecond, nil)
	time.Sleep(1200 * time.Millisecond) // the first batch is out
	before := reports()
	record(3*time.Second, nil)
	healthy := reports() - before
	if healthy < 2 || healthy > 4 {
		t.Fatalf("%v reports in 3 s of successes, want about 3 (one a second)", healthy)
	}
	before = reports()
	record(time.Second, errors.New("down"))
	failing := reports() - before
	if failing < 6 {
		t.Fatalf("%v reports in 1 s with failures, want about 10 (every 100 ms)", failing)
	}
	t.Logf("reports: %v in 3 s of successes, %v in 1 s with failures", healthy, failing)
}

// A failure wakes the report loop: it is reported at once when the last
// report is an interval old, and a failing instance still reports at most
// once per interval (the loop does not tick while nothing is news).
func TestFailuresAreReportedAtOnceAtMostOncePerInterval(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	n := c.Nodes[0]
	cl := dialSDK(t, n.GRPCAddr, baldur.WithInstanceID("news-reporter"),
		baldur.WithReportInterval(2*time.Second), baldur.WithIdleReportInterval(2*time.Second))
	br := cl.Breaker("news-reports")
	reports := func() float64 {
		return testcluster.MetricLabelled(t, n.HTTPAddr, "baldur_circuit_reports_total", `name="news-reports"`)
	}
	start := time.Now()
	br.Record(errors.New("down"))
	for reports() < 1 {
		if time.Since(start) > time.Second {
			t.Fatal("a failure was not reported within 1 s (the report interval is 2 s, none was sent before)")
		}
		time.Sleep(10 * time.Millisecond)
	}
	first := time.Since(start)
	br.Record(errors.New("down again"))
	time.Sleep(1200 * time.Millisecond)
	if got := reports(); got != 1 {
		t.Fatalf("%v reports 1.2 s after the first, want 1 (at most one per 2 s interval)", got)
	}
	for reports() < 2 {
		if time.Since(start) > 4*time.Second {
			t.Fatal("the second failure was not reported within the next interval")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("first failure reported after %v, the second after %v", first, time.Since(start))

	// The SDK sent them on its report stream, not as calls: the only
	// ReportOutcomes call the node counted is this test's own.
	calls := func() float64 {
		return testcluster.MetricLabelled(t, n.HTTPAddr, "baldur_grpc_requests_total", `code="OK",method="CircuitService/ReportOutcomes"`)
	}
	conn, err := baldur.NewConn(n.GRPCAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := pb.NewCircuitServiceClient(conn).ReportOutcomes(ctx, &pb.ReportOutcomesRequest{InstanceId: "by-call",
		Reports: []*pb.OutcomeReport{{Name: "news-reports", Successes: 1}}}); err != nil {
		t.Fatal(err)
	}
	if got := calls(); got != 1 {
		t.Fatalf("ReportOutcomes calls counted: %v, want 1 (the SDK reports on its stream)", got)
	}
}

// An instance that reports keeps its view fresh with the answers: with
// the node's watch heartbeats every 3 s (the default) and the client stale
// after 1 s without news, 3 s of calls (reported every 200 ms) never make
// it stale; once its calls, and so its reports, stop, it goes stale.
func TestAnsweredReportsKeepTheClientFresh(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	n := c.Nodes[0]
	cl := dialSDK(t, n.GRPCAddr, baldur.WithInstanceID("fresh-reporter"), baldur.WithStaleAfter(time.Second),
		baldur.WithIdleReportInterval(200*time.Millisecond))
	br := cl.Breaker("fresh-by-reports")
	// Open in the fleet view: while the view is fresh, Allow refuses;
	// once stale, the client fails static and decides alone.
	forceOpen(t, n.GRPCAddr, br)
	for end := time.Now().Add(5 * time.Second); br.FleetState() != baldur.StateOpen; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the forced OPEN did not reach the client")
		}
	}
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		br.Record(nil) // counted as calls to report
		if cl.Emergency().Stale() {
			t.Fatal("the client went stale while its reports were answered")
		}
		if br.Allow() == nil {
			t.Fatal("a fresh client allowed a call through a fleet breaker forced OPEN")
		}
	}
	start := time.Now()
	for !cl.Emergency().Stale() || br.Allow() != nil {
		if time.Since(start) > 2500*time.Millisecond {
			t.Fatalf("2.5 s after its reports stopped: stale %v, allow %v (want stale after 1 s without news)", cl.Emergency().Stale(), br.Allow())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("stale %v after the last report", time.Since(start))
}

// WithOnUpdate is called once a pushed change shows: the level and the
// breaker's fleet view already read the new values inside the callback.
func TestOnUpdateSeesTheChangeApplied(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	n := c.Nodes[0]
	type seen struct {
		u     baldur.Update
		level baldur.Level
		state baldur.State
	}
	got := make(chan seen, 64)
	var cl *baldur.Client
	var ready atomic.Bool
	cl = dialSDK(t, n.GRPCAddr, baldur.WithOnUpdate(func(u baldur.Update) {
		if !ready.Load() {
			return
		}
		s := seen{u: u, level: cl.Emergency().LevelOf("on-update")}
		if len(u.Names) > 0 {
			s.state = cl.Breaker(u.Names[0]).FleetState()
		}
		got <- s
	}))
	br := cl.Breaker("on-update")
	ready.Store(true)
	next := func(kind baldur.UpdateKind) seen {
		t.Helper()
		for {
			select {
			case s := <-got:
				if s.u.Kind == kind {
					return s
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no update of kind %v", kind)
			}
		}
	}
	if _, err := admin(t, n.GRPCAddr).TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_2, Scope: "on-update", Reason: "callback test"}); err != nil {
		t.Fatal(err)
	}
	s := next(baldur.UpdateEmergency)
	if s.level != baldur.Level2 || len(s.u.Names) != 1 || s.u.Names[0] != "on-update" || s.u.Revision == 0 || s.u.Snapshot {
		t.Fatalf("emergency update %+v, level inside the callback %v", s.u, s.level)
	}
	forceOpen(t, n.GRPCAddr, br)
	// Its registration (CLOSED) comes first, then the force.
	for s = next(baldur.UpdateCircuits); s.state != baldur.StateOpen; s = next(baldur.UpdateCircuits) {
		if len(s.u.Names) != 1 || s.u.Names[0] != "on-update" {
			t.Fatalf("circuit update %+v", s.u)
		}
	}
	if len(s.u.Names) != 1 || s.u.Names[0] != "on-update" || s.u.Revision < br.FleetRevision() {
		t.Fatalf("circuit update %+v, breaker at revision %d", s.u, br.FleetRevision())
	}
}

// forceOpen forces br OPEN in the fleet once the instance's report has
// registered it.
func forceOpen(t *testing.T, addr string, br *baldur.Breaker) {
	t.Helper()
	circuits := pb.NewCircuitServiceClient(dialConn(t, addr))
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		br.Record(nil)
		_, err := circuits.ForceOpen(ctxT(t), &pb.ForceRequest{Name: br.Name(), Reason: "sdk test"})
		if err == nil {
			return
		}
		if time.Now().After(end) {
			t.Fatal(err)
		}
	}
}

// A member that takes 1 quiet report a second, with 3 instances reporting
// to it, asks each to hold its successes for 3 s: in 7 s of successes an
// instance reports 2 or 3 times, not 7; failures still go at the report
// interval.
func TestMembersSpreadQuietReports(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.IdleReportsPerSecond = 1 }))
	n := c.Nodes[0]
	var brs []*baldur.Breaker
	for i := range 3 {
		cl := dialSDK(t, n.GRPCAddr, baldur.WithInstanceID(fmt.Sprint("spread-", i)))
		brs = append(brs, cl.Breaker(fmt.Sprint("spread-", i)))
	}
	reports := func() float64 {
		return testcluster.MetricLabelled(t, n.HTTPAddr, "baldur_circuit_reports_total", `name="spread-0"`)
	}
	record := func(d time.Duration, err error) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			for _, br := range brs {
				br.Record(err)
			}
		}
	}
	record(2500*time.Millisecond, nil) // every instance's stream is open and answered
	before := reports()
	record(7*time.Second, nil)
	quiet := reports() - before
	if quiet < 1 || quiet > 4 {
		t.Fatalf("%v reports in 7 s of successes, want 2 or 3 (the member asked for one every 3 s)", quiet)
	}
	before = reports()
	record(time.Second, errors.New("down"))
	failing := reports() - before
	if failing < 6 {
		t.Fatalf("%v reports in 1 s with failures, want about 10 (every 100 ms)", failing)
	}
	t.Logf("reports: %v in 7 s of successes, %v in 1 s with failures", quiet, failing)
}

// A member that takes 6 reports a second, with 3 instances reporting to
// it, asks each to leave 500 ms between reports: in 2 s of failures an
// instance reports about 4 times, not 20.
func TestMembersBoundFailureReports(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.ReportsPerSecond = 6 }))
	n := c.Nodes[0]
	var brs []*baldur.Breaker
	for i := range 3 {
		cl := dialSDK(t, n.GRPCAddr, baldur.WithInstanceID(fmt.Sprint("bound-", i)))
		brs = append(brs, cl.Breaker(fmt.Sprint("bound-", i)))
	}
	batches := func() float64 {
		return testcluster.MetricValue(t, n.HTTPAddr, "baldur_circuit_evaluator_lag_seconds_count")
	}
	record := func(d time.Duration, err error) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			for _, br := range brs {
				br.Record(err)
			}
		}
	}
	record(2500*time.Millisecond, nil) // every instance's stream is open and answered
	before := batches()
	record(2*time.Second, errors.New("down"))
	got := batches() - before
	if got < 6 || got > 18 {
		t.Fatalf("%v batches from 3 failing instances in 2 s, want about 12 (one each every 500 ms)", got)
	}
	t.Logf("%v batches from 3 failing instances in 2 s", got)
}
