package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
)

// fanoutWatchers is how many watch streams BenchmarkWatchFanout opens
// (BALDUR_BENCH_WATCHERS, default 1,000), each on its own connection.
func fanoutWatchers(b *testing.B) int {
	if v := os.Getenv("BALDUR_BENCH_WATCHERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("BALDUR_BENCH_WATCHERS=%q", v)
		}
		return n
	}
	return 1000
}

// BenchmarkWatchFanout sends one update to N watchers (one gRPC connection
// each) on a follower of a 3-member cluster, baldurd beside etcd 3.4 in one
// run: an emergency trigger watched with WatchEmergency against a put
// watched with etcd's Watch. Each side's watchers connect as its client
// library does: baldurd's with the SDK's connection (baldur.NewConn: fixed
// flow-control windows, so no BDP pings), etcd's with gRPC's defaults, as
// clientv3 does. Each iteration is one update, written to the
// leader; the latency is from the write's send to the moment the last
// watcher received it (p50, p99 over b.N updates). Also reported, for the
// watching member: its RSS per watcher (its RSS with the watchers open,
// less its RSS before them, over N) and its CPU time per update (the
// 50 ms pauses between updates included: idle work counts too).
func BenchmarkWatchFanout(b *testing.B) {
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		b.Fatal("etcd not found: apt-get install etcd-server (Debian ships 3.4)")
	}
	n := fanoutWatchers(b)
	bald := startCluster(b, 3)
	li := bald.leader("")
	leader, watched := bald.nodes[li], bald.nodes[(li+1)%3]
	etcd := startEtcd(b, etcdBin, 3)
	etcdLeader := etcd.leader(b)
	var etcdWatched *etcdMember
	for _, m := range etcd.members {
		if "http://"+etcdLeader != m.client {
			etcdWatched = m
			break
		}
	}

	b.Run(fmt.Sprintf("watchers=%d/etcd", n), func(b *testing.B) {
		addr := etcdWatched.client[len("http://"):]
		before := procRSS(b, etcdWatched.cmd.Process.Pid)
		key := []byte("bench/fanout")
		recv := make(chan time.Time, n)
		for range n {
			conn := etcdConn(b, addr)
			stream, err := conn.NewStream(b.Context(), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/etcdserverpb.Watch/Watch")
			if err != nil {
				b.Fatal(err)
			}
			create := protowire.AppendTag(nil, 1, protowire.BytesType)
			create = protowire.AppendBytes(create, protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), key))
			if err := stream.SendMsg(&create); err != nil {
				b.Fatal(err)
			}
			var resp []byte
			if err := stream.RecvMsg(&resp); err != nil { // created
				b.Fatal(err)
			}
			go func() {
				for {
					var resp []byte
					if stream.RecvMsg(&resp) != nil {
						return
					}
					if hasField(resp, 11) { // events
						recv <- time.Now()
					}
				}
			}()
		}
		rss := procRSS(b, etcdWatched.cmd.Process.Pid)
		conn := etcdConn(b, etcdLeader)
		fanout(b, n, recv, etcdWatched.cmd.Process.Pid, func(i int) error {
			return etcdPut(b.Context(), conn, key, fmt.Appendf(nil, "v%d", i))
		})
		b.ReportMetric(float64(rss-before)/float64(n)/1024, "KiB/watcher")
	})

	b.Run(fmt.Sprintf("watchers=%d/baldurd", n), func(b *testing.B) {
		before := procRSS(b, watched.cmd.Process.Pid)
		recv := make(chan time.Time, n)
		for range n {
			conn, err := baldur.NewConn(watched.grpc) // as the SDK connects
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { conn.Close() })
			stream, err := pb.NewEmergencyServiceClient(conn).WatchEmergency(b.Context(), &pb.WatchEmergencyRequest{Scope: "fanout"})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil { // the snapshot
				b.Fatal(err)
			}
			go func() {
				for {
					msg, err := stream.Recv()
					if err != nil {
						return
					}
					if len(msg.States) > 0 {
						recv <- time.Now()
					}
				}
			}()
		}
		rss := procRSS(b, watched.cmd.Process.Pid)
		conn, err := grpc.NewClient(leader.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		em := pb.NewEmergencyServiceClient(conn)
		fanout(b, n, recv, watched.cmd.Process.Pid, func(i int) error {
			_, err := em.TriggerEmergency(b.Context(), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_Value(1 + i%3), Scope: "fanout", Reason: "fan-out"})
			return err
		})
		b.ReportMetric(float64(rss-before)/float64(n)/1024, "KiB/watcher")
	})
}

// fanout runs b.N updates one after another; each waits until all n
// watchers reported receiving it and records send → last receipt. It
// reports the watched member's CPU time per update (pid).
func fanout(b *testing.B, n int, recv <-chan time.Time, pid int, write func(i int) error) {
	lat := make([]time.Duration, b.N)
	cpu0 := procCPU(b, pid)
	b.ResetTimer()
	for i := range b.N {
		start := time.Now()
		if err := write(i); err != nil {
			b.Fatal(err)
		}
		var last time.Time
		for range n {
			select {
			case t := <-recv:
				last = t
			case <-time.After(30 * time.Second):
				b.Fatalf("update %d: not every watcher received it within 30 s", i)
			}
		}
		lat[i] = last.Sub(start)
		time.Sleep(50 * time.Millisecond) // let the fan-out settle
	}
	b.StopTimer()
	reportLatency(b, lat)
	b.ReportMetric(float64((procCPU(b, pid)-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/update")
}

// hasField reports whether the protobuf message m has field num at its top
// level.
func hasField(m []byte, num protowire.Number) bool {
	for len(m) > 0 {
		n, typ, l := protowire.ConsumeTag(m)
		if l < 0 {
			return false
		}
		if n == num {
			return true
		}
		m = m[l:]
		l = protowire.ConsumeFieldValue(n, typ, m)
		if l < 0 {
			return false
		}
		m = m[l:]
	}
	return false
}
