package main_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/server"
)

// buildCLI builds the real baldurctl binary once per test binary.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "baldurctl")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build baldurctl: %v\n%s", err, out)
	}
	return bin
}

type cli struct {
	t    *testing.T
	bin  string
	addr string
}

func (c cli) run(args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	cmd := exec.Command(c.bin, append([]string{"--addr", c.addr}, args...)...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("run baldurctl: %v", err)
	}
	return o.String(), e.String(), code
}

func (c cli) ok(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("baldurctl %v: exit %d: %s", args, code, errOut)
	}
	return out
}

func (c cli) json(v any, args ...string) {
	c.t.Helper()
	out := c.ok(append([]string{"-o", "json"}, args...)...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		c.t.Fatalf("baldurctl %v: not JSON: %v\n%s", args, err, out)
	}
}

func TestCLIEmergencyAuditAndSnapshot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a node")
	}
	bin := buildCLI(t)
	c := testcluster.New(t, 1)
	ctl := cli{t: t, bin: bin, addr: c.Nodes[0].GRPCAddr}

	out := ctl.ok("emergency", "trigger", "LEVEL_2", "--reason", "payments outage", "--duration", "30m")
	if !strings.Contains(out, "LEVEL_2") || !strings.Contains(out, "payments outage") {
		t.Fatalf("trigger output:\n%s", out)
	}
	var status struct {
		State struct {
			Level, Reason string
			Active        bool
		}
	}
	ctl.json(&status, "emergency", "status")
	if status.State.Level != "LEVEL_2" || !status.State.Active {
		t.Fatalf("status: %+v", status)
	}
	// Inside the stabilization period a plain release fails with a one-line reason.
	_, errOut, code := ctl.run("emergency", "release", "--reason", "recovered")
	if code == 0 || !strings.HasPrefix(errOut, "baldurctl: RECOVERY_BLOCKED:") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
		t.Fatalf("blocked release: exit %d stderr %q", code, errOut)
	}
	ctl.ok("emergency", "release", "--reason", "recovered", "--force")
	var hist struct {
		Changes []struct{ Action string } `json:"changes"`
	}
	ctl.json(&hist, "emergency", "history")
	if len(hist.Changes) != 2 || hist.Changes[0].Action != "force_release" || hist.Changes[1].Action != "trigger" {
		t.Fatalf("history: %+v", hist)
	}
	if out := ctl.ok("emergency", "history"); !strings.Contains(out, "force_release") {
		t.Fatalf("history table:\n%s", out)
	}

	// Bad input: one line, non-zero exit.
	for _, args := range [][]string{
		{"emergency", "trigger", "LEVEL_9", "--reason", "x"},
		{"emergency", "trigger", "LEVEL_1"},
		{"emergency", "trigger", "LEVEL_1", "--reason", "x", "--duration", "100ms"},
		{"cluster", "remove-member", "nope"},
		{"-o", "yaml", "cluster", "status"},
	} {
		_, errOut, code := ctl.run(args...)
		if code == 0 || !strings.HasPrefix(errOut, "baldurctl: ") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("baldurctl %v: exit %d stderr %q; want one line and a non-zero exit", args, code, errOut)
		}
	}
	// A scale-down hook names ordinals that may not be members.
	if out := ctl.ok("cluster", "remove-member", "nope-3", "nope-4", "--missing-ok", "--reason", "scale down"); !strings.Contains(out, "VOTER") {
		t.Errorf("remove-member --missing-ok:\n%s", out)
	}
	if _, errOut, code := (cli{t: t, bin: bin, addr: "127.0.0.1:1"}).run("--timeout", "2s", "cluster", "status"); code == 0 || !strings.Contains(errOut, "cannot reach baldurd") {
		t.Errorf("unreachable server: exit %d stderr %q", code, errOut)
	}

	// Cluster status and members.
	if out := ctl.ok("cluster", "status"); !strings.Contains(out, "leader: n1") || !strings.Contains(out, "VOTER") {
		t.Fatalf("cluster status:\n%s", out)
	}

	// Snapshot save and restore with progress on stderr.
	file := filepath.Join(t.TempDir(), "state.snap")
	_, errOut, code = ctl.run("cluster", "snapshot", "save", file)
	if code != 0 || !strings.Contains(errOut, "saving snapshot") || !strings.Contains(errOut, "100%") {
		t.Fatalf("snapshot save: exit %d stderr %q", code, errOut)
	}
	ctl.ok("emergency", "trigger", "LEVEL_1", "--reason", "after the backup")
	if _, errOut, code = ctl.run("cluster", "snapshot", "restore", file); code != 0 || !strings.Contains(errOut, "uploading snapshot") {
		t.Fatalf("snapshot restore: exit %d stderr %q", code, errOut)
	}
	ctl.json(&status, "emergency", "status")
	if status.State.Active {
		t.Fatalf("after restoring the backup the later trigger should be gone: %+v", status)
	}
	corrupt := filepath.Join(t.TempDir(), "corrupt.snap")
	raw, _ := os.ReadFile(file)
	raw[len(raw)-10] ^= 0xff
	os.WriteFile(corrupt, raw, 0o600)
	if _, errOut, code = ctl.run("cluster", "snapshot", "restore", corrupt); code == 0 || !strings.Contains(errOut, "INVALID_SNAPSHOT") {
		t.Fatalf("corrupt restore: exit %d stderr %q", code, errOut)
	}

	// audit verify passes, then detects a tampered record.
	if out := ctl.ok("audit", "verify"); !strings.HasPrefix(out, "ok:") {
		t.Fatalf("audit verify: %s", out)
	}
	if out := ctl.ok("audit", "list", "--action", "emergency.trigger"); !strings.Contains(out, "payments outage") {
		t.Fatalf("audit list:\n%s", out)
	}
	// The trail exported as JSON lines verifies offline; an edited line
	// does not; an export from a later record starts from its link.
	trail := filepath.Join(t.TempDir(), "trail.jsonl")
	os.WriteFile(trail, []byte(ctl.ok("audit", "export")), 0o600)
	if out := ctl.ok("audit", "verify-file", trail); !strings.HasPrefix(out, "ok:") {
		t.Fatalf("verify-file: %s", out)
	}
	lines := strings.Split(strings.TrimSpace(string(must(os.ReadFile(trail)))), "\n")
	if len(lines) < 3 {
		t.Fatalf("export has %d lines", len(lines))
	}
	tail := filepath.Join(t.TempDir(), "tail.jsonl")
	os.WriteFile(tail, []byte(ctl.ok("audit", "export", "--since-seq", "2")), 0o600)
	if out := ctl.ok("audit", "verify-file", tail); !strings.HasPrefix(out, "ok:") || !strings.Contains(out, "after record 2") {
		t.Fatalf("verify-file of a later part: %s", out)
	}
	lines[1] = strings.Replace(lines[1], `"actor":"`, `"actor":"x`, 1)
	forged := filepath.Join(t.TempDir(), "forged.jsonl")
	os.WriteFile(forged, []byte(strings.Join(lines, "\n")), 0o600)
	if _, errOut, code := ctl.run("audit", "verify-file", forged); code == 0 || !strings.Contains(errOut, "first broken record 2") {
		t.Fatalf("forged export: exit %d %s", code, errOut)
	}
	c.Kill(0)
	c.TamperAuditRecord(0, 2, "actor", "somebody-else")
	c.Restart(0)
	c.WaitForLeader(10 * time.Second)
	_, errOut, code = ctl.run("audit", "verify")
	if code == 0 || !strings.Contains(errOut, "AUDIT_CHAIN_BROKEN") || !strings.Contains(errOut, "first broken record 2") {
		t.Fatalf("tampered chain: exit %d stderr %q", code, errOut)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestCompletion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildCLI(t)
	out, err := exec.Command(bin, "completion", "bash").Output()
	if err != nil || !strings.Contains(string(out), "baldurctl") {
		t.Fatalf("completion bash: %v", err)
	}
}

