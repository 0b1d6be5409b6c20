package baldur

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"google.golang.org/grpc"
)

// oldMember serves ReportOutcomes only, as a member from before
// StreamOutcomes does (its stream answers UNIMPLEMENTED).
type oldMember struct {
	pb.UnimplementedCircuitServiceServer
	mu      sync.Mutex
	batches []*pb.ReportOutcomesRequest
}

func (m *oldMember) ReportOutcomes(_ context.Context, req *pb.ReportOutcomesRequest) (*pb.ReportOutcomesResponse, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batches = append(m.batches, req)
	return &pb.ReportOutcomesResponse{}, nil
}

func (m *oldMember) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.batches)
}

// Against a member without the report stream the SDK falls back to one
// call per batch and loses nothing: the batch the stream could not carry
// is the first call's.
func TestReportsFallBackToCallsOnAnOlderMember(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	m := &oldMember{}
	pb.RegisterCircuitServiceServer(srv, m)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	c, err := Dial(context.Background(), lis.Addr().String(), WithInstanceID("i-old"),
		WithReportInterval(50*time.Millisecond), WithIdleReportInterval(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	b := c.Breaker("svc")
	b.Record(errors.New("down"))
	deadline := time.Now().Add(5 * time.Second)
	for m.count() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	b.Record(nil)
	for m.count() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.batches) < 2 {
		t.Fatalf("%d batches by call, want 2", len(m.batches))
	}
	if r := m.batches[0].Reports; len(r) != 1 || r[0].Name != "svc" || r[0].Failures != 1 {
		t.Fatalf("first batch: %v", m.batches[0])
	}
	if r := m.batches[1].Reports; len(r) != 1 || r[0].Successes != 1 || r[0].Failures != 0 {
		t.Fatalf("second batch: %v", m.batches[1])
	}
}
