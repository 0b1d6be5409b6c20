package python

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/internal/tlsconf"
	"github.com/baldurhq/baldurd/server"
)

func TestPythonClientTakesPartInFleetBreakers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and a Python process")
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed for this test (apt-get install python3)")
	}
	c := testcluster.New(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "baldur_client.py", "--base", "http://"+c.Nodes[0].HTTPAddr, "--demo").CombinedOutput()
	if err != nil {
		t.Fatalf("python client: %v\n%s", err, out)
	}
	text := string(out)
	if !strings.Contains(text, "state CLOSED") || !strings.Contains(text, "rejecting calls: fleet breaker py-payments is OPEN") {
		t.Fatalf("unexpected output:\n%s", text)
	}
	resp, err := http.Get("http://" + c.Nodes[0].HTTPAddr + "/v1/circuits/py-payments")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		State    string `json:"state"`
		Evidence struct {
			Trigger string `json:"trigger"`
		} `json:"evidence"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || got.State != "OPEN" || got.Evidence.Trigger == "" {
		t.Fatalf("server state: %+v %v", got, err)
	}
}

// The same client against a node serving TLS that requires tokens: it
// trusts the node with the CA and authenticates with a service token.
func TestPythonClientWithTLSAndToken(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and a Python process")
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed for this test (apt-get install python3)")
	}
	dir := t.TempDir()
	if _, err := tlsconf.Init(tlsconf.InitOptions{Dir: dir, Nodes: []string{"n1"}, Hosts: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("python-svc py-service-token-0123456789 service\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) {
		cfg.TokenFile = tokens
		cfg.CertFile, cfg.KeyFile = filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1-key.pem")
		cfg.PeerCertFile, cfg.PeerKeyFile, cfg.PeerCAFile = cfg.CertFile, cfg.KeyFile, filepath.Join(dir, "ca.pem")
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := "https://" + c.Nodes[0].HTTPAddr
	args := []string{"baldur_client.py", "--base", base, "--name", "py-tls", "--demo", "--cacert", filepath.Join(dir, "ca.pem")}
	out, err := exec.CommandContext(ctx, py, append(args, "--token", "py-service-token-0123456789")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rejecting calls: fleet breaker py-tls is OPEN") {
		t.Fatalf("python client over TLS with a token: %v\n%s", err, out)
	}
	// Without the token nothing is reported: the breaker never opens.
	out, err = exec.CommandContext(ctx, py, append(args[:len(args):len(args)], "--name", "py-anon", "--timeout", "2")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "401") {
		t.Fatalf("python client without a token: %v\n%s", err, out)
	}
}

// The client given several nodes rides out the death of the first, the
// leader, killed just before it starts: the watch and the reports move to
// the next node, the reports (writes with a request id) wait out the
// election, and the fleet breaker still opens.
func TestPythonClientRidesOutALeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster and a Python process")
	}
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed for this test (apt-get install python3)")
	}
	c := testcluster.New(t, 3)
	li := c.LeaderIndex()
	bases := []string{"http://" + c.Nodes[li].HTTPAddr}
	for i, n := range c.Nodes {
		if i != li {
			bases = append(bases, "http://"+n.HTTPAddr)
		}
	}
	c.Kill(li)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, py, "baldur_client.py", "--base", strings.Join(bases, ","), "--name", "py-failover", "--demo", "--timeout", "30").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rejecting calls: fleet breaker py-failover is OPEN") {
		t.Fatalf("python client with its first node dead: %v\n%s", err, out)
	}
	nl := c.WaitForLeader(10 * time.Second)
	resp, err := http.Get("http://" + nl.HTTPAddr + "/v1/circuits/py-failover")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		State string `json:"state"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || got.State != "OPEN" {
		t.Fatalf("server state: %+v %v", got, err)
	}
}