func TestCLICircuits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a node")
	}
	bin := buildCLI(t)
	c := testcluster.New(t, 1)
	ctl := cli{t: t, bin: bin, addr: c.Nodes[0].GRPCAddr}
	out := ctl.ok("circuit", "policy", "set", "payments", "--min-reporters", "2", "--failure-rate-threshold", "0", "--recovery-timeout", "30s", "--reason", "tune")
	if !strings.Contains(out, "0% of >=10 calls") || !strings.Contains(out, "min reporters 2") || !strings.Contains(out, "recovery 30s") {
		t.Fatalf("policy set:\n%s", out)
	}
	var policy struct {
		FailureThreshold     int     `json:"failure_threshold"`
		FailureRateThreshold float64 `json:"failure_rate_threshold"`
		MinReporters         int     `json:"min_reporters"`
	}
	ctl.json(&policy, "circuit", "policy", "get", "payments")
	if policy.FailureThreshold != 5 || policy.FailureRateThreshold != 0 || policy.MinReporters != 2 {
		t.Fatalf("policy get: %+v (unset fields take the defaults)", policy)
	}
	out = ctl.ok("circuit", "force-open", "payments", "--reason", "vendor maintenance", "--ttl", "10m")
	if !strings.Contains(out, "state:     OPEN") || !strings.Contains(out, "pinned:") {
		t.Fatalf("force-open:\n%s", out)
	}
	if out := ctl.ok("circuit", "list"); !strings.Contains(out, "payments") || !strings.Contains(out, "force_open") {
		t.Fatalf("list:\n%s", out)
	}
	ctl.ok("circuit", "reset", "payments", "--reason", "done")
	var got struct {
		State  string `json:"state"`
		Pinned bool   `json:"pinned"`
	}
	ctl.json(&got, "circuit", "get", "payments")
	if got.State != "CLOSED" || got.Pinned {
		t.Fatalf("after reset: %+v", got)
	}
	if out := ctl.ok("circuit", "kill-switch", "on", "--reason", "incident"); !strings.Contains(out, "kill switch ON") {
		t.Fatalf("kill switch: %s", out)
	}
	for _, tc := range []struct {
		args   []string
		reason string
	}{
		{[]string{"circuit", "force-open", "payments", "--reason", "x", "--ttl", "10s"}, "TTL_OUT_OF_RANGE"},
		{[]string{"circuit", "force-close", "nope", "--reason", "x"}, "CIRCUIT_NOT_FOUND"},
		{[]string{"circuit", "force-close", "payments"}, "REASON_REQUIRED"},
		{[]string{"circuit", "policy", "set", "payments", "--failure-rate-threshold", "120"}, "INVALID_POLICY"},
	} {
		_, errOut, code := ctl.run(tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.reason) {
			t.Errorf("baldurctl %v: exit %d %q, want %s", tc.args, code, errOut, tc.reason)
		}
	}
}

