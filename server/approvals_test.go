package server_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
)

// approvalCluster is three nodes with three identities: alice and bob
// (admins) and olive (an operator).
func approvalCluster(t *testing.T) (*testcluster.Cluster, map[string]string) {
	tokens := map[string]string{"alice": "tok-alice-0123456789abcdef", "bob": "tok-bob-0123456789abcdef", "olive": "tok-olive-0123456789abcdef"}
	roles := map[string]string{"alice": "admin", "bob": "admin", "olive": "operator"}
	lines := []string{"node tok-node-0123456789abcdef admin"}
	for name, tok := range tokens {
		lines = append(lines, name+" "+tok+" "+roles[name])
	}
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) {
		cfg.TokenFile, cfg.Token = file, "tok-node-0123456789abcdef"
	}))
	c.WaitForLeader(10 * time.Second)
	return c, tokens
}

type asUser struct {
	r     restClient
	token string
}

func (u asUser) do(method, path, body string) (int, map[string]any) {
	u.r.t.Helper()
	code, _, out := u.r.doAs(method, path, "application/json", body, map[string]string{"Authorization": "Bearer " + u.token})
	return code, out
}

func approvalState(u asUser, id string) map[string]any {
	_, body := u.do("GET", "/v1/approvals/"+id, "")
	return body
}

// A change that needs a second person waits (202 with the request); its
// requester cannot approve it, nor can an identity without the operation's
// role; another admin's approval has the leader carry out exactly that
// request, as its requester, once.
func TestDualControl(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c, tokens := approvalCluster(t)
	r := restClient{t: t, base: "http://" + c.Followers()[0].HTTPAddr}
	alice, bob, olive := asUser{r, tokens["alice"]}, asUser{r, tokens["bob"]}, asUser{r, tokens["olive"]}

	code, body := alice.do("POST", "/v1/system:disable", `{"reason":"runaway retries"}`)
	id, _ := dig(body, "approval", "id").(string)
	if code != http.StatusAccepted || id == "" || dig(body, "approval", "state") != "PENDING" || dig(body, "approval", "operation") != "system.disable" ||
		dig(body, "approval", "requested_by") != "alice" || dig(body, "approval", "expires_at") == nil {
		t.Fatalf("disable by alice: %d %v, want 202 with a pending approval", code, body)
	}
	if _, sys := alice.do("GET", "/v1/system", ""); sys["enabled"] != true {
		t.Fatalf("the system changed before approval: %v", sys)
	}
	if code, body = alice.do("POST", "/v1/approvals/"+id+":approve", `{}`); code != http.StatusForbidden || body["reason"] != "SELF_APPROVAL" {
		t.Fatalf("alice approving her own request: %d %v", code, body)
	}
	if code, body = olive.do("POST", "/v1/approvals/"+id+":approve", `{}`); code != http.StatusForbidden || body["reason"] != "PERMISSION_DENIED" {
		t.Fatalf("an operator approving an admin operation: %d %v", code, body)
	}
	if code, body = bob.do("POST", "/v1/approvals/"+id+":approve", `{"reason":"agreed on the call"}`); code != 200 || body["decided_by"] != "bob" {
		t.Fatalf("bob's approval: %d %v", code, body)
	}
	if !testcluster.Eventually(5*time.Second, func() bool { return approvalState(bob, id)["state"] == "EXECUTED" }) {
		t.Fatalf("the approved request was not carried out: %v", approvalState(bob, id))
	}
	if _, sys := alice.do("GET", "/v1/system", ""); sys["enabled"] != false {
		t.Fatalf("the approved disable did not apply: %v", sys)
	}
	_, body = bob.do("GET", "/v1/audit?action=circuit.kill_switch", "")
	recs, _ := body["records"].([]any)
	if len(recs) != 1 || recs[0].(map[string]any)["actor"] != "alice" {
		t.Fatalf("kill switch audit records: %v (want one, in alice's name)", recs)
	}
	if code, body = bob.do("POST", "/v1/approvals/"+id+":approve", `{}`); code != http.StatusConflict || body["reason"] != "APPROVAL_DECIDED" {
		t.Fatalf("a second approval: %d %v", code, body)
	}
	// A purge waits too; once approved it runs once.
	code, body = alice.do("POST", "/v1/dlq:purge", `{"older_than":"0s","confirm":true}`)
	pid, _ := dig(body, "approval", "id").(string)
	if code != http.StatusAccepted || dig(body, "approval", "operation") != "dlq.purge" {
		t.Fatalf("purge by alice: %d %v", code, body)
	}
	bob.do("POST", "/v1/approvals/"+pid+":approve", `{}`)
	if !testcluster.Eventually(5*time.Second, func() bool { return approvalState(bob, pid)["state"] == "EXECUTED" }) {
		t.Fatalf("the approved purge was not carried out: %v", approvalState(bob, pid))
	}
	// A rejected request is never carried out.
	bob.do("POST", "/v1/system:enable", `{"reason":"fixed"}`)
	_, body = alice.do("POST", "/v1/system:disable", `{"reason":"again"}`)
	id2, _ := dig(body, "approval", "id").(string)
	if code, body = bob.do("POST", "/v1/approvals/"+id2+":reject", `{"reason":"no"}`); code != 200 || body["state"] != "REJECTED" {
		t.Fatalf("reject: %d %v", code, body)
	}
	time.Sleep(300 * time.Millisecond)
	if _, sys := alice.do("GET", "/v1/system", ""); sys["enabled"] != true {
		t.Fatalf("a rejected disable applied: %v", sys)
	}
	// Requests expire after 24 hours.
	_, body = alice.do("POST", "/v1/system:disable", `{"reason":"later"}`)
	id3, _ := dig(body, "approval", "id").(string)
	c.Clock.Advance(24*time.Hour + time.Minute)
	if !testcluster.Eventually(5*time.Second, func() bool { return approvalState(bob, id3)["state"] == "EXPIRED" }) {
		t.Fatalf("the request did not expire: %v", approvalState(bob, id3))
	}
	if code, body = bob.do("POST", "/v1/approvals/"+id3+":approve", `{}`); code != http.StatusConflict {
		t.Fatalf("approving an expired request: %d %v", code, body)
	}
	_, body = bob.do("GET", "/v1/approvals?state=PENDING", "")
	if list, _ := body["approvals"].([]any); len(list) != 0 {
		t.Fatalf("pending approvals left: %v", list)
	}
	// Under break glass no second person is needed: the bypass is audited.
	bob.do("POST", "/v1/system:breakGlass", `{"reason":"incident 7: stop the fleet now","ttl":"600s"}`)
	if code, body = alice.do("POST", "/v1/system:disable", `{"reason":"incident 7"}`); code != 200 || body["enabled"] != false {
		t.Fatalf("disable under break glass: %d %v", code, body)
	}
	_, body = bob.do("GET", "/v1/audit?action=governance.break_glass_used", "")
	if recs, _ := body["records"].([]any); len(recs) != 1 || recs[0].(map[string]any)["target"] != "system.disable" {
		t.Fatalf("the bypass was not audited: %v", body)
	}
}

