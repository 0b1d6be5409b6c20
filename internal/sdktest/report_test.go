package sdktest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
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
