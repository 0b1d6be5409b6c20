package server_test

import (
	"strings"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func circuitClient(t testing.TB, n *testcluster.Node) pb.CircuitServiceClient {
	return pb.NewCircuitServiceClient(dial(t, n.GRPCAddr))
}

func TestForceExpiresOnTimeAcrossLeaderChange(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	cc := circuitClient(t, c.Followers()[0])
	if _, err := cc.SetPolicy(ctxT(t), &pb.SetPolicyRequest{Name: "payments", Policy: &pb.CircuitPolicy{}}); err != nil {
		t.Fatal(err)
	}
	forced, err := cc.ForceOpen(ctxT(t), &pb.ForceRequest{Name: "payments", Reason: "vendor maintenance", Ttl: durationpb.New(2 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if !forced.Circuit.Pinned || forced.Circuit.State != pb.CircuitState_OPEN || forced.Circuit.PinnedBy != "anonymous" {
		t.Fatalf("after force-open: %v", forced.Circuit)
	}
	expires := forced.Circuit.PinExpiresAt.AsTime()
	c.Kill(c.LeaderIndex())
	nl := c.WaitForLeader(10 * time.Second)
	cc = circuitClient(t, nl)
	// One minute in: still pinned.
	c.Clock.Advance(time.Minute)
	time.Sleep(300 * time.Millisecond)
	if got, _ := cc.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "payments"}); !got.Pinned || got.State != pb.CircuitState_OPEN {
		t.Fatalf("pin lifted early: %v", got)
	}
	// Just past the TTL: the new leader lifts it, straight to trial calls.
	c.Clock.Advance(expires.Sub(c.Clock.Now()) + 100*time.Millisecond)
	var got *pb.Circuit
	if !testcluster.Eventually(5*time.Second, func() bool {
		got, err = cc.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "payments"})
		return err == nil && !got.Pinned
	}) {
		t.Fatalf("pin never lifted: %v %v", got, err)
	}
	if got.State != pb.CircuitState_HALF_OPEN || got.Evidence.Trigger != "force_expired" {
		t.Fatalf("after expiry: %v", got)
	}
	if lifted := got.ProbeWindowStartedAt.AsTime(); lifted.Before(expires) || lifted.After(expires.Add(2*time.Second)) {
		t.Fatalf("lifted at %v, expiry %v", lifted, expires)
	}
	audit, _ := pb.NewAuditServiceClient(dial(t, nl.GRPCAddr)).ListAudit(ctxT(t), &pb.ListAuditRequest{Action: "circuit.force_expired"})
	if len(audit.Records) != 1 || audit.Records[0].Actor != "system:leader" {
		t.Fatalf("force expiries in the audit trail: %v", audit.Records)
	}
}

