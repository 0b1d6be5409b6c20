package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

func configClient(t testing.TB, n *testcluster.Node) pb.ConfigServiceClient {
	return pb.NewConfigServiceClient(dial(t, n.GRPCAddr))
}

// A section starts at version 0 with the startup values; each change needs
// the version it was made against, bumps it and is kept in the history and
// the audit trail with before and after.
func TestRuntimeConfigVersionsHistoryAndAudit(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.CircuitDefaults.FailureThreshold = 7 }))
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}

	code, body := r.do("GET", "/v1/config/circuit_defaults", "")
	if code != 200 || body["version"] != "0" || dig(body, "values", "failure_threshold") != float64(7) {
		t.Fatalf("initial section: %d %v, want version 0 with the startup failure_threshold 7", code, body)
	}
	code, body = r.do("PUT", "/v1/config/circuit_defaults", `{"values":{"failure_threshold":3}}`)
	if code != 400 || body["field"] != "expected_version" {
		t.Fatalf("a change without expected_version or force: %d %v, want 400 naming expected_version", code, body)
	}
	code, body = r.do("PUT", "/v1/config/circuit_defaults", `{"values":{"failure_threshold":3},"expected_version":"0","reason":"trip sooner"}`)
	if code != 200 || body["section"] != "circuit_defaults" || body["version"] != "1" || dig(body, "values", "failure_threshold") != float64(3) {
		t.Fatalf("first change: %d %v", code, body)
	}
	// Fields left out take the startup values, not the previous change's.
	if dig(body, "values", "minimum_calls") != float64(10) {
		t.Fatalf("minimum_calls after a change that left it out: %v", dig(body, "values", "minimum_calls"))
	}
	code, body = r.do("PUT", "/v1/config/circuit_defaults", `{"values":{"failure_threshold":4},"expected_version":"0"}`)
	if code != http.StatusConflict || body["reason"] != "VERSION_CONFLICT" || !strings.Contains(body["message"].(string), "version 1") {
		t.Fatalf("a stale expected_version: %d %v, want 409 VERSION_CONFLICT naming version 1", code, body)
	}
	code, body = r.do("PUT", "/v1/config/circuit_defaults", `{"values":{"failure_threshold":4},"force":true,"reason":"override"}`)
	if code != 200 || body["version"] != "2" {
		t.Fatalf("forced change: %d %v", code, body)
	}
	code, body = r.do("GET", "/v1/config/circuit_defaults/history?page_size=1", "")
	changes, _ := body["changes"].([]any)
	if code != 200 || len(changes) != 1 || body["next_page_token"] != "2" {
		t.Fatalf("history page 1: %d %v", code, body)
	}
	newest := changes[0].(map[string]any)
	if newest["version"] != "2" || dig(newest, "before", "failure_threshold") != float64(3) || dig(newest, "after", "failure_threshold") != float64(4) || newest["reason"] != "override" {
		t.Fatalf("newest change: %v", newest)
	}
	code, body = r.do("GET", "/v1/config/circuit_defaults/history?page_size=1&page_token=2", "")
	changes, _ = body["changes"].([]any)
	if code != 200 || len(changes) != 1 || body["next_page_token"] != "" {
		t.Fatalf("history page 2: %d %v", code, body)
	}
	if first := changes[0].(map[string]any); first["version"] != "1" || dig(first, "before", "failure_threshold") != float64(7) {
		t.Fatalf("first change's before should be the startup values: %v", first)
	}
	code, body = r.do("GET", "/v1/audit?limit=100", "")
	var audited []map[string]any
	for _, rec := range body["records"].([]any) {
		if m := rec.(map[string]any); m["action"] == "config.set" && m["target"] == "config/circuit_defaults" {
			audited = append(audited, m)
		}
	}
	if code != 200 || len(audited) != 2 || !strings.Contains(audited[0]["before"].(string), `"failure_threshold":7`) || !strings.Contains(audited[0]["after"].(string), `"failure_threshold":3`) {
		t.Fatalf("audit records of the changes: %v", audited)
	}
	code, body = r.do("GET", "/v1/config", "")
	if sections, _ := body["sections"].([]any); code != 200 || len(sections) != 8 {
		t.Fatalf("list: %d %v", code, body)
	}
}