func TestCLICoordination(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a node")
	}
	bin := buildCLI(t)
	c := testcluster.New(t, 1)
	ctl := cli{t: t, bin: bin, addr: c.Nodes[0].GRPCAddr}
	r := func(method, path, body string) map[string]any {
		req, _ := http.NewRequest(method, "http://"+c.Nodes[0].HTTPAddr+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return out
	}
	got := r("POST", "/v1/leases", `{"name":"billing-export","holder":"a","ttl":"30s"}`)
	lease, _ := got["lease"].(map[string]any)
	if lease == nil || lease["holder"] != "a" || lease["fencing_token"] == nil {
		t.Fatalf("acquire over REST: %v", got)
	}
	if out := ctl.ok("lease", "list"); !strings.Contains(out, "billing-export") || !strings.Contains(out, "a ") {
		t.Fatalf("lease list:\n%s", out)
	}
	r("POST", "/v1/elections/primary:campaign", `{"holder":"node-1","ttl":"30s"}`)
	if out := ctl.ok("election", "get", "primary"); !strings.Contains(out, "leader:    node-1") {
		t.Fatalf("election get:\n%s", out)
	}
	r("POST", "/v1/jobs", `{"resource":"reports","name":"rollup","interval":"60s"}`)
	if out := ctl.ok("job", "list"); !strings.Contains(out, "rollup") || !strings.Contains(out, "every 1m0s") {
		t.Fatalf("job list:\n%s", out)
	}
	if out := ctl.ok("job", "disable", "reports", "rollup", "--reason", "maintenance"); !strings.Contains(out, "enabled=false") {
		t.Fatalf("job disable: %s", out)
	}
	ctl.ok("job", "enable", "reports", "rollup")
	id := fmt.Sprint(lease["id"])
	if out := ctl.ok("lease", "revoke", id, "--reason", "stuck exporter"); !strings.Contains(out, "revoked lease "+id) {
		t.Fatalf("lease revoke: %s", out)
	}
	for _, tc := range []struct {
		args   []string
		reason string
	}{
		{[]string{"lease", "revoke", id, "--reason", "again"}, "LEASE_NOT_FOUND"},
		{[]string{"lease", "revoke", "abc", "--reason", "x"}, "want a positive number"},
		{[]string{"job", "enable", "reports", "nope"}, "JOB_NOT_FOUND"},
	} {
		_, errOut, code := ctl.run(tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.reason) {
			t.Errorf("baldurctl %v: exit %d %q, want %s", tc.args, code, errOut, tc.reason)
		}
	}
}

