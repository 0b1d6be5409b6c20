package sdktest_test

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/pgtest"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"github.com/baldurhq/baldurd/server"
	metrics "github.com/hashicorp/go-metrics"
	"google.golang.org/protobuf/types/known/structpb"
)

// BenchmarkDLQStore: stores of entries with a 1 KiB request_data on a
// 3-node cluster (fsync on), from 1, 16 and 64 concurrent callers sent to
// the leader, with the Raft store and the PostgreSQL store. Reports
// stores/s and latency percentiles.
func BenchmarkDLQStore(b *testing.B) {
	// The collector target the baldurd binary runs with (server.TuneGC).
	defer debug.SetGCPercent(debug.SetGCPercent(server.DefaultGCPercent))
	b.Run("store=raft", func(b *testing.B) { benchDLQStore(b, testcluster.New(b, 3)) })
	b.Run("store=postgres", func(b *testing.B) {
		dsn := pgtest.Schema(b, "baldur_bench")
		benchDLQStore(b, testcluster.New(b, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) {
			cfg.DLQStore, cfg.PostgresDSN = "postgres", dsn
		})))
	})
}

func benchDLQStore(b *testing.B, c *testcluster.Cluster) {
	payload, _ := structpb.NewStruct(map[string]any{"order": "o-1", "blob": strings.Repeat("x", 1000)})
	dial := func(b *testing.B, i int) *baldur.DLQ {
		cl, err := baldur.Dial(b.Context(), c.Leader().GRPCAddr, baldur.WithInstanceID(fmt.Sprintf("bench-%d", i)), baldur.WithSpoolDir(b.TempDir(), 10))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cl.Close() })
		return cl.DLQ()
	}
	// clients callers share one SDK client (the goroutines of one
	// application), or each has its own (sdks=64: separate applications).
	for _, tc := range []struct{ clients, sdks int }{{1, 1}, {16, 1}, {64, 1}, {64, 64}} {
		b.Run(fmt.Sprintf("clients=%d/sdks=%d", tc.clients, tc.sdks), func(b *testing.B) {
			// A domain per case, so no case runs into the per-domain limit.
			domain := fmt.Sprintf("bench_%d_%d", tc.clients, tc.sdks)
			sdks := make([]*baldur.DLQ, tc.sdks)
			for i := range sdks {
				sdks[i] = dial(b, i)
			}
			raftMetrics := metrics.NewInmemSink(time.Minute, time.Minute)
			mc := metrics.DefaultConfig("bench")
			mc.EnableHostname, mc.EnableRuntimeMetrics = false, false
			if _, err := metrics.NewGlobal(mc, raftMetrics); err != nil {
				b.Fatal(err)
			}
			leaderHTTP := c.Leader().HTTPAddr
			stores0, groups0 := testcluster.MetricSum(b, leaderHTTP, "baldur_dlq_store_group_size")
			lat := make([]time.Duration, b.N)
			var next atomic.Int64
			var wg sync.WaitGroup
			cpu0 := processCPU()
			b.ResetTimer()
			for w := 0; w < tc.clients; w++ {
				wg.Add(1)
				dlq := sdks[w%len(sdks)]
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						start := time.Now()
						res, err := dlq.Store(b.Context(), &baldur.Entry{Domain: domain, FailureType: "MAX_RETRIES_TIMEOUT", RequestData: payload})
						lat[i] = time.Since(start)
						if err != nil || !res.Created {
							b.Errorf("store: %+v %v", res, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			// CPU of the whole process (3 nodes and the clients) per store:
			// steadier than the rate, which follows this disk's fsync times.
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/store")
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "stores/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			if os.Getenv("BALDUR_BENCH_RAFT_METRICS") != "" {
				schedLatency(b)
				printRaftMetrics(b, raftMetrics)
			}
			// Group commit: stores per Raft entry (the leader's group
			// commit, baldur_dlq_store_group_size) and Raft entries per FSM
			// batch (raft.fsm.applyBatchNum, all three nodes), each batch one
			// bbolt transaction.
			if logs, batches := raftSample(raftMetrics, "bench.raft.fsm.applyBatchNum"); batches > 0 {
				b.ReportMetric(logs/float64(batches), "logs/batch")
			}
			if stores1, groups1 := testcluster.MetricSum(b, leaderHTTP, "baldur_dlq_store_group_size"); groups1 > groups0 {
				b.ReportMetric((stores1-stores0)/(groups1-groups0), "stores/entry")
			}
		})
	}
}

func schedLatency(b *testing.B) {
	s := []rtmetrics.Sample{{Name: "/sched/latencies:seconds"}}
	rtmetrics.Read(s)
	h := s[0].Value.Float64Histogram()
	var total uint64
	for _, c := range h.Counts {
		total += c
	}
	var acc uint64
	for _, q := range []float64{0.5, 0.9, 0.99} {
		acc = 0
		for i, c := range h.Counts {
			acc += c
			if float64(acc) >= q*float64(total) {
				fmt.Fprintf(os.Stderr, "%s sched latency p%.0f <= %.3f ms\n", b.Name(), q*100, h.Buckets[i+1]*1000)
				break
			}
		}
	}
}

// processCPU is the user and system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// printRaftMetrics logs every sample the Raft library recorded in the run
// (count, mean and max, in milliseconds for timings), for finding where a
// round's time goes.
func printRaftMetrics(b *testing.B, sink *metrics.InmemSink) {
	type agg struct{ n, sum, max float64 }
	all := map[string]*agg{}
	for _, iv := range sink.Data() {
		iv.RLock()
		for k, v := range iv.Samples {
			a := all[k]
			if a == nil {
				a = &agg{}
				all[k] = a
			}
			a.n, a.sum, a.max = a.n+float64(v.Count), a.sum+v.Sum, max(a.max, v.Max)
		}
		iv.RUnlock()
	}
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		a := all[k]
		fmt.Fprintf(os.Stderr, "%s N=%d: %-60s n=%-6.0f mean=%8.3f max=%8.3f\n", b.Name(), b.N, k, a.n, a.sum/a.n, a.max)
	}
}

