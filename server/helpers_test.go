package server_test

import (
	"context"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func emergencyClient(t testing.TB, n *testcluster.Node) pb.EmergencyServiceClient {
	return pb.NewEmergencyServiceClient(dial(t, n.GRPCAddr))
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func trigger(t testing.TB, c pb.EmergencyServiceClient, level pb.EmergencyLevel_Value, reason string, d time.Duration) *pb.TriggerEmergencyResponse {
	t.Helper()
	req := &pb.TriggerEmergencyRequest{Level: level, Reason: reason}
	if d > 0 {
		req.Duration = durationpb.New(d)
	}
	resp, err := c.TriggerEmergency(ctxT(t), req)
	if err != nil {
		t.Fatalf("trigger %v: %v", level, err)
	}
	return resp
}

func reasonOf(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason
		}
	}
	return ""
}

func contentHashes(t testing.TB, c *testcluster.Cluster) []string {
	t.Helper()
	var out []string
	for _, n := range c.Nodes {
		if s := n.Store(); s != nil {
			h, err := s.ContentHash()
			if err != nil {
				t.Fatalf("hash %s: %v", n.ID, err)
			}
			out = append(out, h)
		}
	}
	return out
}

func durationOf(d time.Duration) *durationpb.Duration { return durationpb.New(d) }
