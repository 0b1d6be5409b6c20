package server_test

import (
	"errors"
	"io"
	"testing"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestFollowerRelaysLeaderOnlyStreams: a leader-only streaming call made on
// a follower is relayed to the leader whole, and the leader's answer, an
// error included, comes back unchanged.
func TestFollowerRelaysLeaderOnlyStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	f := c.Followers()[0]
	follower := pb.NewDLQServiceClient(dial(t, f.GRPCAddr))
	forwarded := func() float64 { return testcluster.MetricValue(t, f.HTTPAddr, "baldur_forwarded_writes_total") }
	before := forwarded()

	// Refused by the leader's validation: the reason and field come back.
	stream, err := follower.ReplayBatch(ctxT(t), &pb.ReplayBatchRequest{Domain: "payment", Redrive: true})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || reasonOf(err) != "REASON_REQUIRED" {
		t.Fatalf("redrive without reason through a follower: %v (reason %q), want INVALID_ARGUMENT REASON_REQUIRED", err, reasonOf(err))
	}

	// Nothing to replay: the leader's progress stream ends cleanly.
	stream, err = follower.ReplayBatch(ctxT(t), &pb.ReplayBatchRequest{Domain: "empty", MaxItems: 10})
	if err != nil {
		t.Fatal(err)
	}
	for {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("relayed batch replay: %v", err)
		}
		if p.TotalCandidates != 0 {
			t.Fatalf("progress %v for an empty domain", p)
		}
	}
	if n := forwarded() - before; n != 2 {
		t.Fatalf("the follower forwarded %v calls, want 2 (both relayed to the leader)", n)
	}
}