// raftSample sums a go-metrics sample over every interval the sink holds.
func raftSample(sink *metrics.InmemSink, key string) (sum float64, count int) {
	for _, iv := range sink.Data() {
		iv.RLock()
		if v, ok := iv.Samples[key]; ok {
			sum += v.Sum
			count += v.Count
		}
		iv.RUnlock()
	}
	return sum, count
}

// BenchmarkDLQReplay: N PENDING entries on a 3-node cluster replayed by 1
// or 4 SDK workers whose handler succeeds at once; one op is one entry
// going PENDING → REPLAYING → RESOLVED. With batch=1 a worker leases one
// entry per call (two Raft writes per entry); with batch=16 it leases up to
// 16 in one call (one entry) and their completions are committed together.
func BenchmarkDLQReplay(b *testing.B) {
	for _, tc := range []struct{ workers, batch int }{{1, 1}, {4, 1}, {4, 16}} {
		workers := tc.workers
		b.Run(fmt.Sprintf("workers=%d/batch=%d", tc.workers, tc.batch), func(b *testing.B) {
			c := testcluster.New(b, 3)
			client := pb.NewDLQServiceClient(benchConn(b, c.Leader().GRPCAddr))
			for i := 0; i < b.N; i++ {
				if _, err := client.StoreEntry(b.Context(), &pb.StoreEntryRequest{Entry: &pb.DLQEntry{Id: fmt.Sprintf("r-%d", i), Domain: "payment", FailureType: "X"}}); err != nil {
					b.Fatal(err)
				}
			}
			var done atomic.Int64
			b.ResetTimer()
			for w := 0; w < workers; w++ {
				cl, err := baldur.Dial(b.Context(), c.Leader().GRPCAddr, baldur.WithInstanceID(fmt.Sprintf("rw-%d", w)), baldur.WithSpoolDir(b.TempDir(), 10))
				if err != nil {
					b.Fatal(err)
				}
				defer cl.Close()
				cl.DLQ().HandleReplay("payment", func(context.Context, *baldur.Entry, string) error { done.Add(1); return nil },
					baldur.WithReplayPoll(5*time.Millisecond), baldur.WithReplayBatch(tc.batch))
			}
			for {
				st, err := client.GetStats(b.Context(), &pb.GetDLQStatsRequest{Consistency: "stale"})
				if err == nil && st.ByStatus["RESOLVED"] == int64(b.N) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "replays/s")
		})
	}
}
