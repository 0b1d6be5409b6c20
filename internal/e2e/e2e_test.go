package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// buildBaldurd builds the real binary once per test process
// (BALDUR_E2E_BINARY names a prebuilt one instead, to compare builds).
func buildBaldurd() (string, error) {
	if bin := os.Getenv("BALDUR_E2E_BINARY"); bin != "" {
		return bin, nil
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "baldurd-e2e")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "baldurd")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/baldurhq/baldurd/cmd/baldurd").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build baldurd: %v\n%s", err, out)
		}
	})
	return binPath, buildErr
}

func baldurd(t testing.TB) string {
	t.Helper()
	bin, err := buildBaldurd()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type proc struct {
	id, dir          string
	grpc, http, raft string
	cmd              *exec.Cmd
	done             chan error
	log              *os.File
}

type cluster struct {
	t     testing.TB
	bin   string
	peers string
	nodes []*proc
	// extra gives a node's flags beyond the addresses (TLS files, say).
	extra func(p *proc) []string
	// auditKey is the --audit-key-file every node gets.
	auditKey string
}

func startCluster(t testing.TB, n int) *cluster { return startClusterWith(t, n, nil) }

func startClusterWith(t testing.TB, n int, extra func(p *proc) []string) *cluster {
	c := &cluster{t: t, bin: baldurd(t), extra: extra}
	// Outside --dev a node needs an audit key (the same file on every node).
	c.auditKey = filepath.Join(t.TempDir(), "audit.key")
	if err := os.WriteFile(c.auditKey, []byte("e2e-audit-key-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, p := range c.nodes {
			if p.cmd != nil {
				p.cmd.Process.Kill()
				<-p.done
			}
		}
	})
	// A failed test shows the end of every node's log.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range c.nodes {
			log, _ := os.ReadFile(filepath.Join(p.dir, "baldurd.log"))
			lines := strings.Split(strings.TrimSpace(string(log)), "\n")
			t.Logf("last lines of %s's log:\n%s", p.id, strings.Join(lines[max(0, len(lines)-15):], "\n"))
		}
	})
	// Ports are chosen free and then bound by the process; in between
	// another process (a parallel test package's connection, say) can take
	// one. A node that exits at start is started again, with the whole
	// cluster, on fresh ports.
	for attempt := 1; ; attempt++ {
		var peers []string
		c.nodes = nil
		for i := 0; i < n; i++ {
			p := &proc{id: fmt.Sprintf("n%d", i+1), dir: t.TempDir(), grpc: freePort(t), http: freePort(t), raft: freePort(t)}
			peers = append(peers, p.id+"="+p.raft)
			c.nodes = append(c.nodes, p)
		}
		c.peers = strings.Join(peers, ",")
		for i := range c.nodes {
			c.start(i)
		}
		failed := c.waitListening()
		if failed == nil {
			return c
		}
		log, _ := os.ReadFile(filepath.Join(failed.dir, "baldurd.log"))
		for i := range c.nodes {
			if c.nodes[i].cmd != nil {
				c.kill9(i)
			}
		}
		if attempt == 3 {
			t.Fatalf("%s did not start listening on %s:\n%s", failed.id, failed.grpc, log)
		}
		t.Logf("%s did not start (attempt %d), starting over on fresh ports:\n%.600s", failed.id, attempt, log)
	}
}

// waitListening waits until every node accepts connections on its gRPC,
// HTTP and Raft ports (a loaded machine can take seconds to start a
// process) and returns the first that exited or did not listen within 30 s.
func (c *cluster) waitListening() *proc {
	for _, p := range c.nodes {
		exited := false
		ok := eventually(30*time.Second, func() bool {
			select {
			case err := <-p.done:
				p.done <- err // for whoever waits on it next
				exited = true
				return true
			default:
			}
			// All three ports: a node that bound one and then found
			// another taken exits.
			for _, addr := range []string{p.grpc, p.http, p.raft} {
				conn, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					return false
				}
				conn.Close()
			}
			return true
		})
		if !ok || exited {
			return p
		}
	}
	return nil
}

