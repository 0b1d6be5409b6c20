package server_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
	"google.golang.org/grpc/metadata"
)

// A client whose report stream says so (baldur-liveness: reports) gets no
// watch heartbeats on that connection while its reports are answered, and
// gets them again once its reports stop; a connection whose report stream
// did not say so keeps its heartbeats.
func TestAnsweredReportsStandInForWatchHeartbeats(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	const heartbeat = 200 * time.Millisecond
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.WatchHeartbeat = heartbeat }))
	n := c.Nodes[0]
	run := func(liveness bool) (during, after int64) {
		conn := dial(t, n.GRPCAddr)
		ctx := ctxT(t)
		if liveness {
			ctx = metadata.AppendToOutgoingContext(ctx, "baldur-liveness", "reports")
		}
		reports, err := pb.NewCircuitServiceClient(conn).StreamOutcomes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		report := func() {
			t.Helper()
			if err := reports.Send(&pb.ReportOutcomesRequest{InstanceId: "live-1", Reports: []*pb.OutcomeReport{{Name: "liveness", Successes: 1}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := reports.Recv(); err != nil {
				t.Fatal(err)
			}
		}
		report()
		watch, err := pb.NewEmergencyServiceClient(conn).WatchEmergency(ctxT(t), &pb.WatchEmergencyRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := watch.Recv(); err != nil { // the snapshot
			t.Fatal(err)
		}
		var beats atomic.Int64
		go func() {
			for {
				msg, err := watch.Recv()
				if err != nil {
					return
				}
				if !msg.Snapshot && len(msg.States) == 0 && msg.Config == nil && msg.RuntimeConfig == nil {
					beats.Add(1)
				}
			}
		}()
		for end := time.Now().Add(1200 * time.Millisecond); time.Now().Before(end); time.Sleep(40 * time.Millisecond) {
			report()
		}
		during = beats.Load()
		time.Sleep(1000 * time.Millisecond) // no reports
		after = beats.Load() - during
		if err := reports.CloseSend(); err != nil {
			t.Fatal(err)
		}
		return during, after
	}
	during, after := run(true)
	if during > 1 || after < 2 {
		t.Fatalf("with answered reports: %d heartbeats while reporting for 1.2 s (want none), %d in the 1 s after (want about 4)", during, after)
	}
	t.Logf("with answered reports: %d heartbeats while reporting, %d in the second after", during, after)
	during, after = run(false)
	if during < 3 {
		t.Fatalf("without the header: %d heartbeats in 1.2 s of reports, want about 6", during)
	}
}

// A member asks the instances reporting to it to hold their quiet reports
// for (report streams / --idle-reports-per-second), at most a watch
// heartbeat interval, and to leave (report streams / --reports-per-second)
// between any two reports, at most 1 s: with 4 streams, 2 and 8 a second
// ask for 2 s and 500 ms; 1 and 2 reach both bounds; 0 asks nothing.
func TestAnswersSpreadReports(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	for _, tc := range []struct {
		idle, all          int
		wantIdle, wantEach time.Duration
	}{{2, 8, 2 * time.Second, 500 * time.Millisecond}, {1, 2, 3 * time.Second, time.Second}, {0, 0, 0, 0}} {
		c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) {
			cfg.IdleReportsPerSecond, cfg.ReportsPerSecond = tc.idle, tc.all
		}))
		n := c.Nodes[0]
		var last *pb.ReportOutcomesResponse
		for i := range 4 {
			st, err := pb.NewCircuitServiceClient(dial(t, n.GRPCAddr)).StreamOutcomes(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(&pb.ReportOutcomesRequest{InstanceId: fmt.Sprint("spread-", i), Reports: []*pb.OutcomeReport{{Name: "spread", Successes: 1}}}); err != nil {
				t.Fatal(err)
			}
			if last, err = st.Recv(); err != nil {
				t.Fatal(err)
			}
		}
		idle, each := last.GetIdleReportInterval().AsDuration(), last.GetReportInterval().AsDuration()
		if idle != tc.wantIdle || each != tc.wantEach || (tc.wantIdle == 0) != (last.IdleReportInterval == nil) || (tc.wantEach == 0) != (last.ReportInterval == nil) {
			t.Fatalf("--idle-reports-per-second %d, --reports-per-second %d, 4 report streams: asked %v and %v, want %v and %v", tc.idle, tc.all, idle, each, tc.wantIdle, tc.wantEach)
		}
	}
}

// A stream whose filter matches none of its topic's changes still gets its
// heartbeats: changes to other breakers wake it every 50 ms, and it hears
// from the node every heartbeat interval (200 ms) all the same.
func TestFilteredWatchGetsHeartbeatsThroughOthersChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.WatchHeartbeat = 200 * time.Millisecond }))
	n := c.Nodes[0]
	circuits := pb.NewCircuitServiceClient(dial(t, n.GRPCAddr))
	if _, err := circuits.ReportOutcomes(ctxT(t), &pb.ReportOutcomesRequest{InstanceId: "i-1", Reports: []*pb.OutcomeReport{{Name: "busy", Successes: 1}}}); err != nil {
		t.Fatal(err)
	}
	watch, err := circuits.WatchCircuits(ctxT(t), &pb.WatchCircuitsRequest{Names: []string{"quiet-one"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil { // the snapshot
		t.Fatal(err)
	}
	var beats atomic.Int64
	go func() {
		for {
			msg, err := watch.Recv()
			if err != nil {
				return
			}
			if len(msg.Circuits) > 0 {
				t.Errorf("a change to another breaker reached the filtered stream: %v", msg)
			}
			beats.Add(1)
		}
	}()
	for end := time.Now().Add(1200 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if _, err := circuits.ForceOpen(ctxT(t), &pb.ForceRequest{Name: "busy", Reason: "wake the topic"}); err != nil {
			t.Fatal(err)
		}
		if _, err := circuits.ForceClose(ctxT(t), &pb.ForceRequest{Name: "busy", Reason: "wake the topic"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := beats.Load(); got < 3 {
		t.Fatalf("%d heartbeats in 1.2 s while other breakers changed, want about 6", got)
	}
}
