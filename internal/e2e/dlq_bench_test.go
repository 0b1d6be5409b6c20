package e2e

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"google.golang.org/protobuf/types/known/structpb"
)

// BenchmarkDLQStoreProcesses: DLQ stores with 1 KiB payloads against a
// cluster of three baldurd processes on loopback, each on its own data dir
// with fsync on, at 1, 16 and 64 concurrent clients. The clients run in the
// benchmark process and store through one SDK client, as the goroutines
// of one application do (sdks=1), or through an SDK client each, as
// separate applications would (sdks=64). cpu-µs/store is the CPU of the three nodes and
// the clients per store; logs/batch is the leader's
// baldur_raft_fsm_applyBatchNum (log entries per FSM transaction) and
// stores/entry its baldur_dlq_store_group_size (the leader's group commit).
func BenchmarkDLQStoreProcesses(b *testing.B) {
	c := startCluster(b, 3)
	leader := c.nodes[c.leader("")]
	payload, _ := structpb.NewStruct(map[string]any{"order": "o-1", "blob": strings.Repeat("x", 1000)})
	dial := func(b *testing.B, i int) *baldur.DLQ {
		cl, err := baldur.Dial(b.Context(), leader.grpc, baldur.WithInstanceID(fmt.Sprintf("bench-%d", i)), baldur.WithSpoolDir(b.TempDir(), 10))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cl.Close() })
		return cl.DLQ()
	}
	for _, tc := range []struct{ clients, sdks int }{{1, 1}, {16, 1}, {64, 1}, {64, 64}} {
		b.Run(fmt.Sprintf("clients=%d/sdks=%d", tc.clients, tc.sdks), func(b *testing.B) {
			// A domain per case, so no case runs into the per-domain limit.
			domain := fmt.Sprintf("bench_%d_%d", tc.clients, tc.sdks)
			clients := make([]*baldur.DLQ, tc.sdks)
			for i := range clients {
				clients[i] = dial(b, i)
			}
			logs0, batches0 := testcluster.MetricSum(b, leader.http, "baldur_raft_fsm_applyBatchNum")
			stores0, groups0 := testcluster.MetricSum(b, leader.http, "baldur_dlq_store_group_size")
			cpu0 := clusterCPU(c)
			lat := make([]time.Duration, b.N)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := 0; w < tc.clients; w++ {
				client := clients[w%len(clients)]
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(b.N) {
							return
						}
						start := time.Now()
						res, err := client.Store(b.Context(), &baldur.Entry{Domain: domain, FailureType: "MAX_RETRIES_TIMEOUT", RequestData: payload})
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
			cpu := clusterCPU(c) - cpu0
			logs1, batches1 := testcluster.MetricSum(b, leader.http, "baldur_raft_fsm_applyBatchNum")
			stores1, groups1 := testcluster.MetricSum(b, leader.http, "baldur_dlq_store_group_size")
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "stores/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/store")
			if batches1 > batches0 {
				b.ReportMetric((logs1-logs0)/(batches1-batches0), "logs/batch")
			}
			if groups1 > groups0 {
				b.ReportMetric((stores1-stores0)/(groups1-groups0), "stores/entry")
			}
		})
	}
}

// clusterCPU is the user and system CPU used so far by the cluster's
// processes and by this one.
func clusterCPU(c *cluster) time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	total := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	tick := time.Second / 100 // USER_HZ
	for _, p := range c.nodes {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
		if err != nil {
			continue
		}
		// Fields after the command name (which may hold spaces): state is 3rd,
		// utime the 14th and stime the 15th of the whole line.
		f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		total += time.Duration(ut+st) * tick
	}
	return total
}
