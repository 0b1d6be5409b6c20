package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

// BenchmarkDLQStoreProcesses: DLQ stores with 1 KiB payloads against a
// cluster of three baldurd processes on loopback, each on its own data dir
// with fsync on, at 1, 16 and 64 concurrent clients. The clients run in the
// benchmark process and share one gRPC connection to the leader, as the
// goroutines of one application share its SDK client; conns=64 gives each
// client its own connection. cpu-µs/store is the CPU of the three nodes and
// the clients per store; logs/batch is the leader's
// baldur_raft_fsm_applyBatchNum (log entries per FSM transaction).
func BenchmarkDLQStoreProcesses(b *testing.B) {
	c := startCluster(b, 3)
	leader := c.nodes[c.leader("")]
	payload, _ := structpb.NewStruct(map[string]any{"order": "o-1", "blob": strings.Repeat("x", 1000)})
	dial := func() pb.DLQServiceClient {
		conn, err := grpc.NewClient(leader.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		return pb.NewDLQServiceClient(conn)
	}
	for _, tc := range []struct{ clients, conns int }{{1, 1}, {16, 1}, {64, 1}, {64, 64}} {
		b.Run(fmt.Sprintf("clients=%d/conns=%d", tc.clients, tc.conns), func(b *testing.B) {
			clients := make([]pb.DLQServiceClient, tc.conns)
			for i := range clients {
				clients[i] = dial()
			}
			logs0, batches0 := promSummary(b, leader.http, "baldur_raft_fsm_applyBatchNum")
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
						_, err := client.StoreEntry(b.Context(), &pb.StoreEntryRequest{Entry: &pb.DLQEntry{
							Id: baldur.NewEntryID(), Domain: "payment", FailureType: "MAX_RETRIES_TIMEOUT", RequestData: payload}})
						if err != nil {
							b.Error(err)
							return
						}
						lat[i] = time.Since(start)
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			cpu := clusterCPU(c) - cpu0
			logs1, batches1 := promSummary(b, leader.http, "baldur_raft_fsm_applyBatchNum")
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "stores/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/store")
			if batches1 > batches0 {
				b.ReportMetric((logs1-logs0)/(batches1-batches0), "logs/batch")
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

// promSummary reads a summary's _sum and _count from a node's /metrics.
func promSummary(b *testing.B, httpAddr, name string) (sum, count float64) {
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for suffix, dst := range map[string]*float64{"_sum": &sum, "_count": &count} {
			if rest, ok := strings.CutPrefix(line, name+suffix+" "); ok {
				*dst, _ = strconv.ParseFloat(rest, 64)
			}
		}
	}
	return sum, count
}