func TestCircuitBadInput(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	if code, body := r.do("PUT", "/v1/circuits/payments/policy", `{"failure_rate_threshold":50,"minimum_calls":10,"min_reporters":2}`); code != 200 || dig(body, "circuit", "policy", "min_reporters") != float64(2) {
		t.Fatalf("set policy: %d %v", code, body)
	}
	before := contentHashes(t, c)[0]
	manyReports := `{"instance_id":"i-1","reports":[` + strings.TrimSuffix(strings.Repeat(`{"name":"a","successes":1},`, 1001), ",") + `]}`
	cases := []struct {
		name, method, path, body string
		code                     int
		reason, field            string
	}{
		{"rate above 100", "PUT", "/v1/circuits/payments/policy", `{"failure_rate_threshold":150}`, 400, "INVALID_POLICY", "failure_rate_threshold"},
		{"negative threshold", "PUT", "/v1/circuits/payments/policy", `{"failure_threshold":-1}`, 400, "INVALID_ARGUMENT", "failure_threshold"},
		{"success above max calls", "PUT", "/v1/circuits/payments/policy", `{"half_open_max_calls":2,"success_threshold":3}`, 400, "INVALID_POLICY", "success_threshold"},
		{"bad recovery timeout", "PUT", "/v1/circuits/payments/policy", `{"recovery_timeout":"0.001s"}`, 400, "INVALID_POLICY", "recovery_timeout"},
		{"bad name", "PUT", "/v1/circuits/bad%20name/policy", `{}`, 400, "INVALID_NAME", "name"},
		{"force unknown", "POST", "/v1/circuits/nope:forceOpen", `{"reason":"r"}`, 404, "CIRCUIT_NOT_FOUND", ""},
		{"force without reason", "POST", "/v1/circuits/payments:forceOpen", `{}`, 400, "REASON_REQUIRED", "reason"},
		{"ttl too long", "POST", "/v1/circuits/payments:forceClose", `{"reason":"r","ttl":"90000s"}`, 400, "TTL_OUT_OF_RANGE", "ttl"},
		{"ttl too short", "POST", "/v1/circuits/payments:forceOpen", `{"reason":"r","ttl":"30s"}`, 400, "TTL_OUT_OF_RANGE", "ttl"},
		{"reset unknown", "POST", "/v1/circuits/nope:reset", `{"reason":"r"}`, 404, "CIRCUIT_NOT_FOUND", ""},
		{"empty batch", "POST", "/v1/circuits:report", `{"instance_id":"i-1","reports":[]}`, 400, "INVALID_ARGUMENT", "reports"},
		{"no instance", "POST", "/v1/circuits:report", `{"reports":[{"name":"a","successes":1}]}`, 400, "INVALID_ARGUMENT", "instance_id"},
		{"negative count", "POST", "/v1/circuits:report", `{"instance_id":"i-1","reports":[{"name":"a","failures":-3}]}`, 400, "INVALID_ARGUMENT", "reports[0].failures"},
		{"held failures", "POST", "/v1/circuits:report", `{"instance_id":"i-1","reports":[{"name":"a","successes":3,"failures":1,"held":true}]}`, 400, "INVALID_ARGUMENT", "reports[0].held"},
		{"huge batch", "POST", "/v1/circuits:report", manyReports, 400, "INVALID_ARGUMENT", "reports"},
		{"bad report name", "POST", "/v1/circuits:report", `{"instance_id":"i-1","reports":[{"name":"","successes":1}]}`, 400, "INVALID_ARGUMENT", "reports[0].name"},
		{"kill switch without reason", "POST", "/v1/circuits:killSwitch", `{"enabled":true}`, 400, "REASON_REQUIRED", "reason"},
		{"get unknown", "GET", "/v1/circuits/nope", "", 404, "CIRCUIT_NOT_FOUND", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := restClient{t: t, base: r.base}.do(tc.method, tc.path, tc.body)
			if code != tc.code || body["reason"] != tc.reason {
				t.Fatalf("got %d %v, want %d %s", code, body, tc.code, tc.reason)
			}
			if tc.field != "" && body["field"] != tc.field {
				t.Errorf("field = %v, want %s", body["field"], tc.field)
			}
		})
	}
	if after := contentHashes(t, c)[0]; after != before {
		t.Fatal("refused circuit requests changed the state")
	}
}

