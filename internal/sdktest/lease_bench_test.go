package sdktest_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"google.golang.org/protobuf/types/known/durationpb"
)

// BenchmarkLeases measures acquire and keepalive throughput on a 3-node
// cluster (each a Raft write with fsync), 16 parallel callers on distinct
// resources, sent to the leader.
func BenchmarkLeases(b *testing.B) {
	c := testcluster.New(b, 3)
	client := pb.NewCoordinationServiceClient(benchConn(b, c.Leader().GRPCAddr))
	var n atomic.Int64
	b.Run("acquire", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(p *testing.PB) {
			for p.Next() {
				i := n.Add(1)
				if _, err := client.AcquireLease(b.Context(), &pb.AcquireLeaseRequest{Name: fmt.Sprintf("bench-%d", i), Holder: "bench", Ttl: durationpb.New(time.Minute)}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acquires/s")
	})
	b.Run("keepalive", func(b *testing.B) {
		var ids []*pb.Lease
		for i := 0; i < 64; i++ {
			r, err := client.AcquireLease(b.Context(), &pb.AcquireLeaseRequest{Name: fmt.Sprintf("ka-%d-%d", b.N, i), Holder: "bench", Ttl: durationpb.New(time.Minute)})
			if err != nil {
				b.Fatal(err)
			}
			ids = append(ids, r.Lease)
		}
		var k atomic.Int64
		b.ResetTimer()
		b.SetParallelism(8)
		b.RunParallel(func(p *testing.PB) {
			for p.Next() {
				l := ids[k.Add(1)%int64(len(ids))]
				if _, err := client.KeepAliveLease(b.Context(), &pb.KeepAliveLeaseRequest{Id: l.Id, Name: l.Name}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "keepalives/s")
	})
}
