package sdktest_test

import (
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// BenchmarkFleetTrip: 100 SDK clients on a 3-node cluster call a
// dependency that starts failing for all of them; one op is the time from
// the onset to every client rejecting. Reports p50/p99 over the ops.
func BenchmarkFleetTrip(b *testing.B) {
	c := testcluster.New(b, 3)
	admin := pb.NewCircuitServiceClient(benchConn(b, c.Leader().GRPCAddr))
	ctx := b.Context()
	// Fleet: 50 consecutive failures across the fleet trip it; each client's
	// local view would need 50 of its own (half a second of calls), so the
	// fleet view acts first.
	if _, err := admin.SetPolicy(ctx, &pb.SetPolicyRequest{Name: "fleet-bench", Policy: &pb.CircuitPolicy{
		FailureThreshold: 50, FailureRateThreshold: proto.Float64(0), RecoveryTimeout: durationpb.New(time.Hour)}}); err != nil {
		b.Fatal(err)
	}
	var clients []*baldur.Client
	for i := 0; i < 100; i++ {
		cl, err := baldur.Dial(ctx, c.Nodes[i%3].GRPCAddr, baldur.WithInstanceID(fmt.Sprintf("b-%03d", i)))
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		clients = append(clients, cl)
	}
	for _, cl := range clients {
		br := cl.Breaker("fleet-bench")
		if !testcluster.Eventually(10*time.Second, func() bool { return br.FleetRevision() > 0 }) {
			b.Fatal("a client never received the breaker's policy")
		}
	}
	var lat []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if _, err := admin.Reset(ctx, &pb.ResetRequest{Name: "fleet-bench", Reason: "next round"}); err != nil {
			b.Fatal(err)
		}
		for _, cl := range clients {
			br := cl.Breaker("fleet-bench")
			br.Record(nil) // clear the local streak from the last round
			if !testcluster.Eventually(10*time.Second, func() bool { return br.Allow() == nil }) {
				b.Fatalf("a client still rejects after the reset: %v (fleet %v, local %v)", br.Allow(), br.FleetState(), br.LocalState())
			}
			br.Record(nil)
		}
		b.StartTimer()
		onset := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var last time.Duration
		for _, cl := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				br := cl.Breaker("fleet-bench")
				for time.Since(onset) < 10*time.Second {
					if br.Allow() != nil {
						mu.Lock()
						last = max(last, time.Since(onset))
						mu.Unlock()
						return
					}
					br.Record(errDown)
					time.Sleep(10 * time.Millisecond)
				}
			}()
		}
		wg.Wait()
		lat = append(lat, last)
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[(len(lat)*99)/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkReportIngest: outcome report batches (10 breakers each) sent in
// parallel to the leader, which merges them into its fleet windows.
func BenchmarkReportIngest(b *testing.B) {
	c := testcluster.New(b, 3)
	conn := benchConn(b, c.Leader().GRPCAddr)
	client := pb.NewCircuitServiceClient(conn)
	batch := &pb.ReportOutcomesRequest{InstanceId: "bench"}
	for i := 0; i < 10; i++ {
		batch.Reports = append(batch.Reports, &pb.OutcomeReport{Name: fmt.Sprintf("ingest-%d", i), Successes: 100, Failures: 1})
	}
	if _, err := client.ReportOutcomes(b.Context(), batch); err != nil { // registers the breakers
		b.Fatal(err)
	}
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(p *testing.PB) {
		for p.Next() {
			if _, err := client.ReportOutcomes(b.Context(), batch); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*len(batch.Reports))/b.Elapsed().Seconds(), "reports/s")
}