func TestCLIDLQ(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a node")
	}
	bin := buildCLI(t)
	c := testcluster.New(t, 1)
	ctl := cli{t: t, bin: bin, addr: c.Nodes[0].GRPCAddr}
	post := func(path, body string) {
		resp, err := http.Post("http://"+c.Nodes[0].HTTPAddr+path, "application/json", strings.NewReader(body))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("POST %s: %v %v", path, resp, err)
		}
		resp.Body.Close()
	}
	for i := 0; i < 3; i++ {
		post("/v1/dlq/entries", fmt.Sprintf(`{"id":"e%d","domain":"payment","failure_type":"MAX_RETRIES_TIMEOUT","error_code":"Timeout"}`, i))
	}
	if out := ctl.ok("dlq", "list", "--domain", "payment"); strings.Count(out, "PENDING") != 3 {
		t.Fatalf("dlq list:\n%s", out)
	}
	if out := ctl.ok("dlq", "stats"); !strings.Contains(out, "total: 3") {
		t.Fatalf("dlq stats:\n%s", out)
	}
	if out := ctl.ok("dlq", "resolve", "e0", "--reason", "handled"); !strings.Contains(out, "e0: RESOLVED") {
		t.Fatalf("resolve: %s", out)
	}
	var e struct {
		Status         string `json:"status"`
		ResolutionNote string `json:"resolution_note"`
	}
	ctl.json(&e, "dlq", "get", "e0")
	if e.Status != "RESOLVED" {
		t.Fatalf("get: %+v", e)
	}
	// Batch replay with progress (no worker runs, so the batch times out pending).
	out, errOut, code := ctl.run("dlq", "replay", "--domain", "payment", "--status", "PENDING", "--max", "10", "--rate", "50", "--batch-timeout", "1s")
	if code != 0 || !strings.Contains(errOut, "batch 1 (2 entries)") || !strings.Contains(out, "2 still pending") {
		t.Fatalf("batch replay: exit %d %q %q", code, out, errOut)
	}
	// Purge asks for confirmation.
	cmd := exec.Command(bin, "--addr", c.Nodes[0].GRPCAddr, "dlq", "purge", "e0")
	cmd.Stdin = strings.NewReader("no\n")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not confirmed") {
		t.Fatalf("unconfirmed purge: %v %s", err, out)
	}
	if out := ctl.ok("dlq", "purge", "e0", "--yes"); !strings.Contains(out, "purged 0") {
		t.Fatalf("purge of a non-archived entry: %s", out)
	}
	for _, tc := range []struct {
		args   []string
		reason string
	}{
		{[]string{"dlq", "get", "nope"}, "DLQ_ENTRY_NOT_FOUND"},
		{[]string{"dlq", "resolve", "e0"}, "DLQ_STATE_CONFLICT"},
		{[]string{"dlq", "redrive", "e1"}, "REASON_REQUIRED"},
		{[]string{"dlq", "list", "--page-token", "zz"}, "unknown flag"},
	} {
		_, errOut, code := ctl.run(tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.reason) {
			t.Errorf("baldurctl %v: exit %d %q, want %s", tc.args, code, errOut, tc.reason)
		}
	}
}

func TestCLIConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a node")
	}
	bin := buildCLI(t)
	c := testcluster.New(t, 1)
	ctl := cli{t: t, bin: bin, addr: c.Nodes[0].GRPCAddr}
	out := ctl.ok("config", "get", "retry_defaults")
	if !strings.Contains(out, "version:   0") || !strings.Contains(out, `"max_attempts": 3`) {
		t.Fatalf("config get before any change:\n%s", out)
	}
	if _, errOut, code := ctl.run("config", "set", "retry_defaults", `{"max_attempts":4}`); code == 0 || !strings.Contains(errOut, "--expected-version") {
		t.Fatalf("set without a version: exit %d: %s", code, errOut)
	}
	file := filepath.Join(t.TempDir(), "retry.json")
	if err := os.WriteFile(file, []byte(`{"max_attempts": 4, "backoff": "linear"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out = ctl.ok("config", "set", "retry_defaults", "@"+file, "--expected-version", "0", "--reason", "slower retries")
	if !strings.Contains(out, "version:   1") || !strings.Contains(out, "reason:    slower retries") {
		t.Fatalf("config set:\n%s", out)
	}
	if _, errOut, code := ctl.run("config", "set", "retry_defaults", `{"max_attempts":5}`, "--expected-version", "0"); code == 0 || !strings.Contains(errOut, "VERSION_CONFLICT") || !strings.Contains(errOut, "version 1") {
		t.Fatalf("stale set: exit %d: %s", code, errOut)
	}
	ctl.ok("config", "set", "retry_defaults", `{"max_attempts":6}`, "--force")
	out = ctl.ok("config", "history", "retry_defaults")
	if !strings.Contains(out, "version 2") || !strings.Contains(out, "~ max_attempts: 4 → 6") || !strings.Contains(out, `~ backoff: "linear" → "exponential"`) {
		t.Fatalf("config history:\n%s", out)
	}
	out = ctl.ok("config", "diff", "retry_defaults", "--from", "0")
	if !strings.Contains(out, "version 0 → 2") || !strings.Contains(out, "~ max_attempts: 3 → 6") || strings.Contains(out, "backoff") {
		t.Fatalf("config diff --from 0:\n%s", out)
	}
	out = ctl.ok("config", "diff", "retry_defaults", "--values", `{"max_attempts":6,"jitter":0.5}`)
	if strings.Contains(out, "max_attempts") || !strings.Contains(out, "~ jitter: 0.2 → 0.5") {
		t.Fatalf("config diff --values:\n%s", out)
	}
	var list struct {
		Sections []struct {
			Section string `json:"section"`
			Version string `json:"version"`
		} `json:"sections"`
	}
	ctl.json(&list, "config", "get")
	if len(list.Sections) != 8 || list.Sections[6].Section != "retry_defaults" || list.Sections[6].Version != "2" {
		t.Fatalf("config get -o json: %+v", list)
	}
}

func TestCLICanary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a node")
	}
	bin := buildCLI(t)
	c := testcluster.New(t, 1)
	ctl := cli{t: t, bin: bin, addr: c.Nodes[0].GRPCAddr}
	if _, errOut, code := ctl.run("canary", "create", "flags", `{"x":{"enabled":true}}`, "--stage", "a:50:1m", "--stage", "b:10:1m"); code == 0 || !strings.Contains(errOut, "stages[1].percentage") {
		t.Fatalf("stages out of order: exit %d: %s", code, errOut)
	}
	var created struct {
		Rollout struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"rollout"`
	}
	ctl.json(&created, "canary", "create", "flags", `{"x":{"enabled":true}}`, "--stage", "half:50:1m", "--stage", "all:100:1m:manual", "--reason", "try x", "--min-requests", "10")
	id := created.Rollout.ID
	if id == "" || created.Rollout.State != "CREATED" {
		t.Fatalf("create: %+v", created)
	}
	out := ctl.ok("canary", "start", id, "--reason", "go")
	if !strings.Contains(out, "state:     CANARY") || !strings.Contains(out, "▶ 0 half") || !strings.Contains(out, "manual") {
		t.Fatalf("start:\n%s", out)
	}
	if _, errOut, code := ctl.run("canary", "promote", id, "--expected-stage", "0"); code == 0 || !strings.Contains(errOut, "JUDGMENT_BLOCKS_PROMOTION") {
		t.Fatalf("promote without evidence: exit %d: %s", code, errOut)
	}
	out = ctl.ok("canary", "promote", id, "--expected-stage", "0", "--force", "--reason", "looks fine")
	if !strings.Contains(out, "✓ 0 half") || !strings.Contains(out, "▶ 1 all") || !strings.Contains(out, "progress:  [###############...............] 50%") {
		t.Fatalf("promote:\n%s", out)
	}
	if _, errOut, code := ctl.run("canary", "promote", id, "--expected-stage", "0", "--force"); code == 0 || !strings.Contains(errOut, "STAGE_CONFLICT") {
		t.Fatalf("stale promote: exit %d: %s", code, errOut)
	}
	if out = ctl.ok("canary", "pause", id); !strings.Contains(out, "state:     PAUSED") {
		t.Fatalf("pause:\n%s", out)
	}
	ctl.ok("canary", "resume", id)
	if out = ctl.ok("canary", "list"); !strings.Contains(out, id) || !strings.Contains(out, "2/2 all") {
		t.Fatalf("list:\n%s", out)
	}
	// watch follows the rollout until it ends; rolling it back ends it.
	watch := exec.Command(bin, "--addr", c.Nodes[0].GRPCAddr, "canary", "watch", id)
	var wout strings.Builder
	watch.Stdout, watch.Stderr = &wout, &wout
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	ctl.ok("canary", "rollback", id, "--reason", "enough")
	done := make(chan error, 1)
	go func() { done <- watch.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(wout.String(), "CANARY stage 2/2") || !strings.Contains(wout.String(), "ended ROLLED_BACK") {
			t.Fatalf("watch: %v\n%s", err, wout.String())
		}
	case <-time.After(10 * time.Second):
		watch.Process.Kill()
		t.Fatalf("watch did not end with the rollout:\n%s", wout.String())
	}
	out = ctl.ok("canary", "history", id)
	for _, a := range []string{"create", "start", "promote", "pause", "resume", "rollback"} {
		if !strings.Contains(out, a) {
			t.Fatalf("history lacks %s:\n%s", a, out)
		}
	}
	if out = ctl.ok("canary", "get", id); !strings.Contains(out, "state:     ROLLED_BACK") || !strings.Contains(out, "by anonymous") {
		t.Fatalf("get:\n%s", out)
	}
	if out = ctl.ok("canary", "panic-rollback", "--reason", "drill"); !strings.Contains(out, "no active rollout") {
		t.Fatalf("panic-rollback:\n%s", out)
	}
}

