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
	"google.golang.org/protobuf/proto"
)

const rolloutBody = `{"section":"flags","new_values":{"new-checkout":{"enabled":true}},"reason":"new checkout",
 "stages":[{"name":"5pct","percentage":5,"duration":"300s","auto_promote":true,"pass_criteria":{"min_requests":50}},
           {"name":"50pct","percentage":50,"duration":"300s"},{"name":"all","percentage":100,"duration":"300s"}]}`

func createRollout(t *testing.T, r restClient, body string) string {
	t.Helper()
	code, resp := r.do("POST", "/v1/canary/rollouts", body)
	if code != 200 {
		t.Fatalf("create: %d %v", code, resp)
	}
	id, _ := dig(resp, "rollout", "id").(string)
	return id
}

// The REST contract, bad input refused by field with nothing stored, one
// active rollout per section, the section held, and two operators
// promoting the same stage: exactly one wins.
func TestRolloutContract(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	c.WaitForLeader(10 * time.Second)
	r := restClient{t: t, base: "http://" + c.Followers()[0].HTTPAddr}
	for _, tc := range []struct{ body, field string }{
		{`{"section":"nope","new_values":{},"stages":[{"name":"a","percentage":5,"duration":"60s"}]}`, "section"},
		{`{"section":"emergency","new_values":{},"stages":[{"name":"a","percentage":5,"duration":"60s"}]}`, "section"},
		{`{"section":"retry_defaults","new_values":{"max_attempts":99},"stages":[{"name":"a","percentage":5,"duration":"60s"}]}`, "new_values.max_attempts"},
		{`{"section":"flags","new_values":{},"stages":[]}`, "stages"},
		{`{"section":"flags","new_values":{},"stages":[{"name":"a","percentage":50,"duration":"60s"},{"name":"b","percentage":10,"duration":"60s"}]}`, "stages[1].percentage"},
		{`{"section":"flags","new_values":{},"stages":[{"name":"a","percentage":150,"duration":"60s"}]}`, "stages[0].percentage"},
		{`{"section":"flags","new_values":{},"stages":[{"name":"a","percentage":-1,"duration":"60s"}]}`, "stages[0].percentage"},
		{`{"section":"flags","new_values":{},"stages":[{"name":"a","percentage":5,"duration":"0s"}]}`, "stages[0].duration"},
		{`{"section":"flags","new_values":{},"stages":[{"name":"a","percentage":5,"duration":"-5s"}]}`, "stages[0].duration"},
		{`{"section":"flags","new_values":{},"stages":[{"name":"a","percentage":5,"duration":"60s","pass_criteria":{"error_rate_absolute_max":2}}]}`, "stages[0].pass_criteria.error_rate_absolute_max"},
	} {
		code, body := r.do("POST", "/v1/canary/rollouts", tc.body)
		if code != 400 || body["field"] != tc.field {
			t.Errorf("%s: %d %v, want 400 naming %s", tc.body, code, body, tc.field)
		}
	}
	if code, body := r.do("GET", "/v1/canary/rollouts", ""); code != 200 || len(body["rollouts"].([]any)) != 0 {
		t.Fatalf("refused input stored a rollout: %v", body)
	}

	code, body := r.do("POST", "/v1/canary/rollouts", rolloutBody)
	if code != 200 || dig(body, "rollout", "state") != "CREATED" || dig(body, "rollout", "section") != "flags" ||
		dig(body, "rollout", "current_stage_index") != float64(0) || dig(body, "rollout", "version") != "1" {
		t.Fatalf("create: %d %v", code, body)
	}
	id := dig(body, "rollout", "id").(string)
	code, body = r.do("POST", "/v1/canary/rollouts", strings.Replace(rolloutBody, "new checkout", "again", 1))
	if code != http.StatusConflict || body["reason"] != "ROLLOUT_CONFLICT" || !strings.Contains(body["message"].(string), id) {
		t.Fatalf("second rollout of the section: %d %v, want 409 ROLLOUT_CONFLICT naming %s", code, body, id)
	}
	code, body = r.do("PUT", "/v1/config/flags", `{"values":{},"force":true}`)
	if code != http.StatusConflict || body["reason"] != "ROLLOUT_CONFLICT" {
		t.Fatalf("direct edit of a held section: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/canary/rollouts/"+id+":start", `{"reason":"go"}`); code != 200 || dig(body, "rollout", "state") != "CANARY" {
		t.Fatalf("start: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/canary/rollouts/"+id+":promote", `{"expected_stage_index":0}`); code != http.StatusConflict || body["reason"] != "JUDGMENT_BLOCKS_PROMOTION" {
		t.Fatalf("promotion without evidence or force: %d %v", code, body)
	}
	// Two operators promote stage 0 at once, through different nodes.
	var wg sync.WaitGroup
	codes := make([]int, 2)
	reasons := make([]any, 2)
	for i, n := range c.Nodes[:2] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := pb.NewCanaryServiceClient(dial(t, n.GRPCAddr))
			_, err := cl.PromoteRollout(ctxT(t), &pb.PromoteRolloutRequest{Id: id, ExpectedStageIndex: proto.Int32(0), Force: true, Reason: fmt.Sprint("operator ", i)})
			if err == nil {
				codes[i] = 200
			} else {
				reasons[i] = reasonOf(err)
			}
		}()
	}
	wg.Wait()
	if codes[0]+codes[1] != 200 || (reasons[0] != "STAGE_CONFLICT" && reasons[1] != "STAGE_CONFLICT") {
		t.Fatalf("concurrent promotions: %v %v, want one success and one STAGE_CONFLICT", codes, reasons)
	}
	code, body = r.do("GET", "/v1/canary/rollouts/"+id, "")
	if code != 200 || dig(body, "rollout", "current_stage_index") != float64(1) || dig(body, "rollout", "state") != "CANARY" {
		t.Fatalf("after the race: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/canary/rollouts/"+id+":rollback", `{"reason":"changed our mind"}`); code != 200 || dig(body, "rollout", "state") != "ROLLED_BACK" {
		t.Fatalf("rollback: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/canary/rollouts/"+id+":start", `{}`); code != http.StatusConflict || body["reason"] != "INVALID_TRANSITION" {
		t.Fatalf("restarting a terminal rollout: %d %v", code, body)
	}
	code, body = r.do("GET", "/v1/config/flags", "")
	if code != 200 || body["version"] != "0" {
		t.Fatalf("the section after a rollback: %v", body)
	}
	code, body = r.do("GET", "/v1/canary/history", "")
	transitions, _ := body["transitions"].([]any)
	if code != 200 || len(transitions) != 4 || dig(transitions[0].(map[string]any), "action") != "rollback" {
		t.Fatalf("history: %d %v", code, body)
	}
	// The section is free again: a rollout that completes sets it.
	id = createRollout(t, r, `{"section":"flags","new_values":{"x":{"enabled":true}},"stages":[{"name":"all","percentage":100,"duration":"60s","auto_promote":false}]}`)
	r.do("POST", "/v1/canary/rollouts/"+id+":start", `{}`)
	if code, body = r.do("POST", "/v1/canary/rollouts/"+id+":promote", `{"force":true}`); code != 200 || dig(body, "rollout", "state") != "COMPLETED" {
		t.Fatalf("promote the last stage: %d %v", code, body)
	}
	code, body = r.do("GET", "/v1/config/flags", "")
	if code != 200 || body["version"] != "1" || dig(body, "values", "x", "enabled") != true {
		t.Fatalf("the section after completion: %v", body)
	}
	code, body = r.do("GET", "/v1/audit?action=canary.complete", "")
	if recs, _ := body["records"].([]any); code != 200 || len(recs) != 1 {
		t.Fatalf("audit of the completion: %v", body)
	}
}

// LEVEL_2 pauses every rollout in CANARY and refuses starts without a
// bypass reason; LEVEL_3 rolls every one back.
func TestEmergencyInterlock(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	running := createRollout(t, r, rolloutBody)
	r.do("POST", "/v1/canary/rollouts/"+running+":start", `{}`)
	waiting := createRollout(t, r, `{"section":"retry_defaults","new_values":{"max_attempts":4},"stages":[{"name":"a","percentage":10,"duration":"60s"}]}`)
	if code, body := r.do("POST", "/v1/emergency:trigger", `{"level":"LEVEL_2","reason":"payments outage","duration":"1800s"}`); code != 200 {
		t.Fatalf("trigger: %d %v", code, body)
	}
	state := func(id string) map[string]any {
		_, body := r.do("GET", "/v1/canary/rollouts/"+id, "")
		out, _ := body["rollout"].(map[string]any)
		return out
	}
	if !testcluster.Eventually(5*time.Second, func() bool { return state(running)["state"] == "PAUSED" }) {
		t.Fatalf("LEVEL_2 did not pause the rollout: %v", state(running))
	}
	if st := state(running); st["paused_by_interlock"] != true {
		t.Fatalf("paused rollout: %v", st)
	}
	code, body := r.do("POST", "/v1/canary/rollouts/"+waiting+":start", `{}`)
	if code != http.StatusConflict || body["reason"] != "ROLLOUT_BLOCKED" || !strings.Contains(body["message"].(string), "LEVEL_2") {
		t.Fatalf("start under LEVEL_2: %d %v", code, body)
	}
	code, body = r.do("POST", "/v1/canary/rollouts/"+waiting+":start", `{"bypass_reason":"hotfix for the outage itself"}`)
	if code != 200 || dig(body, "rollout", "flagged_for_review") != true {
		t.Fatalf("bypassed start: %d %v", code, body)
	}
	// Back to NORMAL the interlock's pause stays.
	r.do("POST", "/v1/emergency:release", `{"reason":"recovered","force":true}`)
	time.Sleep(time.Second)
	if st := state(running); st["state"] != "PAUSED" {
		t.Fatalf("an interlock pause resumed by itself: %v", st)
	}
	r.do("POST", "/v1/emergency:trigger", `{"level":"LEVEL_3","reason":"meltdown","duration":"1800s"}`)
	if !testcluster.Eventually(5*time.Second, func() bool {
		return state(running)["state"] == "ROLLED_BACK" && state(waiting)["state"] == "ROLLED_BACK"
	}) {
		t.Fatalf("LEVEL_3 did not roll back every rollout: %v / %v", state(running), state(waiting))
	}
}
