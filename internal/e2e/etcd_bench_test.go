package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/structpb"
)

// BenchmarkBesideEtcd runs baldurd and etcd side by side in one run on this
// machine: three baldurd processes and three etcd 3.4 members (Debian's
// etcd-server), each on its own data dir with fsync on, all on loopback.
//
//   - write=1: one client sending small sequential writes to the leader —
//     an emergency trigger (baldurd) against a put of a 16-byte value (etcd);
//   - write=64x1KiB: 64 concurrent writers of 1 KiB — DLQ stores through one
//     SDK client (baldurd) against puts over one gRPC connection (etcd).
//
// etcd is driven over its own gRPC API (etcdserverpb.KV/Put) with a raw
// codec, so the comparison needs no etcd client library: the request is
// the two protobuf fields a put needs, the reply is read as bytes.
func BenchmarkBesideEtcd(b *testing.B) {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		b.Fatal("etcd not found: apt-get install etcd-server (Debian ships 3.4)")
	}
	bald := startCluster(b, 3)
	leader := bald.nodes[bald.leader("")]
	etcd := startEtcd(b, etcdBin, 3)
	etcdLeader := etcd.leader(b)

	b.Run("write=1/etcd", func(b *testing.B) {
		conn := etcdConn(b, etcdLeader)
		key, value := []byte("bench/control"), []byte("0123456789abcdef")
		sequential(b, func(ctx context.Context) error { return etcdPut(ctx, conn, key, value) })
	})
	b.Run("write=1/baldurd", func(b *testing.B) {
		conn, err := baldur.NewConn(leader.grpc)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		client := pb.NewEmergencyServiceClient(conn)
		i := 0
		before := raftTimings(b, leader.http)
		sequential(b, func(ctx context.Context) error {
			i++
			_, err := client.TriggerEmergency(ctx, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_Value(1 + i%3), Reason: "bench"})
			return err
		})
		// Where a write's time goes, from the leader's Raft metrics (means
		// over this run, ms).
		after := raftTimings(b, leader.http)
		for _, m := range raftTimingMetrics {
			if n := after[m.name][1] - before[m.name][1]; n > 0 {
				b.ReportMetric((after[m.name][0]-before[m.name][0])/n, m.unit)
			}
		}
	})

	blob := strings.Repeat("x", 1000)
	b.Run("write=64x1KiB/etcd", func(b *testing.B) {
		conn := etcdConn(b, etcdLeader)
		value := []byte(fmt.Sprintf(`{"order":"o-1","blob":%q}`, blob))
		var n atomic.Int64
		concurrent(b, 64, func(ctx context.Context) error {
			return etcdPut(ctx, conn, fmt.Appendf(nil, "bench/dlq/%d", n.Add(1)), value)
		})
	})
	b.Run("write=64x1KiB/baldurd", func(b *testing.B) {
		cl, err := baldur.Dial(b.Context(), leader.grpc, baldur.WithInstanceID("bench"), baldur.WithSpoolDir(b.TempDir(), 10))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cl.Close() })
		payload, _ := structpb.NewStruct(map[string]any{"order": "o-1", "blob": blob})
		domain := fmt.Sprintf("beside_etcd_%d", time.Now().UnixNano())
		concurrent(b, 64, func(ctx context.Context) error {
			res, err := cl.DLQ().Store(ctx, &baldur.Entry{Domain: domain, FailureType: "MAX_RETRIES_TIMEOUT", RequestData: payload})
			if err == nil && !res.Created {
				err = fmt.Errorf("not stored: %+v", res)
			}
			return err
		})
	})
}

// raftTimingMetrics are the leader's Raft timings BenchmarkBesideEtcd
// reports for a control write: its own log append and fsync before it
// replicates (dispatchLog), an AppendEntries round trip to a follower (its
// fsync included), proposal to commit, and the FSM transaction.
var raftTimingMetrics = []struct{ name, unit string }{
	{"baldur_raft_leader_dispatchLog", "leader-fsync-ms"},
	{"baldur_raft_replication_appendEntries_rpc", "append-rtt-ms"},
	{"baldur_raft_commitTime", "commit-ms"},
	{"baldur_raft_fsm_applyBatch", "fsm-ms"},
}