// Bad input is refused with 400 naming the field, and nothing is stored.
func TestRuntimeConfigBadInputStoresNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	for _, tc := range []struct {
		section, body, field string
	}{
		{"nope", `{"values":{},"force":true}`, "section"},
		{"circuit_defaults", `{"force":true}`, "values"},
		{"circuit_defaults", `{"values":{"failure_treshold":3},"force":true}`, "values.failure_treshold"},
		{"circuit_defaults", `{"values":{"failure_threshold":0},"force":true}`, "values.failure_threshold"},
		{"circuit_defaults", `{"values":{"failure_threshold":"three"},"force":true}`, "values.failure_threshold"},
		{"circuit_defaults", `{"values":{"recovery_timeout":"soon"},"force":true}`, "values.recovery_timeout"},
		{"dlq", `{"values":{"max_size":10},"force":true}`, "values.max_size"},
		{"dlq", `{"values":{"overflow_strategy":"compress"},"force":true}`, "values.overflow_strategy"},
		{"retry_defaults", `{"values":{"max_attempts":11},"force":true}`, "values.max_attempts"},
		{"retry_defaults", `{"values":{"backoff":"fibonacci"},"force":true}`, "values.backoff"},
		{"retry_defaults", `{"values":{"base_delay":"2s","max_delay":"1s"},"force":true}`, "values.max_delay"},
		{"flags", `{"values":{"new-checkout":{"enabled":true,"percentage":150}},"force":true}`, "values.new-checkout.percentage"},
		{"flags", `{"values":{"Bad Name":{"enabled":true}},"force":true}`, "values.Bad Name"},
		{"flags", `{"values":{"x":{"enabled":"yes"}},"force":true}`, "values.x"},
		{"emergency", `{"values":{"level_step_delay":"30s"},"force":true}`, "reason"},
		{"emergency", `{"values":{"levels":[{"level":"LEVEL_1","admission":{"critical":2}}]},"force":true,"reason":"bad"}`, "values.levels"},
	} {
		code, body := r.do("PUT", "/v1/config/"+tc.section, tc.body)
		if code != 400 || !strings.HasPrefix(fmt.Sprint(body["field"]), tc.field) {
			t.Errorf("PUT %s %s: %d %v, want 400 naming %s", tc.section, tc.body, code, body, tc.field)
		}
	}
	code, body := r.do("GET", "/v1/config", "")
	for _, s := range body["sections"].([]any) {
		if v := s.(map[string]any)["version"]; code != 200 || v != "0" {
			t.Errorf("section %v changed by refused input: version %v", s.(map[string]any)["section"], v)
		}
	}
}

// Writers that read the same version race: exactly one wins, wherever they
// send the change.
func TestRuntimeConfigConcurrentWritersExactlyOneWins(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	c.WaitForLeader(10 * time.Second)
	const writers = 9
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		cl := configClient(t, c.Nodes[i%3])
		wg.Add(1)
		go func() {
			defer wg.Done()
			values, _ := structpb.NewStruct(map[string]any{"max_attempts": float64(i%9 + 1)})
			_, errs[i] = cl.UpdateConfig(ctxT(t), &pb.UpdateConfigRequest{Section: "retry_defaults", Values: values, ExpectedVersion: proto.Uint64(0)})
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case status.Code(err) == codes.FailedPrecondition && reasonOf(err) == "VERSION_CONFLICT":
			if md := errorMetadata(err); md["current_version"] != "1" {
				t.Errorf("writer %d: conflict metadata %v, want current_version 1", i, md)
			}
		default:
			t.Errorf("writer %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d writers won, want exactly 1", won)
	}
	for _, n := range c.Nodes {
		sec, err := configClient(t, n).GetConfig(ctxT(t), &pb.GetConfigRequest{Section: "retry_defaults"})
		if err != nil || sec.Version != 1 {
			t.Fatalf("node %s: %v %v", n.ID, sec, err)
		}
	}
}

