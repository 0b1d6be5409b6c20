package server_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
)

// BenchmarkWatcherMemory: 200 watchers that never read (gRPC and REST),
// while 300 emergency and breaker changes are applied; reports the heap a
// node (and, in-process, its clients) holds per such watcher. A watcher
// re-reads the state it follows and sends only what changed; a watcher
// that does not read blocks on flow control, so what it holds is bounded
// by the stream window, not by the number of changes.
func BenchmarkWatcherMemory(b *testing.B) {
	for _, via := range []string{"grpc", "rest"} {
		b.Run("via="+via, func(b *testing.B) {
			for range b.N {
				c := testcluster.New(b, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.MaxWatchers, cfg.MaxWatchersPerConn = 100000, 0 }))
				conn := dial(b, c.Leader().GRPCAddr)
				em, circuits := pb.NewEmergencyServiceClient(conn), pb.NewCircuitServiceClient(conn)
				var ms runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&ms)
				base := ms.HeapInuse
				ctx, cancel := context.WithCancel(context.Background())
				const n = 200
				var bodies []io.Closer
				for range n {
					if via == "grpc" {
						if _, err := circuits.WatchCircuits(ctx, &pb.WatchCircuitsRequest{}); err != nil {
							b.Fatal(err)
						}
						continue
					}
					req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+c.Leader().HTTPAddr+"/v1/circuits:watch", nil)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					bodies = append(bodies, resp.Body)
				}
				for i := range 300 {
					em.TriggerEmergency(ctxT(b), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_Value(1 + i%3), Reason: "x"})
					circuits.ReportOutcomes(ctxT(b), &pb.ReportOutcomesRequest{InstanceId: "i", Reports: []*pb.OutcomeReport{{Name: fmt.Sprintf("svc-%d", i), Failures: 1}}})
				}
				time.Sleep(2 * time.Second)
				runtime.GC()
				runtime.ReadMemStats(&ms)
				b.ReportMetric(float64(int64(ms.HeapInuse)-int64(base))/n/1024, "KiB/watcher")
				for _, body := range bodies {
					body.Close()
				}
				cancel()
			}
		})
	}
}