// The leader is killed right after an approval: the request is carried out
// exactly once (by it or by the next leader).
func TestApprovedRequestSurvivesLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c, tokens := approvalCluster(t)
	leaderIdx := c.LeaderIndex()
	follower := c.Nodes[(leaderIdx+1)%3]
	r := restClient{t: t, base: "http://" + follower.HTTPAddr}
	alice, bob := asUser{r, tokens["alice"]}, asUser{r, tokens["bob"]}
	if code, body := alice.do("POST", "/v1/emergency:trigger", `{"level":"LEVEL_2","reason":"outage","duration":"3600s"}`); code != 200 {
		t.Fatalf("trigger: %d %v", code, body)
	}
	code, body := alice.do("POST", "/v1/emergency:release", `{"reason":"recovered","force":true}`)
	id, _ := dig(body, "approval", "id").(string)
	if code != http.StatusAccepted || id == "" {
		t.Fatalf("force release: %d %v", code, body)
	}
	if code, body = bob.do("POST", "/v1/approvals/"+id+":approve", `{}`); code != 200 {
		t.Fatalf("approve: %d %v", code, body)
	}
	c.Kill(leaderIdx)
	c.WaitForLeader(10 * time.Second)
	if !testcluster.Eventually(10*time.Second, func() bool { return approvalState(bob, id)["state"] == "EXECUTED" }) {
		t.Fatalf("the approved release was not carried out exactly once: %v", approvalState(bob, id))
	}
	_, body = bob.do("GET", "/v1/audit?action=emergency.force_release", "")
	if recs, _ := body["records"].([]any); len(recs) != 1 {
		t.Fatalf("force releases audited: %v, want 1", recs)
	}
	if _, em := bob.do("GET", "/v1/emergency", ""); dig(em, "state", "active") != false {
		t.Fatalf("the emergency is still active: %v", em)
	}
}

// A snapshot restore waits for approval; the leader keeps the upload and
// restores it once approved, after checking its hash.
func TestRestoreNeedsApproval(t *testing.T) {
	if testing.Short() {
		t.Skip("in-process cluster test")
	}
	c, tokens := approvalCluster(t)
	r := restClient{t: t, base: "http://" + c.Leader().HTTPAddr}
	alice, bob := asUser{r, tokens["alice"]}, asUser{r, tokens["bob"]}
	req, _ := http.NewRequest("GET", r.base+"/v1/cluster/snapshot", nil)
	req.Header.Set("Authorization", "Bearer "+tokens["alice"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("save: %v %v", resp, err)
	}
	snap, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	alice.do("POST", "/v1/emergency:trigger", `{"level":"LEVEL_1","reason":"after the snapshot","duration":"3600s"}`)
	code, _, body := r.doAs("POST", "/v1/cluster/snapshot:restore", "application/octet-stream", string(snap), map[string]string{"Authorization": "Bearer " + tokens["alice"]})
	id, _ := dig(body, "approval", "id").(string)
	if code != http.StatusAccepted || dig(body, "approval", "operation") != "cluster.restore_snapshot" || !strings.Contains(dig(body, "approval", "summary").(string), "sha256") {
		t.Fatalf("restore by alice: %d %v", code, body)
	}
	if _, em := bob.do("GET", "/v1/emergency", ""); dig(em, "state", "level") != "LEVEL_1" {
		t.Fatalf("the state changed before approval: %v", em)
	}
	if code, body = bob.do("POST", "/v1/approvals/"+id+":approve", `{}`); code != 200 {
		t.Fatalf("approve: %d %v", code, body)
	}
	if !testcluster.Eventually(10*time.Second, func() bool {
		_, em := bob.do("GET", "/v1/emergency", "")
		return dig(em, "state", "level") == "NORMAL"
	}) {
		t.Fatal("the approved restore did not bring the state back")
	}
	if !testcluster.Eventually(5*time.Second, func() bool {
		_, body := bob.do("GET", "/v1/audit?action=cluster.snapshot_restore", "")
		recs, _ := body["records"].([]any)
		return len(recs) == 1
	}) {
		t.Fatal("the restore was not audited once")
	}
}
