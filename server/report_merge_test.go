package server_test

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Outcome reports sent to followers by many instances at once reach the
// leader merged (baldur_report_merge_size: batches per merged batch), and
// the leader decides on them as on the instances' own: each caller learns
// which of its breakers were registered; a breaker whose policy needs 3
// distinct failing instances does not trip on 2 however many failures
// they report, and trips once a third instance fails, with the evidence
// naming 3 reporters.
func TestReportsAreMergedNearTheirSource(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	leader := c.Leader()
	followers := c.Followers()
	rate := 50.0
	if _, err := circuitClient(t, leader).SetPolicy(ctxT(t), &pb.SetPolicyRequest{Name: "merged", Reason: "test",
		Policy: &pb.CircuitPolicy{FailureThreshold: 1000, FailureRateThreshold: &rate, MinimumCalls: 10, MinReporters: 3}}); err != nil {
		t.Fatal(err)
	}

	// 60 instances report at once through the two followers: each gets
	// its own new breaker registered and named in its answer.
	var wg sync.WaitGroup
	errs := make(chan error, 60)
	for i := range 60 {
		cc := circuitClient(t, followers[i%2])
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := fmt.Sprintf("own-%02d", i)
			resp, err := cc.ReportOutcomes(ctxT(t), &pb.ReportOutcomesRequest{InstanceId: fmt.Sprintf("i-%02d", i),
				Reports: []*pb.OutcomeReport{{Name: "merged", Successes: 1}, {Name: own, Successes: 1}}})
			if err == nil && (len(resp.Registered) != 1 || resp.Registered[0] != own) {
				err = fmt.Errorf("instance %d: registered %v, want [%s]", i, resp.Registered, own)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var batches, merged float64
	for _, f := range followers {
		sum, count := testcluster.MetricSum(t, f.HTTPAddr, "baldur_report_merge_size")
		batches, merged = batches+sum, merged+count
	}
	if batches != 60 || merged >= 60 {
		t.Fatalf("followers merged %v batches into %v: want 60 into fewer", batches, merged)
	}
	t.Logf("60 report batches reached the leader as %v merged batches", merged)

	// Two failing instances, however loud: no trip (min_reporters 3).
	report := func(instance string, failures int64) {
		t.Helper()
		if _, err := circuitClient(t, followers[0]).ReportOutcomes(ctxT(t), &pb.ReportOutcomesRequest{InstanceId: instance,
			Reports: []*pb.OutcomeReport{{Name: "merged", Failures: failures}}}); err != nil {
			t.Fatal(err)
		}
	}
	report("f-1", 50)
	report("f-2", 50)
	state := func() *pb.Circuit {
		got, err := circuitClient(t, leader).GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "merged"})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if st := state(); st.State != pb.CircuitState_CLOSED {
		t.Fatalf("tripped on two failing instances: %v", st)
	}
	report("f-3", 1)
	if !testcluster.Eventually(5*time.Second, func() bool { return state().State == pb.CircuitState_OPEN }) {
		t.Fatalf("a third failing instance did not trip it: %v", state())
	}
	if ev := state().Evidence; ev.GetReporters() != 3 {
		t.Fatalf("evidence %v, want 3 reporters", ev)
	}
}

// While a member is older (it does not serve IngestReports), followers
// forward each instance's batch to the leader whole, as before: reports
// still register and count, and no follower merges.
func TestReportsAreForwardedWholeWhileAMemberIsOlder(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3, testcluster.WithConfig(func(i int, cfg *server.Config) {
		if i == 2 {
			cfg.CommandVersion = 5
		}
	}))
	c.WaitForMembers(10 * time.Second)
	for _, f := range c.Followers() {
		resp, err := circuitClient(t, f).ReportOutcomes(ctxT(t), &pb.ReportOutcomesRequest{InstanceId: "old-" + f.ID,
			Reports: []*pb.OutcomeReport{{Name: "via-" + f.ID, Failures: 1}}})
		if err != nil || len(resp.Registered) != 1 || resp.Registered[0] != "via-"+f.ID {
			t.Fatalf("report through %s: %v %v", f.ID, resp, err)
		}
		if _, n := testcluster.MetricSum(t, f.HTTPAddr, "baldur_report_merge_size"); n != 0 {
			t.Fatalf("%s merged %v batches while a member is older", f.ID, n)
		}
	}
}

// StreamOutcomes: an instance's batches on one stream to a follower are
// answered in order, each as ReportOutcomes would answer it (new breakers
// named); they reach the leader's fleet window; a bad batch ends the
// stream with ReportOutcomes' error naming the field, and a new stream
// works again.
func TestReportStreamAnswersEachBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	cc := circuitClient(t, c.Followers()[0])
	st, err := cc.StreamOutcomes(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		name := fmt.Sprintf("streamed-own-%d", i)
		if err := st.Send(&pb.ReportOutcomesRequest{InstanceId: "i-stream",
			Reports: []*pb.OutcomeReport{{Name: "streamed-0", Successes: 2}, {Name: name, Successes: 3}}}); err != nil {
			t.Fatal(err)
		}
		resp, err := st.Recv()
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		want := []string{name} // and streamed-0 in the first
		if i == 0 {
			want = []string{"streamed-0", name}
		}
		slices.Sort(resp.Registered)
		if fmt.Sprint(resp.Registered) != fmt.Sprint(want) {
			t.Fatalf("batch %d: registered %v, want %v", i, resp.Registered, want)
		}
	}
	got, err := circuitClient(t, c.Leader()).GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "streamed-0"})
	if err != nil || got.Window == nil || got.Window.WindowCalls != 6 {
		t.Fatalf("the leader's window after 3 streamed batches: %v %v", got.GetWindow(), err)
	}
	_ = st.Send(&pb.ReportOutcomesRequest{InstanceId: "i-stream", Reports: []*pb.OutcomeReport{{Name: "streamed-0", Failures: -1}}})
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "reports[0].failures") {
		t.Fatalf("a bad batch on the stream: %v", err)
	}
	st, err = cc.StreamOutcomes(ctxT(t))
	if err == nil {
		err = st.Send(&pb.ReportOutcomesRequest{InstanceId: "i-stream", Reports: []*pb.OutcomeReport{{Name: "streamed-0", Successes: 1}}})
	}
	if err == nil {
		_, err = st.Recv()
	}
	if err != nil {
		t.Fatalf("a new stream after the bad batch: %v", err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Fatalf("the stream after CloseSend: %v, want EOF", err)
	}
}
