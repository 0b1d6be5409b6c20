package baldur_test

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"
)

var errDown = errors.New("dependency down")

func circuits(t *testing.T, addr string) pb.CircuitServiceClient {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewCircuitServiceClient(conn)
}

func endpoints(c *testcluster.Cluster) string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.GRPCAddr)
	}
	return strings.Join(out, ",")
}

// fleet dials n SDK clients, spread over the nodes.
func fleet(t *testing.T, c *testcluster.Cluster, n int) []*baldur.Client {
	var out []*baldur.Client
	for i := 0; i < n; i++ {
		first := c.Nodes[i%len(c.Nodes)].GRPCAddr
		out = append(out, dialSDK(t, first+","+endpoints(c), baldur.WithInstanceID(fmt.Sprintf("i-%02d", i)),
			baldur.WithReportInterval(50*time.Millisecond)))
	}
	return out
}

func setPolicy(t *testing.T, cl pb.CircuitServiceClient, name string, p *pb.CircuitPolicy) {
	t.Helper()
	if _, err := cl.SetPolicy(ctxT(t), &pb.SetPolicyRequest{Name: name, Policy: p}); err != nil {
		t.Fatal(err)
	}
}

func TestFleetTripReachesEveryClient(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	admin := circuits(t, c.Leader().GRPCAddr)
	// Local views must not trip first: the fleet trip is what is measured.
	setPolicy(t, admin, "payments", &pb.CircuitPolicy{FailureThreshold: 1000, FailureRateThreshold: 50, MinimumCalls: 20, WindowSize: 200, RecoveryTimeout: durationpb.New(time.Hour)})
	clients := fleet(t, c, 50)
	for _, cl := range clients {
		waitFleetState(t, cl.Breaker("payments"), baldur.StateClosed)
	}
	// Each client makes one failing call per 20 ms until it is rejected.
	onset := time.Now()
	var wg sync.WaitGroup
	rejectedAt := make([]time.Duration, len(clients))
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := cl.Breaker("payments")
			for time.Since(onset) < 10*time.Second {
				if err := b.Allow(); err != nil {
					var coe *baldur.CircuitOpenError
					if !errors.As(err, &coe) || !coe.Fleet {
						t.Errorf("client %d rejected by %v, want the fleet view", i, err)
					}
					rejectedAt[i] = time.Since(onset)
					return
				}
				b.Record(errDown)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	sort.Slice(rejectedAt, func(i, j int) bool { return rejectedAt[i] < rejectedAt[j] })
	if rejectedAt[0] == 0 {
		t.Fatalf("some client never rejected")
	}
	t.Logf("failure onset → all %d clients rejecting: first %v, median %v, last %v", len(clients), rejectedAt[0], rejectedAt[len(rejectedAt)/2], rejectedAt[len(rejectedAt)-1])
	got, err := admin.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "payments"})
	if err != nil || got.State != pb.CircuitState_OPEN || got.Evidence.Trigger != "failure_rate_threshold_exceeded" || got.Evidence.Reporters < 1 {
		t.Fatalf("breaker after the trip: %v %v", got, err)
	}
}

func TestOneBadInstanceDoesNotTripTheFleet(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	admin := circuits(t, c.Leader().GRPCAddr)
	setPolicy(t, admin, "search", &pb.CircuitPolicy{MinReporters: 3, RecoveryTimeout: durationpb.New(time.Hour)})
	clients := fleet(t, c, 5)
	for _, cl := range clients {
		waitFleetState(t, cl.Breaker("search"), baldur.StateClosed)
	}
	bad := clients[0].Breaker("search")
	for i := 0; i < 50; i++ {
		if bad.Allow() == nil {
			bad.Record(errDown)
		}
		for _, good := range clients[1:] {
			if b := good.Breaker("search"); b.Allow() == nil {
				b.Record(nil)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // several report intervals
	if bad.LocalState() != baldur.StateOpen {
		t.Fatalf("the failing instance's local view is %v, want OPEN", bad.LocalState())
	}
	if err := bad.Allow(); !errors.Is(err, baldur.ErrCircuitOpen) {
		t.Fatalf("failing instance admits calls: %v", err)
	}
	got, _ := admin.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "search"})
	if got.State != pb.CircuitState_CLOSED {
		t.Fatalf("fleet state %v with one bad reporter and min_reporters=3", got.State)
	}
	for _, good := range clients[1:] {
		if err := good.Breaker("search").Allow(); err != nil {
			t.Fatalf("healthy instance rejects: %v", err)
		}
	}
}

func waitFleetState(t *testing.T, b *baldur.Breaker, want baldur.State) {
	t.Helper()
	if !testcluster.Eventually(10*time.Second, func() bool { return b.FleetState() == want }) {
		t.Fatalf("%s: fleet state %v, want %v", b.Name(), b.FleetState(), want)
	}
}
