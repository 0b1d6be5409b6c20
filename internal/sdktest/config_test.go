package sdktest_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

func setSection(t *testing.T, cl pb.ConfigServiceClient, section string, values map[string]any, expected uint64) {
	t.Helper()
	v, err := structpb.NewStruct(values)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.UpdateConfig(ctxT(t), &pb.UpdateConfigRequest{Section: section, Values: v, ExpectedVersion: proto.Uint64(expected), Reason: "test"}); err != nil {
		t.Fatalf("set %s: %v", section, err)
	}
}

func waitVersion(t *testing.T, c *baldur.Client, section string, v uint64) {
	t.Helper()
	if !testcluster.Eventually(10*time.Second, func() bool { return c.Config().Version(section) == v }) {
		t.Fatalf("the SDK never received %s version %d (has %d)", section, v, c.Config().Version(section))
	}
}

// Flags and retry defaults reach SDKs on their watch without a restart,
// the same keys are in on every instance, and the last values stay in
// force while the cluster is gone.
func TestRuntimeConfigReachesTheSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := testcluster.New(t, 3)
	leader := c.WaitForLeader(10 * time.Second)
	var clients []*baldur.Client
	for _, n := range c.Nodes {
		clients = append(clients, dialSDK(t, n.GRPCAddr))
	}
	if clients[0].Config().Flag("new-checkout").Enabled("user-1") || clients[0].Config().Flag("new-checkout").Exists() {
		t.Fatal("a flag the cluster does not have is on")
	}
	cfg := pb.NewConfigServiceClient(dialConn(t, leader.GRPCAddr))
	setSection(t, cfg, "flags", map[string]any{
		"new-checkout": map[string]any{"enabled": true, "percentage": 10, "value": "v2"},
		"dark-mode":    map[string]any{"enabled": false},
	}, 0)
	for _, cl := range clients {
		waitVersion(t, cl, "flags", 1)
	}
	in := 0
	const keys = 10000
	for i := range keys {
		key := fmt.Sprintf("user-%d", i)
		got := clients[0].Config().Flag("new-checkout").Enabled(key)
		for _, other := range clients[1:] {
			if other.Config().Flag("new-checkout").Enabled(key) != got {
				t.Fatalf("key %s is in on one instance and out on another", key)
			}
		}
		if got {
			in++
		}
	}
	if share := float64(in) / keys * 100; math.Abs(share-10) > 1 {
		t.Fatalf("%.2f%% of keys in at 10%%, want 10 ± 1", share)
	}
	if f := clients[0].Config().Flag("new-checkout"); f.Value() != "v2" || !f.On() {
		t.Fatalf("flag value %q on %v", f.Value(), f.On())
	}
	if clients[0].Config().Flag("dark-mode").Enabled("user-1") {
		t.Fatal("a disabled flag is on")
	}

	// Retry defaults: a call that gives no retry settings uses them.
	if got := clients[0].Config().RetryDefaults().MaxAttempts; got != 3 {
		t.Fatalf("built-in retry default max_attempts %d, want 3", got)
	}
	attempts := func() int {
		n := 0
		_, err := baldur.Protect(ctxT(t), clients[0], "config-retry", func(context.Context) (int, error) { n++; return 0, errors.New("down") },
			baldur.WithDefaultRetry[int](), baldur.WithoutBreaker[int]())
		if !errors.Is(err, baldur.ErrRetryExhausted) {
			t.Fatalf("protect: %v", err)
		}
		return n
	}
	setSection(t, cfg, "retry_defaults", map[string]any{"max_attempts": 5, "base_delay": "0.001s", "max_delay": "0.002s"}, 0)
	waitVersion(t, clients[0], "retry_defaults", 1)
	if n := attempts(); n != 5 {
		t.Fatalf("%d attempts with retry_defaults max_attempts 5", n)
	}
	if d := clients[0].Config().BreakerDefaults(); d.FailureThreshold != 5 {
		t.Fatalf("breaker defaults %+v", d)
	}

	// Fail-static: with every node gone the last values stay.
	for i := range c.Nodes {
		c.Kill(i)
	}
	time.Sleep(200 * time.Millisecond)
	if !clients[1].Config().Flag("new-checkout").On() || clients[1].Config().Version("flags") != 1 || attempts() != 5 {
		t.Fatal("the runtime configuration was lost when the cluster went away")
	}
}