func errorMetadata(err error) map[string]string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Metadata
		}
	}
	return nil
}

// circuit_defaults applies without a restart: breakers registered on the
// old defaults follow, a breaker with a policy of its own keeps it, new
// breakers take the new defaults, on every node; SDK watchers receive the
// section.
func TestCircuitDefaultsApplyWithoutRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	leader := c.WaitForLeader(10 * time.Second)
	cc := circuitClient(t, leader)
	if _, err := cc.ReportOutcomes(ctxT(t), &pb.ReportOutcomesRequest{InstanceId: "i-1", Reports: []*pb.OutcomeReport{{Name: "payments", Successes: 1}, {Name: "search", Successes: 1}}}); err != nil {
		t.Fatal(err)
	}
	own := &pb.CircuitPolicy{FailureThreshold: 9}
	if _, err := cc.SetPolicy(ctxT(t), &pb.SetPolicyRequest{Name: "search", Policy: own, Reason: "own policy"}); err != nil {
		t.Fatal(err)
	}
	watch, err := emergencyClient(t, c.Followers()[0]).WatchEmergency(ctxT(t), &pb.WatchEmergencyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := watch.Recv()
	if err != nil || first.RuntimeConfig == nil || first.RuntimeConfig.CircuitDefaults.FailureThreshold != 5 || first.RuntimeConfig.Versions["circuit_defaults"] != 0 {
		t.Fatalf("watch snapshot: %v %v", first, err)
	}
	values, _ := structpb.NewStruct(map[string]any{"failure_threshold": float64(2)})
	if _, err := configClient(t, c.Followers()[1]).UpdateConfig(ctxT(t), &pb.UpdateConfigRequest{Section: "circuit_defaults", Values: values, ExpectedVersion: proto.Uint64(0), Reason: "trip sooner"}); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if msg.RuntimeConfig != nil {
			if msg.RuntimeConfig.CircuitDefaults.FailureThreshold != 2 || msg.RuntimeConfig.Versions["circuit_defaults"] != 1 {
				t.Fatalf("watch after the change: %v", msg.RuntimeConfig)
			}
			break
		}
	}
	if _, err := cc.ReportOutcomes(ctxT(t), &pb.ReportOutcomesRequest{InstanceId: "i-1", Reports: []*pb.OutcomeReport{{Name: "checkout", Successes: 1}}}); err != nil {
		t.Fatal(err)
	}
	c.WaitForApplied(leader.Store().AppliedIndex(), 10*time.Second)
	for _, n := range c.Nodes {
		list, err := circuitClient(t, n).ListCircuits(ctxT(t), &pb.ListCircuitsRequest{Consistency: "stale"})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int32{}
		for _, b := range list.Circuits {
			got[b.Name] = b.Policy.FailureThreshold
		}
		if got["payments"] != 2 || got["checkout"] != 2 || got["search"] != 9 {
			t.Fatalf("node %s failure thresholds %v, want payments and checkout on the new defaults (2), search on its own (9)", n.ID, got)
		}
	}
}

// The dlq section applies to the next store without a restart.
func TestDLQSectionAppliesWithoutRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	code, body := r.do("PUT", "/v1/config/dlq", `{"values":{"max_size_per_domain":100,"overflow_strategy":"reject"},"expected_version":"0"}`)
	if code != 200 || dig(body, "values", "max_size_per_domain") != "100" {
		t.Fatalf("set dlq: %d %v", code, body)
	}
	store := func(i int) (int, map[string]any) {
		return r.do("POST", "/v1/dlq/entries", fmt.Sprintf(`{"id":"e-%d","domain":"orders","failure_type":"MAX_RETRIES_TIMEOUT"}`, i))
	}
	for i := range 100 {
		if code, body := store(i); code != 200 {
			t.Fatalf("store %d: %d %v", i, code, body)
		}
	}
	if code, body := store(100); body["reason"] != "DLQ_CAPACITY_EXCEEDED" {
		t.Fatalf("store beyond the section's max_size_per_domain: %d %v, want DLQ_CAPACITY_EXCEEDED", code, body)
	}
}
