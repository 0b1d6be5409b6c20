package server_test

import (
	"sort"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
)

// BenchmarkControlWrite measures one emergency trigger end to end on a
// 3-node loopback cluster with fsync on: gRPC → (forward) → Raft commit on a
// quorum → FSM apply in bbolt → response. Reports p50/p99 per op.
func BenchmarkControlWrite(b *testing.B) {
	c := testcluster.New(b, 3)
	for _, via := range []string{"leader", "follower"} {
		b.Run("via="+via, func(b *testing.B) {
			node := c.Leader()
			if via == "follower" {
				node = c.Followers()[0]
			}
			client := emergencyClient(b, node)
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if _, err := client.TriggerEmergency(ctxT(b), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_Value(1 + i%3), Reason: "bench"}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
