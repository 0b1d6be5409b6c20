package deploy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/testcluster"
	"sigs.k8s.io/yaml"
)

var metricName = regexp.MustCompile(`\bbaldur_[a-zA-Z_]+`)

// referenced is every baldurd metric the dashboard's and the alert rules'
// PromQL names, and the alert rules.
func referenced(t *testing.T) (names []string, rules []map[string]any) {
	t.Helper()
	var dash struct {
		Panels []struct {
			Targets []struct{ Expr string }
		}
	}
	b, err := os.ReadFile("grafana/baldurd.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	seen := map[string]bool{}
	add := func(expr string) {
		for _, m := range metricName.FindAllString(expr, -1) {
			seen[m] = true
		}
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			add(tg.Expr)
		}
	}
	var file struct {
		Groups []struct {
			Name  string
			Rules []map[string]any
		}
	}
	b, err = os.ReadFile("prometheus/alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &file); err != nil {
		t.Fatalf("alert rules: %v", err)
	}
	for _, g := range file.Groups {
		for _, r := range g.Rules {
			add(r["expr"].(string))
			rules = append(rules, r)
		}
	}
	for m := range seen {
		names = append(names, m)
	}
	slices.Sort(names)
	return names, rules
}

// Every alert has a severity and a runbook that docs/deploy.md holds; the
// rules load with promtool where Debian's prometheus package is installed.
// (That every metric they and the dashboard use exists is checked on the
// cluster TestChartStartsARealCluster runs.)
func TestDashboardAndAlerts(t *testing.T) {
	names, rules := referenced(t)
	if len(names) < 20 || len(rules) < 6 {
		t.Fatalf("%d metrics, %d rules", len(names), len(rules))
	}
	deploy, _ := os.ReadFile("../docs/deploy.md")
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(deploy), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		var slug strings.Builder
		for _, r := range strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#"))) {
			switch {
			case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_':
				slug.WriteRune(r)
			case r == ' ':
				slug.WriteRune('-')
			}
		}
		anchors[slug.String()] = true
	}
	for _, r := range rules {
		labels, _ := r["labels"].(map[string]any)
		ann, _ := r["annotations"].(map[string]any)
		url, _ := ann["runbook_url"].(string)
		anchor := url[strings.LastIndexByte(url, '#')+1:]
		if labels["severity"] == nil || !strings.Contains(url, "docs/deploy.md#runbook-") || !anchors[anchor] {
			t.Errorf("alert %v: severity %v, runbook %q (not in docs/deploy.md)", r["alert"], labels["severity"], url)
		}
	}
	if p, err := exec.LookPath("promtool"); err == nil {
		if out, err := exec.Command(p, "check", "rules", "prometheus/alerts.yaml").CombinedOutput(); err != nil {
			t.Fatalf("promtool: %v\n%s", err, out)
		}
	} else {
		t.Log("promtool not installed: the rules were checked as YAML only")
	}

}

// exercise sends a cluster the calls that create the series the dashboard
// and the alert rules read, through a live pod.
func exercise(t *testing.T, pods []*pod) {
	t.Helper()
	var base string
	for _, p := range pods {
		if p.cmd.ProcessState == nil {
			base = "http://" + p.ip + ":7401"
			break
		}
	}
	r := testcluster.REST{T: t, Base: base}
	for _, call := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/v1/cluster", "", 200},
		// LEVEL_2 pauses replay: back to normal first.
		{"POST", "/v1/emergency:release", `{"reason":"metrics","force":true}`, 200},
		{"POST", "/v1/dlq/entries", `{"id":"01-chart-test","domain":"payment","failure_type":"TIMEOUT"}`, 200},
		{"POST", "/v1/leases", `{"name":"reports","holder":"w1","ttl":"10s"}`, 200},
		{"PUT", "/v1/circuits/psp/policy", `{"failure_threshold":3}`, 200},
		{"POST", "/v1/circuits/psp:forceOpen", `{"reason":"metrics"}`, 200},
		{"POST", "/v1/dlq:acquire", `{"domains":["payment"],"worker":"w1","lease":"30s"}`, 200},
	} {
		if code, body := r.Do(call.method, call.path, call.body); code != call.want {
			t.Fatalf("%s %s: %d %v, want %d", call.method, call.path, code, body, call.want)
		}
	}
	// Past --max-breakers=1 (the count is re-read once a second): a
	// limit refusal.
	if !testcluster.Eventually(5*time.Second, func() bool {
		code, _ := r.Do("PUT", fmt.Sprintf("/v1/circuits/other-%d/policy", time.Now().UnixNano()), `{"failure_threshold":3}`)
		return code == 429
	}) {
		t.Fatal("no limit refusal past --max-breakers")
	}
	_, body := r.Do("GET", "/v1/dlq/entries?domain=payment", "")
	id, _ := testcluster.Dig(body, "entries", "0", "id").(string)
	if code, body := r.Do("POST", "/v1/dlq/entries/"+id+":complete", `{"worker":"w1","success":false,"note":"still down"}`); code != 200 {
		t.Fatalf("complete: %d %v", code, body)
	}
}

// checkMetrics waits until every metric the dashboard and the alert
// rules use is in some pod's /metrics.
func checkMetrics(t *testing.T, pods []*pod) {
	t.Helper()
	names, _ := referenced(t)
	missing := func() []string {
		have := map[string]bool{}
		for _, p := range pods {
			if p.cmd.ProcessState != nil {
				continue
			}
			resp, err := http.Get("http://" + p.ip + ":7401/metrics")
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				line := sc.Text()
				if line == "" || line[0] == '#' {
					continue
				}
				have[line[:strings.IndexAny(line, "{ ")]] = true
			}
			resp.Body.Close()
		}
		var out []string
		for _, m := range names {
			if !have[m] {
				out = append(out, m)
			}
		}
		return out
	}
	var left []string
	// The leader probes members every 5 s (baldur_cluster_member_reachable).
	if !testcluster.Eventually(15*time.Second, func() bool { left = missing(); return len(left) == 0 }) {
		t.Fatalf("the dashboard or the alert rules use metrics no node exposes: %v", left)
	}
}