func TestCLISystem(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a node")
	}
	bin := buildCLI(t)
	c := testcluster.New(t, 1)
	ctl := cli{t: t, bin: bin, addr: c.Nodes[0].GRPCAddr}
	if out := ctl.ok("system", "status"); !strings.Contains(out, "system:       enabled") || !strings.Contains(out, "break glass:  off") {
		t.Fatalf("status:\n%s", out)
	}
	if _, errOut, code := ctl.run("system", "disable"); code == 0 || !strings.Contains(errOut, "reason") {
		t.Fatalf("disable without a reason: exit %d: %s", code, errOut)
	}
	if out := ctl.ok("system", "disable", "--reason", "stop"); !strings.Contains(out, "DISABLED") {
		t.Fatalf("disable:\n%s", out)
	}
	ctl.ok("system", "enable", "--reason", "go")
	ctl.ok("system", "dry-run")
	if _, errOut, code := ctl.run("system", "live"); code == 0 || !strings.Contains(errOut, "confirm") {
		t.Fatalf("live without --confirm: exit %d: %s", code, errOut)
	}
	ctl.ok("system", "live", "--confirm")
	if out := ctl.ok("system", "strict", "--reason", "audit week"); !strings.Contains(out, "mode:         STRICT since") {
		t.Fatalf("strict:\n%s", out)
	}
	if out := ctl.ok("system", "break-glass", "--reason", "incident 42 hotfix", "--ttl", "30m"); !strings.Contains(out, "ENGAGED by") {
		t.Fatalf("break-glass:\n%s", out)
	}
	var st struct {
		Mode       string `json:"mode"`
		BreakGlass struct {
			Active bool `json:"active"`
		} `json:"break_glass"`
	}
	ctl.json(&st, "system", "end-break-glass")
	if st.Mode != "STRICT" || st.BreakGlass.Active {
		t.Fatalf("end-break-glass: %+v", st)
	}
}