func raftTimings(b *testing.B, httpAddr string) map[string][2]float64 {
	out := map[string][2]float64{}
	for _, m := range raftTimingMetrics {
		sum, count := testcluster.MetricTotals(b, httpAddr, m.name)
		out[m.name] = [2]float64{sum, count}
	}
	return out
}

// sequential runs op b.N times in a row and reports the latency quantiles.
func sequential(b *testing.B, op func(context.Context) error) {
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if err := op(b.Context()); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(start)
	}
	b.StopTimer()
	reportLatency(b, lat)
}

// concurrent runs op b.N times from workers goroutines and reports the
// throughput and latency quantiles.
func concurrent(b *testing.B, workers int, op func(context.Context) error) {
	lat := make([]time.Duration, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				start := time.Now()
				if err := op(b.Context()); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(start)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
	reportLatency(b, lat)
}

func reportLatency(b *testing.B, lat []time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

type etcdMember struct {
	name, client, peer string
	cmd                *exec.Cmd
}

type etcdCluster struct{ members []*etcdMember }

// startEtcd starts an etcd cluster of n members on loopback ports.
func startEtcd(b *testing.B, bin string, n int) *etcdCluster {
	c := &etcdCluster{}
	var initial []string
	for i := range n {
		m := &etcdMember{name: fmt.Sprintf("e%d", i), client: "http://" + freePort(b), peer: "http://" + freePort(b)}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peer)
	}
	for _, m := range c.members {
		dir := b.TempDir()
		logf, err := os.Create(filepath.Join(dir, "etcd.log"))
		if err != nil {
			b.Fatal(err)
		}
		m.cmd = exec.Command(bin, "--name", m.name, "--data-dir", filepath.Join(dir, "data"),
			"--listen-client-urls", m.client, "--advertise-client-urls", m.client,
			"--listen-peer-urls", m.peer, "--initial-advertise-peer-urls", m.peer,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new", "--initial-cluster-token", "bench")
		m.cmd.Stdout, m.cmd.Stderr = logf, logf
		if err := m.cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { m.cmd.Process.Kill(); m.cmd.Wait(); logf.Close() })
	}
	return c
}

// leader returns the client address of the member etcdctl reports leading.
func (c *etcdCluster) leader(b *testing.B) string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.client)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		out, err := exec.Command("etcdctl", "--endpoints", strings.Join(eps, ","), "endpoint", "status", "-w", "json").Output()
		if err == nil {
			var st []struct {
				Endpoint string
				Status   struct {
					Header struct {
						MemberID uint64 `json:"member_id"`
					}
					Leader uint64
				}
			}
			if json.Unmarshal(out, &st) == nil {
				for _, s := range st {
					if s.Status.Leader != 0 && s.Status.Header.MemberID == s.Status.Leader {
						return strings.TrimPrefix(s.Endpoint, "http://")
					}
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.Fatal("etcd elected no leader within 30s")
	return ""
}

// rawCodec passes protobuf bytes through unchanged.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append((*v.(*[]byte))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

var _ encoding.Codec = rawCodec{}

func etcdConn(b *testing.B, addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

// etcdPut sends etcdserverpb.PutRequest{key: 1, value: 2} to KV/Put.
func etcdPut(ctx context.Context, conn *grpc.ClientConn, key, value []byte) error {
	req := protowire.AppendTag(nil, 1, protowire.BytesType)
	req = protowire.AppendBytes(req, key)
	req = protowire.AppendTag(req, 2, protowire.BytesType)
	req = protowire.AppendBytes(req, value)
	var resp []byte
	return conn.Invoke(ctx, "/etcdserverpb.KV/Put", &req, &resp)
}
