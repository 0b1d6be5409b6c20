package sdktest_test

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func benchConn(b *testing.B, addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

func dialConn(t *testing.T, addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func admin(t *testing.T, addr string) pb.EmergencyServiceClient {
	return pb.NewEmergencyServiceClient(dialConn(t, addr))
}

func dialSDK(t *testing.T, endpoints string, opts ...baldur.Option) *baldur.Client {
	t.Helper()
	c, err := baldur.Dial(ctxT(t), endpoints, append([]baldur.Option{baldur.WithBackoff(20*time.Millisecond, 200*time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.WaitReady(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	return c
}

func waitLevel(c *baldur.Client, want baldur.Level, timeout time.Duration) (time.Duration, bool) {
	start := time.Now()
	for time.Since(start) < timeout {
		if c.Emergency().Level() == want {
			return time.Since(start), true
		}
		time.Sleep(100 * time.Microsecond)
	}
	return timeout, false
}

func TestSDKSeesLevelChangesQuickly(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	sdk := dialSDK(t, c.Followers()[0].GRPCAddr)
	writer := admin(t, c.Leader().GRPCAddr)
	var lags []time.Duration
	for i := 0; i < 20; i++ {
		want := baldur.Level(1 + i%3)
		if _, err := writer.TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_Value(want), Reason: "propagation"}); err != nil {
			t.Fatal(err)
		}
		// Measured from the write's acknowledgement.
		lag, ok := waitLevel(sdk, want, 5*time.Second)
		if !ok {
			t.Fatalf("change %d (%v) not seen within 5s", i, want)
		}
		lags = append(lags, lag)
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	t.Logf("ack → SDK sees level: median %v, max %v over %d changes", lags[len(lags)/2], lags[len(lags)-1], len(lags))
	if lags[len(lags)/2] > 100*time.Millisecond {
		t.Fatalf("median propagation %v exceeds 100ms", lags[len(lags)/2])
	}
}

func TestSDKReconnectsToAnotherNodeAndResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	// Connect to a follower first so killing it leaves the leader in place.
	first := c.Followers()[0]
	var endpoints []string
	endpoints = append(endpoints, first.GRPCAddr)
	for _, n := range c.Nodes {
		if n != first {
			endpoints = append(endpoints, n.GRPCAddr)
		}
	}
	sdk := dialSDK(t, strings.Join(endpoints, ","))
	writer := admin(t, c.Leader().GRPCAddr)
	if _, err := writer.TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_1, Reason: "before"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := waitLevel(sdk, baldur.Level1, 5*time.Second); !ok {
		t.Fatal("level 1 not seen")
	}
	revBefore := sdk.Emergency().Revision()
	for i, n := range c.Nodes {
		if n == first {
			c.Kill(i)
		}
	}
	if _, err := writer.TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_3, Reason: "after"}); err != nil {
		t.Fatal(err)
	}
	lag, ok := waitLevel(sdk, baldur.Level3, 10*time.Second)
	if !ok {
		t.Fatalf("level 3 not seen after the SDK's node died (stats %+v)", sdk.Stats())
	}
	st := sdk.Stats()
	t.Logf("recovered in %v after the node died; stats %+v", lag, st)
	if st.Reconnects < 1 {
		t.Fatalf("stats %+v: no reconnect recorded", st)
	}
	if st.Snapshots != 1 {
		t.Fatalf("stats %+v: want exactly one snapshot (the stream resumed from revision %d)", st, revBefore)
	}
	if sdk.Emergency().Revision() <= revBefore {
		t.Fatalf("revision did not advance: %d → %d", revBefore, sdk.Emergency().Revision())
	}
}

func TestSDKFailsStaticWhenTheClusterIsGone(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	sdk := dialSDK(t, c.Nodes[0].GRPCAddr, baldur.WithStaleAfter(300*time.Millisecond))
	if _, err := admin(t, c.Nodes[0].GRPCAddr).TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_3, Reason: "outage"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := waitLevel(sdk, baldur.Level3, 5*time.Second); !ok {
		t.Fatal("level 3 not seen")
	}
	c.Kill(0)
	if !testcluster.Eventually(5*time.Second, sdk.Emergency().Stale) {
		t.Fatal("state never reported stale")
	}
	var worst time.Duration
	for i := 0; i < 10000; i++ {
		start := time.Now()
		lvl := sdk.Emergency().Level()
		admitted := sdk.Emergency().Admit(baldur.TierStandard)
		worst = max(worst, time.Since(start))
		if lvl != baldur.Level3 || admitted {
			t.Fatalf("while disconnected: level %v, standard admitted %v; want LEVEL_3 and shed", lvl, admitted)
		}
	}
	t.Logf("slowest Level+Admit while disconnected: %v", worst)
}