func (c *cluster) start(i int) {
	p := c.nodes[i]
	logf, err := os.OpenFile(filepath.Join(p.dir, "baldurd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	p.log = logf
	p.cmd = exec.Command(c.bin, "--node-id", p.id, "--data-dir", filepath.Join(p.dir, "data"),
		"--grpc-addr", p.grpc, "--http-addr", p.http, "--raft-addr", p.raft, "--peers", c.peers, "--shutdown-timeout", "10s",
		"--audit-key-file", c.auditKey)
	if c.extra != nil {
		p.cmd.Args = append(p.cmd.Args, c.extra(p)...)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p.done = make(chan error, 1)
	cmd := p.cmd
	go func() { p.done <- cmd.Wait(); logf.Close() }()
}

// kill9 sends node i SIGKILL and waits for the process to end.
func (c *cluster) kill9(i int) {
	p := c.nodes[i]
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.cmd = nil
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

type clusterView struct {
	LeaderID     string `json:"leader_id"`
	AppliedIndex string `json:"applied_index"`
}

func (p *proc) view() (clusterView, error) {
	var v clusterView
	resp, err := httpClient.Get("http://" + p.http + "/v1/cluster?consistency=stale")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return v, fmt.Errorf("status %d", resp.StatusCode)
	}
	return v, json.NewDecoder(resp.Body).Decode(&v)
}

func (p *proc) ready() bool {
	resp, err := httpClient.Get("http://" + p.http + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == 200
}

func (p *proc) trigger(level, reason string) (int, error) {
	body := fmt.Sprintf(`{"level":%q,"reason":%q}`, level, reason)
	resp, err := httpClient.Post("http://"+p.http+"/v1/emergency:trigger", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (p *proc) level() string {
	resp, err := httpClient.Get("http://" + p.http + "/v1/emergency?consistency=stale")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var v struct {
		State struct{ Level, Reason string } `json:"state"`
	}
	json.NewDecoder(resp.Body).Decode(&v)
	return v.State.Level + "/" + v.State.Reason
}

func eventually(timeout time.Duration, f func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if f() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// leader returns the index of the node every running node agrees leads.
func (c *cluster) leader(exclude string) int {
	idx := -1
	eventually(15*time.Second, func() bool {
		agreed := ""
		for _, p := range c.nodes {
			if p.cmd == nil || p.id == exclude {
				continue
			}
			v, err := p.view()
			if err != nil || v.LeaderID == "" || v.LeaderID == exclude || (agreed != "" && v.LeaderID != agreed) {
				return false
			}
			agreed = v.LeaderID
		}
		for i, p := range c.nodes {
			if p.id == agreed && p.ready() {
				idx = i
				return true
			}
		}
		return false
	})
	if idx < 0 {
		c.t.Fatalf("no agreed leader (excluding %q)", exclude)
	}
	return idx
}

func TestProcessKillRestartAndSigterm(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	c := startCluster(t, 3)
	li := c.leader("")
	leader := c.nodes[li]
	if code, err := leader.trigger("LEVEL_1", "before kill"); err != nil || code != 200 {
		t.Fatalf("first write: %d %v", code, err)
	}

	// The process bridges the Raft library's metrics next to its own.
	resp, err := httpClient.Get("http://" + leader.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metricsText, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"baldur_node_applied_index", "baldur_raft_commitTime", "baldur_emergency_mode_level"} {
		if resp.StatusCode != 200 || !strings.Contains(string(metricsText), name) {
			t.Fatalf("/metrics (%d) lacks %s:\n%.2000s", resp.StatusCode, name, metricsText)
		}
	}

	// kill -9 of the leader: a new leader within 5 s.
	killed := time.Now()
	c.kill9(li)
	ni := c.leader(leader.id)
	elapsed := time.Since(killed)
	t.Logf("kill -9 of leader %s → new leader %s after %v", leader.id, c.nodes[ni].id, elapsed)
	if elapsed > 5*time.Second {
		t.Fatalf("new leader after %v, want ≤ 5s", elapsed)
	}
	if code, err := c.nodes[ni].trigger("LEVEL_2", "after kill"); err != nil || code != 200 {
		t.Fatalf("write after failover: %d %v", code, err)
	}

	// The killed node restarts and rejoins with the latest state.
	c.start(li)
	if !eventually(15*time.Second, func() bool { return c.nodes[li].level() == "LEVEL_2/after kill" }) {
		t.Fatalf("restarted %s did not catch up: %q", leader.id, c.nodes[li].level())
	}

	// SIGTERM of the leader hands leadership over; measure how long writes
	// (sent to a node that stays up) are unavailable.
	li = c.leader("")
	var other *proc
	for i, p := range c.nodes {
		if i != li {
			other = p
			break
		}
	}
	var (
		stop     atomic.Bool
		mu       sync.Mutex
		lastOK   = time.Now()
		worstGap time.Duration
		wg       sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			code, err := other.trigger([]string{"LEVEL_1", "LEVEL_2", "LEVEL_3"}[i%3], fmt.Sprintf("w%d", i))
			now := time.Now()
			if err == nil && code == 200 {
				mu.Lock()
				worstGap = max(worstGap, now.Sub(lastOK))
				lastOK = now
				mu.Unlock()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	old := c.nodes[li]
	termAt := time.Now()
	old.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-old.done:
		if err != nil {
			t.Errorf("leader exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("leader did not exit within 15s of SIGTERM")
	}
	old.cmd = nil
	exitAfter := time.Since(termAt)
	ni = c.leader(old.id)
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	t.Logf("SIGTERM of leader %s: exited after %v, new leader %s, longest write gap %v", old.id, exitAfter, c.nodes[ni].id, worstGap)
	if worstGap > 3*time.Second {
		t.Fatalf("writes unavailable for %v around a graceful leader shutdown", worstGap)
	}
	logText, _ := os.ReadFile(filepath.Join(old.dir, "baldurd.log"))
	if !strings.Contains(string(logText), "raft.leadership_transferred") {
		t.Fatalf("the leader's log does not show a leadership transfer:\n%s", logText)
	}
}
