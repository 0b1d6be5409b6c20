package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
)

// A connection from baldur.NewConn rides out kill -9 of the node it talks
// to, while that node leads: writes sent without a request id (the SDK
// adds one) keep succeeding, none fails, and each applies exactly once
// though some were in flight when the leader died (the connection broke
// after they left; the SDK sent them again, with the same id, through the
// next endpoint). baldurctl, given the dead node first, does the same.
func TestSDKWritesRideOutTheNodeItTalksTo(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	c := startCluster(t, 3)
	li := c.leader("")
	eps := []string{c.nodes[li].grpc}
	for i, p := range c.nodes {
		if i != li {
			eps = append(eps, p.grpc)
		}
	}
	conn, err := baldur.NewConn(strings.Join(eps, ","))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	em := pb.NewEmergencyServiceClient(conn)

	var (
		mu      sync.Mutex
		acked   = map[string]bool{}
		errs    []error
		slowest time.Duration
		wg      sync.WaitGroup
	)
	stop := make(chan struct{})
	begin := time.Now()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				reason := fmt.Sprintf("w%d-%d", w, n)
				_, err := em.TriggerEmergency(ctx, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Scope: fmt.Sprintf("w%d", w), Reason: reason})
				cancel()
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("write %s at +%v: %w", reason, t0.Sub(begin).Round(time.Millisecond), err))
				} else {
					acked[reason] = true
					slowest = max(slowest, time.Since(t0))
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	leader := c.nodes[li]
	c.kill9(li)
	t.Logf("kill -9 of %s, the leader the connection used, at +%v", leader.id, time.Since(begin).Round(time.Millisecond))
	ni := c.leader(leader.id)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if len(errs) > 0 || len(acked) == 0 {
		t.Fatalf("%d writes succeeded, %d failed; first: %v", len(acked), len(errs), errs[0])
	}
	// Each applied write left one audit record with its reason.
	applied := testcluster.AuditReasons(t, c.nodes[ni].grpc, "emergency.trigger")
	for reason := range acked {
		if applied[reason] != 1 {
			t.Fatalf("acknowledged write %s applied %d times", reason, applied[reason])
		}
	}
	for reason, n := range applied {
		if n != 1 {
			t.Fatalf("write %s applied %d times", reason, n)
		}
	}
	t.Logf("%d writes acknowledged, none failed, each applied once (%d applied); slowest %v", len(acked), len(applied), slowest.Round(time.Millisecond))

	// baldurctl given the dead node first.
	out, err := exec.Command(buildCtl(t), "--addr", strings.Join(eps, ","), "emergency", "trigger", "LEVEL_2", "--reason", "ctl after kill").CombinedOutput()
	if err != nil {
		t.Fatalf("baldurctl with the dead node first: %v\n%s", err, out)
	}
	if applied := testcluster.AuditReasons(t, c.nodes[ni].grpc, "emergency.trigger"); applied["ctl after kill"] != 1 {
		t.Fatalf("baldurctl's write applied %d times", applied["ctl after kill"])
	}
}

// BenchmarkFailoverKill9 is BenchmarkFailover's kill with processes: kill
// -9 of the leader while writers send through the followers; the time to
// the first acknowledged write sent after it (p50, p99 over b.N trials)
// and the share of writes that succeeded. Writes answered with a definite
// failure are checked against the audit trail. Run with -benchtime=20x.
func BenchmarkFailoverKill9(b *testing.B) {
	c := startCluster(b, 3)
	var (
		firsts     []time.Duration
		ok, failed int
		refused    []string
		errs       = map[string]int{}
	)
	li := c.leader("")
	for trial := 0; trial < b.N; trial++ {
		var addrs []string
		for i, p := range c.nodes {
			if i != li {
				addrs = append(addrs, p.grpc)
			}
		}
		r := testcluster.FailoverTrial(b, trial, addrs, func() { c.kill9(li) })
		if r.FirstAck < 0 {
			b.Fatalf("trial %d: no write acknowledged within 15 s of kill -9 (errors %v)", trial, r.Errors)
		}
		firsts = append(firsts, r.FirstAck)
		ok, failed, refused = ok+r.OK, failed+r.Failed, append(refused, r.Refused...)
		for k, v := range r.Errors {
			errs[k] += v
		}
		killed := c.nodes[li]
		c.start(li)
		li = c.leader("")
		// The restarted node caught up before the next trial.
		lv, _ := c.nodes[li].view()
		want, _ := strconv.ParseUint(lv.AppliedIndex, 10, 64)
		if !eventually(20*time.Second, func() bool {
			v, err := killed.view()
			got, _ := strconv.ParseUint(v.AppliedIndex, 10, 64)
			return err == nil && got >= want
		}) {
			b.Fatalf("%s did not catch up after its restart", killed.id)
		}
	}
	applied := testcluster.AuditReasons(b, c.nodes[li].grpc, "emergency.trigger")
	for _, reason := range refused {
		if applied[reason] > 0 {
			b.Fatalf("write %s was answered with a definite failure but applied", reason)
		}
	}
	b.ReportMetric(float64(testcluster.Percentile(firsts, 50).Milliseconds()), "first-ack-p50-ms")
	b.ReportMetric(float64(testcluster.Percentile(firsts, 99).Milliseconds()), "first-ack-p99-ms")
	b.ReportMetric(100*float64(ok)/float64(ok+failed), "writes-ok-%")
	b.ReportMetric(0, "ns/op")
	b.Logf("kill -9: %d trials, first ack after the kill %v..%v; %d writes ok, %d failed %v", b.N,
		testcluster.Percentile(firsts, 0), testcluster.Percentile(firsts, 100), ok, failed, errs)
}