func TestCLIApproval(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a node")
	}
	bin := buildCLI(t)
	file := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(file, []byte("alice tok-alice-0123456789abcdef admin\nbob tok-bob-0123456789abcdef admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.TokenFile = file }))
	alice := cli{t: t, bin: bin, addr: c.Nodes[0].GRPCAddr}
	run := func(token string, args ...string) (string, string, int) {
		return alice.run(append([]string{"--token", token}, args...)...)
	}
	_, errOut, code := run("tok-alice-0123456789abcdef", "system", "disable", "--reason", "stop")
	if code == 0 || !strings.Contains(errOut, "APPROVAL_REQUIRED") || !strings.Contains(errOut, "change request apr-") {
		t.Fatalf("disable by alice: exit %d: %s", code, errOut)
	}
	out, _, _ := run("tok-bob-0123456789abcdef", "approval", "list", "--state", "PENDING")
	fields := strings.Fields(strings.Split(out, "\n")[1])
	if len(fields) < 4 || !strings.HasPrefix(fields[0], "apr-") || fields[1] != "system.disable" || fields[3] != "alice" {
		t.Fatalf("approval list:\n%s", out)
	}
	if _, errOut, code := run("tok-alice-0123456789abcdef", "approval", "approve", fields[0]); code == 0 || !strings.Contains(errOut, "SELF_APPROVAL") {
		t.Fatalf("self-approval: exit %d: %s", code, errOut)
	}
	if out, errOut, code := run("tok-bob-0123456789abcdef", "approval", "approve", fields[0], "--reason", "ok"); code != 0 || !strings.Contains(out, "APPROVED") {
		t.Fatalf("approve: exit %d: %s %s", code, out, errOut)
	}
	if !testcluster.Eventually(5*time.Second, func() bool {
		out, _, _ := run("tok-bob-0123456789abcdef", "system", "status")
		return strings.Contains(out, "DISABLED")
	}) {
		t.Fatal("the approved disable did not apply")
	}
}

func TestCLIAdmission(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and starts a node")
	}
	bin := buildCLI(t)
	c := testcluster.New(t, 1)
	ctl := cli{t: t, bin: bin, addr: c.Nodes[0].GRPCAddr}
	if out := ctl.ok("ratelimit", "set", "orders", "--rate", "1000", "--burst", "100"); !strings.Contains(out, "orders: 1000 per 1s, burst 100, scope global") {
		t.Fatalf("ratelimit set:\n%s", out)
	}
	if _, errOut, code := ctl.run("ratelimit", "set", "orders", "--rate", "0", "--burst", "1"); code == 0 || !strings.Contains(errOut, "rate") {
		t.Fatalf("a zero rate: exit %d: %s", code, errOut)
	}
	var rl struct {
		Limit struct {
			Rate float64 `json:"rate"`
		} `json:"limit"`
	}
	ctl.json(&rl, "ratelimit", "get", "orders")
	if rl.Limit.Rate != 1000 {
		t.Fatalf("ratelimit get: %+v", rl)
	}
	if out := ctl.ok("bulkhead", "set", "database", "--max-concurrent", "10", "--max-wait", "50ms"); !strings.Contains(out, "database: max 10 concurrent, wait 50ms") {
		t.Fatalf("bulkhead set:\n%s", out)
	}
	if out := ctl.ok("bulkhead", "list"); !strings.Contains(out, "database: max 10") {
		t.Fatalf("bulkhead list:\n%s", out)
	}
	if out := ctl.ok("throttle", "set", "psp", "--max-limit", "50", "--sla-warning", "100ms"); !strings.Contains(out, "psp: limit 10..50 (initial 50) per 1m0s, SLA 100ms/500ms, breaker psp") {
		t.Fatalf("throttle set:\n%s", out)
	}
	if out := ctl.ok("throttle", "status"); !strings.Contains(out, "psp: limit 10..50") {
		t.Fatalf("throttle status:\n%s", out)
	}
	if out := ctl.ok("ratelimit", "delete", "orders", "--reason", "retired"); !strings.Contains(out, "removed") {
		t.Fatalf("delete:\n%s", out)
	}
	if _, errOut, code := ctl.run("ratelimit", "get", "orders"); code == 0 || !strings.Contains(errOut, "not configured") {
		t.Fatalf("get after delete: exit %d: %s", code, errOut)
	}
}