func BenchmarkFlagEnabled(b *testing.B) {
	c := testcluster.New(b, 1)
	leader := c.WaitForLeader(10 * time.Second)
	v, _ := structpb.NewStruct(map[string]any{"new-checkout": map[string]any{"enabled": true, "percentage": 10}})
	if _, err := pb.NewConfigServiceClient(benchConn(b, leader.GRPCAddr)).UpdateConfig(context.Background(), &pb.UpdateConfigRequest{Section: "flags", Values: v, Force: true}); err != nil {
		b.Fatal(err)
	}
	cl, err := baldur.Dial(context.Background(), leader.GRPCAddr)
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	if !testcluster.Eventually(10*time.Second, func() bool { return cl.Config().Version("flags") == 1 }) {
		b.Fatal("flags never arrived")
	}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for i := 0; b.Loop(); i++ {
		if cl.Config().Flag("new-checkout").Enabled(keys[i&1023]) {
			n++
		}
	}
	if n == 0 {
		b.Fatal("no key was in")
	}
}

// The SDK honours the system control: disabled (the kill switch), calls
// pass through (breakers admit, no automatic retries, emergency admission
// admits); in dry run an OPEN breaker and a shedding level are counted
// but admit.
func TestSystemControlInTheSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test")
	}
	c := testcluster.New(t, 1)
	leader := c.WaitForLeader(10 * time.Second)
	conn := dialConn(t, leader.GRPCAddr)
	sys := pb.NewSystemServiceClient(conn)
	cl := dialSDK(t, leader.GRPCAddr)
	if _, err := pb.NewCircuitServiceClient(conn).ReportOutcomes(ctxT(t), &pb.ReportOutcomesRequest{InstanceId: "i-0", Reports: []*pb.OutcomeReport{{Name: "pay", Successes: 1}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := pb.NewCircuitServiceClient(conn).ForceOpen(ctxT(t), &pb.ForceRequest{Name: "pay", Reason: "vendor down", Ttl: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin(t, leader.GRPCAddr).TriggerEmergency(ctxT(t), &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_LEVEL_3, Reason: "outage", Duration: durationpb.New(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	call := func(attempts *int) error {
		_, err := baldur.Protect(ctxT(t), cl, "pay", func(context.Context) (int, error) { *attempts++; return 0, errors.New("down") },
			baldur.WithRetry[int](baldur.Retry{MaxAttempts: 3, BaseDelay: time.Millisecond}))
		return err
	}
	if !testcluster.Eventually(5*time.Second, func() bool { n := 0; return errors.Is(call(&n), baldur.ErrCircuitOpen) && n == 0 }) {
		t.Fatal("the forced-open breaker never rejected")
	}
	if !testcluster.Eventually(5*time.Second, func() bool { return cl.Emergency().Level() == baldur.Level3 }) {
		t.Fatal("LEVEL_3 never reached the SDK")
	}
	if cl.Emergency().Admit(baldur.TierNonEssential) {
		t.Fatal("LEVEL_3 admitted a non-essential request")
	}

	if _, err := sys.SetDryRun(ctxT(t), &pb.SystemActionRequest{Reason: "observe"}); err != nil {
		t.Fatal(err)
	}
	if !testcluster.Eventually(5*time.Second, cl.Config().DryRun) {
		t.Fatal("dry run never reached the SDK")
	}
	n := 0
	if err := call(&n); errors.Is(err, baldur.ErrCircuitOpen) || n != 3 {
		t.Fatalf("dry run: %v after %d attempts, want the call made (and retried)", err, n)
	}
	if cl.Breaker("pay").Stats().WouldReject == 0 {
		t.Fatal("dry run did not count the rejection it skipped")
	}
	if !cl.Emergency().Admit(baldur.TierNonEssential) || cl.Emergency().WouldShed() == 0 {
		t.Fatal("dry run: emergency admission shed or did not count")
	}
	if _, err := sys.SetLive(ctxT(t), &pb.SystemActionRequest{Confirm: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := sys.DisableSystem(ctxT(t), &pb.SystemActionRequest{Reason: "stop everything"}); err != nil {
		t.Fatal(err)
	}
	if !testcluster.Eventually(5*time.Second, func() bool { return cl.KillSwitch() && !cl.Config().DryRun() }) {
		t.Fatal("disable never reached the SDK")
	}
	n = 0
	if err := call(&n); errors.Is(err, baldur.ErrCircuitOpen) || n != 1 {
		t.Fatalf("disabled: %v after %d attempts, want one attempt and no rejection", err, n)
	}
	if !cl.Emergency().Admit(baldur.TierNonEssential) {
		t.Fatal("disabled: emergency admission shed")
	}
}