func TestCircuitsOverREST(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	code, body := r.do("POST", "/v1/circuits:report", `{"instance_id":"i-1","reports":[{"name":"payments","successes":12,"failures":3,"slow_calls":0}]}`)
	if code != 200 {
		t.Fatalf("report: %d %v", code, body)
	}
	if reg, _ := body["registered"].([]any); len(reg) != 1 || reg[0] != "payments" {
		t.Fatalf("first report should register the breaker: %v", body)
	}
	for i := 0; i < 3; i++ {
		r.do("POST", "/v1/circuits:report", `{"instance_id":"i-1","reports":[{"name":"payments","failures":10}]}`)
	}
	code, body = r.do("GET", "/v1/circuits/payments", "")
	if code != 200 || body["state"] != "OPEN" || dig(body, "evidence", "trigger") != "failure_rate_threshold_exceeded" {
		t.Fatalf("after failing reports: %d %v", code, body)
	}
	code, body = r.do("POST", "/v1/circuits/payments:forceClose", `{"reason":"false alarm","ttl":"600s"}`)
	if code != 200 || dig(body, "circuit", "state") != "CLOSED" || dig(body, "circuit", "pinned") != true {
		t.Fatalf("force close: %d %v", code, body)
	}
	code, body = r.do("POST", "/v1/circuits:killSwitch", `{"enabled":true,"reason":"incident 42"}`)
	if code != 200 || body["enabled"] != true {
		t.Fatalf("kill switch: %d %v", code, body)
	}
	code, body = r.do("GET", "/v1/circuits", "")
	if list, _ := body["circuits"].([]any); code != 200 || len(list) != 1 || body["kill_switch"] != true {
		t.Fatalf("list: %d %v", code, body)
	}
	code, body = r.do("POST", "/v1/circuits/payments:reset", `{"reason":"done"}`)
	if code != 200 || dig(body, "circuit", "state") != "CLOSED" || dig(body, "circuit", "pinned") != false {
		t.Fatalf("reset: %d %v", code, body)
	}
	code, body = r.do("POST", "/v1/circuits/payments:acquireProbe", `{"instance_id":"i-1"}`)
	if code != 200 || body["granted"] != false || body["state"] != "CLOSED" {
		t.Fatalf("probe on a closed breaker: %d %v", code, body)
	}
}

// A new epoch starts the leader's window over, however it came: a policy
// change (which kept the old window before) or a reset. 5 of 9 calls failed before it, and
// one failure after it is one call in a new window (no trip below the 10
// minimum calls), not the tenth of the old one (60 %: a trip).
func TestNewEpochStartsTheLeadersWindowOver(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	follower := circuitClient(t, c.Followers()[0])
	policy := func(window int32) *pb.SetPolicyRequest {
		return &pb.SetPolicyRequest{Name: "stale-window", Reason: "test", Policy: &pb.CircuitPolicy{
			FailureThreshold: 1000, FailureRateThreshold: proto.Float64(50), MinimumCalls: 10, WindowSize: window, MinReporters: 1,
			RecoveryTimeout: durationpb.New(time.Hour)}}
	}
	if _, err := follower.SetPolicy(ctxT(t), policy(100)); err != nil {
		t.Fatal(err)
	}
	report := func(successes, failures int64) {
		t.Helper()
		st, err := follower.GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "stale-window"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := follower.ReportOutcomes(ctxT(t), &pb.ReportOutcomesRequest{InstanceId: "i-1", Reports: []*pb.OutcomeReport{
			{Name: "stale-window", Revision: st.Revision, Successes: successes, Failures: failures}}}); err != nil {
			t.Fatal(err)
		}
	}
	for i, newEpoch := range []func() error{
		func() error { _, err := follower.SetPolicy(ctxT(t), policy(int32(101))); return err },
		func() error {
			_, err := follower.Reset(ctxT(t), &pb.ResetRequest{Name: "stale-window", Reason: "new window"})
			return err
		},
	} {
		report(4, 5)
		if err := newEpoch(); err != nil {
			t.Fatal(err)
		}
		report(0, 1)
		time.Sleep(300 * time.Millisecond) // a trip would have been proposed by now
		st, err := circuitClient(t, c.Leader()).GetCircuit(ctxT(t), &pb.GetCircuitRequest{Name: "stale-window"})
		if err != nil {
			t.Fatal(err)
		}
		if st.State != pb.CircuitState_CLOSED || st.Window.GetWindowCalls() != 1 {
			t.Fatalf("change %d: after a new epoch and one failure: %v, window %v (want CLOSED, 1 call)", i, st.State, st.Window)
		}
		if _, err := follower.Reset(ctxT(t), &pb.ResetRequest{Name: "stale-window", Reason: "next case"}); err != nil {
			t.Fatal(err)
		}
	}
}
