package server_test

import (
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/testcluster"
)

// BenchmarkFailover measures what writers sending through the followers
// see when the leader is cut off (partition) or stopped abruptly (kill):
// the time from the fault to the first acknowledgement of a write sent
// after it (p50, p99 over b.N trials), and the share of writes, each with
// a 5 s deadline, that succeeded. Writes answered with a definite failure
// are checked against the audit trail: none may have applied. Run with
// -benchtime=20x for 20 trials.
func BenchmarkFailover(b *testing.B) {
	for _, fault := range []string{"partition", "kill"} {
		b.Run(fault, func(b *testing.B) {
			c := testcluster.New(b, 3)
			var (
				firsts     []time.Duration
				ok, failed int
				refused    []string
				errs       = map[string]int{}
				leader     = c.Nodes[0]
			)
			for trial := 0; trial < b.N; trial++ {
				li := c.LeaderIndex()
				var addrs []string
				var rest []int
				for i, n := range c.Nodes {
					if i != li {
						addrs, rest = append(addrs, n.GRPCAddr), append(rest, i)
					}
				}
				r := testcluster.FailoverTrial(b, trial, addrs, func() {
					if fault == "kill" {
						c.Kill(li)
					} else {
						c.Partition([]int{li}, rest)
					}
				})
				if r.FirstAck < 0 {
					b.Fatalf("trial %d: no write acknowledged within 15 s of the %s (errors %v)", trial, fault, r.Errors)
				}
				firsts = append(firsts, r.FirstAck)
				ok, failed, refused = ok+r.OK, failed+r.Failed, append(refused, r.Refused...)
				for k, v := range r.Errors {
					errs[k] += v
				}
				if fault == "kill" {
					c.Restart(li)
				} else {
					c.Heal()
				}
				leader = c.WaitForLeader(10 * time.Second)
				c.WaitForApplied(leader.Store().AppliedIndex(), 10*time.Second)
			}
			applied := testcluster.AuditReasons(b, leader.GRPCAddr, "emergency.trigger")
			for _, reason := range refused {
				if applied[reason] > 0 {
					b.Fatalf("write %s was answered with a definite failure but applied", reason)
				}
			}
			share := 100 * float64(ok) / float64(ok+failed)
			b.ReportMetric(float64(testcluster.Percentile(firsts, 50).Milliseconds()), "first-ack-p50-ms")
			b.ReportMetric(float64(testcluster.Percentile(firsts, 99).Milliseconds()), "first-ack-p99-ms")
			b.ReportMetric(share, "writes-ok-%")
			b.ReportMetric(0, "ns/op")
			b.Logf("%s: %d trials, first ack after the fault %v..%v; %d writes ok, %d failed %v", fault, b.N,
				testcluster.Percentile(firsts, 0), testcluster.Percentile(firsts, 100), ok, failed, errs)
		})
	}
}
