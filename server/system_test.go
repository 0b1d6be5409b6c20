package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/testcluster"
)

// The system control's REST contract: enabled (the kill switch), dry run,
// the operating mode and break glass.
func TestSystemControlContract(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	code, body := r.do("GET", "/v1/system", "")
	if code != 200 || body["enabled"] != true || body["dry_run"] != false || body["mode"] != "NORMAL" || dig(body, "break_glass", "active") != false {
		t.Fatalf("initial system: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/system:disable", `{}`); code != 400 || body["field"] != "reason" {
		t.Fatalf("disable without a reason: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/system:disable", `{"reason":"runaway retries"}`); code != 200 || body["enabled"] != false {
		t.Fatalf("disable: %d %v", code, body)
	}
	// The breaker kill switch is the same switch.
	if _, cb := r.do("GET", "/v1/circuits", ""); cb["kill_switch"] != true {
		t.Fatalf("kill switch after disable: %v", cb)
	}
	if code, body = r.do("POST", "/v1/system:enable", `{"reason":"fixed"}`); code != 200 || body["enabled"] != true {
		t.Fatalf("enable: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/system:dryRun", `{"reason":"try the new policies"}`); code != 200 || body["dry_run"] != true {
		t.Fatalf("dry run: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/system:live", `{}`); code != 400 || body["field"] != "confirm" {
		t.Fatalf("live without confirm: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/system:live", `{"confirm":true}`); code != 200 || body["dry_run"] != false {
		t.Fatalf("live: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/system:strict", `{"reason":"audit week"}`); code != 200 || body["mode"] != "STRICT" || body["strict_until"] == nil {
		t.Fatalf("strict: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/system:normal", `{}`); code != 200 || body["mode"] != "NORMAL" {
		t.Fatalf("normal: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/system:breakGlass", `{"reason":"too short","ttl":"3600s"}`); code != 400 || body["field"] != "reason" {
		t.Fatalf("break glass with a short reason: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/system:breakGlass", `{"reason":"incident 42: force the fix","ttl":"18000s"}`); code != 400 || body["field"] != "ttl" {
		t.Fatalf("break glass for 5h: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/system:breakGlass", `{"reason":"incident 42: force the fix","ttl":"3600s"}`); code != 200 || dig(body, "break_glass", "active") != true {
		t.Fatalf("break glass: %d %v", code, body)
	}
	if code, body = r.do("POST", "/v1/system:endBreakGlass", `{}`); code != 200 || dig(body, "break_glass", "active") != false {
		t.Fatalf("end break glass: %d %v", code, body)
	}
	_, body = r.do("GET", "/v1/audit?page_size=1000", "")
	var actions []string
	for _, rec := range body["records"].([]any) {
		if a := rec.(map[string]any)["action"].(string); strings.HasPrefix(a, "governance.") || a == "circuit.kill_switch" {
			actions = append(actions, a)
		}
	}
	if got := strings.Join(actions, ","); got != "circuit.kill_switch,circuit.kill_switch,governance.dry_run,governance.live,governance.strict,governance.normal,governance.break_glass,governance.break_glass_ended" {
		t.Fatalf("audited changes: %s", got)
	}
}

// The pre-action gate on the guarded operations: under LEVEL_2 a replay
// is refused (the entry stays PENDING), a force-close and an automatic
// emergency trigger too, each block audited; break glass lets them through,
// audited and flagged.
func TestPreActionGate(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 1)
	r := restClient{t: t, base: "http://" + c.Nodes[0].HTTPAddr}
	if code, body := r.do("POST", "/v1/dlq/entries", `{"id":"e-1","domain":"orders","failure_type":"X"}`); code != 200 {
		t.Fatalf("store: %d %v", code, body)
	}
	r.do("POST", "/v1/circuits:report", `{"instance_id":"i-1","reports":[{"name":"payments","successes":1}]}`)
	if code, body := r.do("POST", "/v1/emergency:trigger", `{"level":"LEVEL_2","reason":"outage","duration":"7200s"}`); code != 200 {
		t.Fatalf("trigger: %d %v", code, body)
	}
	for _, op := range []struct{ method, path, body, operation string }{
		{"POST", "/v1/dlq/entries/e-1:replay", `{"reason":"retry"}`, "dlq.replay"},
		{"POST", "/v1/circuits/payments:forceClose", `{"reason":"vendor says fixed","ttl":"600s"}`, "circuit.force_close"},
		{"POST", "/v1/emergency:trigger", `{"level":"LEVEL_3","reason":"auto","duration":"600s","auto":true}`, "emergency.auto_trigger"},
	} {
		code, body := r.do(op.method, op.path, op.body)
		msg, _ := body["message"].(string)
		if code != http.StatusConflict || body["reason"] != "GOVERNANCE_BLOCKED" || !strings.Contains(msg, "emergency_mode") || !strings.Contains(msg, "Emergency mode LEVEL_2 is active. Auto-restore in ~2.0h.") {
			t.Fatalf("%s under LEVEL_2: %d %v", op.operation, code, body)
		}
	}
	if _, body := r.do("GET", "/v1/dlq/entries/e-1", ""); body["status"] != "PENDING" {
		t.Fatalf("a blocked replay changed the entry: %v", body)
	}
	if code, body := r.do("POST", "/v1/dlq:replay", `{"domain":"orders","status":"PENDING","reason":"batch"}`); code != http.StatusConflict || body["reason"] != "GOVERNANCE_BLOCKED" {
		t.Fatalf("batch replay under LEVEL_2: %d %v", code, body)
	}
	if _, body := r.do("GET", "/v1/circuits/payments", ""); body["pinned"] != false {
		t.Fatalf("a blocked force-close pinned the breaker: %v", body)
	}
	_, body := r.do("GET", "/v1/audit?action=governance.blocked", "")
	if recs, _ := body["records"].([]any); len(recs) != 4 {
		t.Fatalf("audited blocks: %v", body)
	}
	r.do("POST", "/v1/system:breakGlass", `{"reason":"incident 42: the fix must ship","ttl":"600s"}`)
	if code, body := r.do("POST", "/v1/dlq/entries/e-1:replay", `{"reason":"retry"}`); code != 200 {
		t.Fatalf("replay under break glass: %d %v", code, body)
	}
	if code, body := r.do("POST", "/v1/circuits/payments:forceClose", `{"reason":"vendor says fixed","ttl":"600s"}`); code != 200 {
		t.Fatalf("force-close under break glass: %d %v", code, body)
	}
	_, body = r.do("GET", "/v1/audit?action=governance.break_glass_used", "")
	if recs, _ := body["records"].([]any); len(recs) != 2 {
		t.Fatalf("audited break-glass actions: %v", body)
	}
	// The kill switch blocks first, whatever the level.
	r.do("POST", "/v1/system:endBreakGlass", `{}`)
	r.do("POST", "/v1/system:disable", `{"reason":"stop everything"}`)
	code, body := r.do("POST", "/v1/circuits/payments:forceClose", `{"reason":"again","ttl":"600s"}`)
	if code != http.StatusConflict || !strings.Contains(body["message"].(string), "kill_switch") {
		t.Fatalf("force-close under the kill switch: %d %v", code, body)
	}
	// Automatic replay (workers' leases) pauses while the system is disabled.
	if code, body = r.do("POST", "/v1/dlq:acquire", `{"worker":"w-1","domains":["orders"]}`); code != 200 || body["blocked_reason"] != "paused: system disabled (kill switch)" || body["entry"] != nil {
		t.Fatalf("replay lease under the kill switch: %d %v", code, body)
	}
	// A canary start is refused by the same gate (and stays CREATED).
	r.do("POST", "/v1/system:enable", `{"reason":"back"}`)
	id := createRollout(t, r, `{"section":"flags","new_values":{},"stages":[{"name":"a","percentage":10,"duration":"60s"}]}`)
	if code, body = r.do("POST", "/v1/canary/rollouts/"+id+":start", `{}`); code != http.StatusConflict {
		t.Fatalf("canary start under LEVEL_2: %d %v", code, body)
	}
	if _, body = r.do("GET", "/v1/canary/rollouts/"+id, ""); dig(body, "rollout", "state") != "CREATED" {
		t.Fatalf("a blocked start moved the rollout: %v", body)
	}
	_, body = r.do("GET", "/v1/audit?action=governance.blocked&target=canary.start/"+id, "")
	if recs, _ := body["records"].([]any); len(recs) != 1 {
		t.Fatalf("the blocked canary start was not audited: %v", body)
	}
	r.do("POST", "/v1/system:breakGlass", `{"reason":"incident 42: the fix must ship","ttl":"600s"}`)
	if code, body = r.do("POST", "/v1/canary/rollouts/"+id+":start", `{}`); code != 200 || dig(body, "rollout", "flagged_for_review") != true {
		t.Fatalf("canary start under break glass: %d %v", code, body)
	}
}

// STRICT returns to NORMAL at 8h by the leader's command, whichever node
// leads then (the cluster clock is advanced).
func TestStrictExpiresAcrossALeaderChange(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c := testcluster.New(t, 3)
	c.WaitForLeader(10 * time.Second)
	r := restClient{t: t, base: "http://" + c.Followers()[0].HTTPAddr}
	if code, body := r.do("POST", "/v1/system:strict", `{"reason":"audit week"}`); code != 200 {
		t.Fatalf("strict: %d %v", code, body)
	}
	c.Clock.Advance(4*time.Hour + time.Second)
	mode := func() any { _, body := r.do("GET", "/v1/system", ""); return body["mode"] }
	audited := func(action string) int {
		_, body := r.do("GET", "/v1/audit?action="+action, "")
		recs, _ := body["records"].([]any)
		return len(recs)
	}
	if !testcluster.Eventually(5*time.Second, func() bool { return audited("governance.strict_warning") == 1 }) {
		t.Fatal("no warning at 4h")
	}
	old := c.LeaderIndex()
	c.Kill(old)
	leader := c.WaitForLeader(10 * time.Second)
	r = restClient{t: t, base: "http://" + leader.HTTPAddr}
	c.Clock.Advance(2 * time.Hour)
	if !testcluster.Eventually(5*time.Second, func() bool { return audited("governance.strict_warning") == 2 }) {
		t.Fatal("no warning at 6h under the new leader")
	}
	c.Clock.Advance(2 * time.Hour)
	if !testcluster.Eventually(10*time.Second, func() bool { return mode() == "NORMAL" }) {
		t.Fatalf("STRICT did not end at 8h under the new leader: %v", mode())
	}
	if n := audited("governance.strict_expired"); n != 1 {
		t.Fatalf("%d expiries audited, want 1", n)
	}
	if n := audited("governance.strict_warning"); n != 2 {
		t.Fatalf("%d warnings audited, want 2 (4h, 6h)", n)
	}
}
