package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/tlsconf"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
)

// BenchmarkTLS measures what mutual TLS costs, in one run: a plaintext and
// an mTLS cluster of three processes each (fsync on, loopback), a control
// write from one client to the leader (p50), DLQ stores of 1 KiB from 64
// callers through one SDK client (throughput), and the cost of a new TLS
// connection (handshake with a client certificate, one call).
func BenchmarkTLS(b *testing.B) {
	dir := b.TempDir()
	if _, err := tlsconf.Init(tlsconf.InitOptions{Dir: dir, Nodes: []string{"n1", "n2", "n3"}, Hosts: []string{"127.0.0.1"}}); err != nil {
		b.Fatal(err)
	}
	cfg, err := baldur.TLSConfig(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem"))
	if err != nil {
		b.Fatal(err)
	}
	clusters := map[string]struct {
		c    *cluster
		dial []grpc.DialOption
	}{
		"plaintext": {startCluster(b, 3), nil},
		"mtls":      {startClusterWith(b, 3, tlsFlags(dir)), []grpc.DialOption{baldur.TLSDialOption(cfg)}},
	}
	blob := strings.Repeat("x", 1000)
	for _, mode := range []string{"plaintext", "mtls"} {
		cl := clusters[mode]
		conn, err := baldur.NewConn(cl.c.nodes[0].grpc+","+cl.c.nodes[1].grpc+","+cl.c.nodes[2].grpc, cl.dial...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { conn.Close() })
		leaderIdx := waitLeaderOver(b, cl.c, conn)
		leader := cl.c.nodes[leaderIdx]
		lconn, err := baldur.NewConn(leader.grpc, cl.dial...)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { lconn.Close() })
		b.Run("write=1/"+mode, func(b *testing.B) {
			em := pb.NewEmergencyServiceClient(lconn)
			i := 0
			sequential(b, func(ctx context.Context) error {
				i++
				_, err := em.TriggerEmergency(ctx, &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_Value(1 + i%3), Reason: "bench"})
				return err
			})
		})
		b.Run("dlq=64x1KiB/"+mode, func(b *testing.B) {
			opts := []baldur.Option{baldur.WithSpoolDir(b.TempDir(), 10)}
			if cl.dial != nil {
				opts = append(opts, baldur.WithTLS(cfg))
			}
			sdk, err := baldur.Dial(b.Context(), leader.grpc, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer sdk.Close()
			payload, _ := structpb.NewStruct(map[string]any{"order": "o-1", "blob": blob})
			domain := fmt.Sprintf("tls_%s_%d", mode, time.Now().UnixNano())
			concurrent(b, 64, func(ctx context.Context) error {
				_, err := sdk.DLQ().Store(ctx, &baldur.Entry{Domain: domain, FailureType: "X", RequestData: payload})
				return err
			})
		})
		if mode == "mtls" {
			b.Run("new-connection/mtls", func(b *testing.B) {
				for range b.N {
					tc, err := tls.Dial("tcp", leader.grpc, &tls.Config{RootCAs: cfg.RootCAs, Certificates: cfg.Certificates, ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
					if err != nil {
						b.Fatal(err)
					}
					tc.Close()
				}
			})
		}
	}
}

func waitLeaderOver(b *testing.B, c *cluster, conn *grpc.ClientConn) int {
	var idx int
	if !eventually(20*time.Second, func() bool {
		cl, err := pb.NewClusterServiceClient(conn).GetCluster(b.Context(), &pb.GetClusterRequest{})
		if err != nil || cl.LeaderId == "" {
			return false
		}
		for i, p := range c.nodes {
			if p.id == cl.LeaderId {
				idx = i
				return true
			}
		}
		return false
	}) {
		b.Fatal("no leader")
	}
	return idx
}
