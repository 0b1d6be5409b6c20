package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/sdk/go/baldur"
)

type replayWorker struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	seen []string
}

func (w *replayWorker) lines() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.seen...)
}

func startReplayWorker(t *testing.T, bin, addrs, id, domain, mode string) *replayWorker {
	w := &replayWorker{cmd: exec.Command(bin, "--addrs", addrs, "--id", id, "--domain", domain, "--mode", mode, "--lease", "5s")}
	out, _ := w.cmd.StdoutPipe()
	w.cmd.Stderr = os.Stderr
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			w.mu.Lock()
			w.seen = append(w.seen, sc.Text())
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { w.cmd.Process.Kill(); w.cmd.Wait() })
	return w
}

func (p *proc) dlqEntry(id string) map[string]any {
	resp, err := httpClient.Get("http://" + p.http + "/v1/dlq/entries/" + id)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return out
}

func (p *proc) storeDLQ(id, domain string) error {
	resp, err := httpClient.Post("http://"+p.http+"/v1/dlq/entries", "application/json",
		strings.NewReader(fmt.Sprintf(`{"id":%q,"domain":%q,"failure_type":"MAX_RETRIES_TIMEOUT"}`, id, domain)))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// TestReplayWithWorkerProcesses: a handler that fails exhausts the budget
// (REQUIRES_REVIEW); a worker killed with SIGKILL mid-replay loses its
// lease and another worker process replays the entry.
func TestReplayWithWorkerProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	c := startCluster(t, 3)
	li := c.leader("")
	node := c.nodes[li]
	bin := filepath.Join(t.TempDir(), "replayworker")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/baldurhq/baldurd/internal/e2e/replayworker").CombinedOutput(); err != nil {
		t.Fatalf("build replayworker: %v\n%s", err, out)
	}
	var addrs []string
	for _, p := range c.nodes {
		addrs = append(addrs, p.grpc)
	}
	all := strings.Join(addrs, ",")

	if err := node.storeDLQ("fail-1", "billing"); err != nil {
		t.Fatal(err)
	}
	failing := startReplayWorker(t, bin, all, "w-fail", "billing", "fail")
	if !eventually(15*time.Second, func() bool { return node.dlqEntry("fail-1")["status"] == "REQUIRES_REVIEW" }) {
		t.Fatalf("entry after failing replays: %v", node.dlqEntry("fail-1"))
	}
	if n := len(failing.lines()); n != 2 {
		t.Fatalf("failing handler ran %d times, want 2 (max replay attempts)", n)
	}

	if err := node.storeDLQ("hang-1", "payment"); err != nil {
		t.Fatal(err)
	}
	hanging := startReplayWorker(t, bin, all, "w-hang", "payment", "hang")
	if !eventually(10*time.Second, func() bool { return len(hanging.lines()) == 1 }) {
		t.Fatal("hanging worker never took the entry")
	}
	hanging.cmd.Process.Signal(syscall.SIGKILL)
	killedAt := time.Now()
	if e := node.dlqEntry("hang-1"); e["status"] != "REPLAYING" || e["replay_worker"] != "w-hang" {
		t.Fatalf("entry while its worker is dead: %v", e)
	}
	good := startReplayWorker(t, bin, all, "w-good", "payment", "succeed")
	if !eventually(20*time.Second, func() bool { return node.dlqEntry("hang-1")["status"] == "RESOLVED" }) {
		t.Fatalf("entry never replayed by the second worker: %v", node.dlqEntry("hang-1"))
	}
	took := time.Since(killedAt)
	t.Logf("worker killed mid-replay → replayed by another worker after %v (lease 5s)", took)
	if took < 4*time.Second {
		t.Fatalf("replayed after %v, before the 5s lease could expire: two workers at once", took)
	}
	if l := good.lines(); len(l) != 1 || !strings.Contains(l[0], "key=payment:hang-1:2") {
		t.Fatalf("second worker: %v", l)
	}
}

// TestDLQStoresSurviveLeaderKills: 3 baldurd processes, 4 SDK clients
// storing 1,000 entries with unique ids while the leader is killed with -9
// twice. Every acknowledged entry is present exactly once and nothing that
// was not attempted appears.
func TestDLQStoresSurviveLeaderKills(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	c := startCluster(t, 3)
	c.leader("")
	var addrs []string
	for _, p := range c.nodes {
		addrs = append(addrs, p.grpc)
	}
	var mu sync.Mutex
	attempted, acked := map[string]bool{}, map[string]bool{}
	var wg sync.WaitGroup
	var clients []*baldur.Client
	for w := 0; w < 4; w++ {
		cl, err := baldur.Dial(context.Background(), strings.Join(append(addrs[w%3:], addrs[:w%3]...), ","),
			baldur.WithInstanceID(fmt.Sprintf("store-%d", w)), baldur.WithSpoolDir(t.TempDir(), 2000))
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, cl)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 250; i++ {
				id := fmt.Sprintf("w%d-%03d", w, i)
				mu.Lock()
				attempted[id] = true
				mu.Unlock()
				if _, err := cl.DLQ().Store(context.Background(), &baldur.Entry{Id: id, Domain: "payment", FailureType: "MAX_RETRIES_TIMEOUT"}); err == nil {
					mu.Lock()
					acked[id] = true
					mu.Unlock()
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	for kill := 0; kill < 2; kill++ {
		time.Sleep(700 * time.Millisecond)
		li := c.leader("")
		c.nodes[li].cmd.Process.Signal(syscall.SIGKILL)
		<-c.nodes[li].done
		c.nodes[li].cmd = nil
		c.leader(c.nodes[li].id)
		c.start(li)
		t.Logf("killed leader %s (kill %d)", c.nodes[li].id, kill+1)
	}
	wg.Wait()
	for _, cl := range clients {
		cl := cl
		if !eventually(30*time.Second, func() bool { return cl.DLQ().SpoolStats().Spooled == 0 }) {
			t.Fatalf("spool not drained: %+v", cl.DLQ().SpoolStats())
		}
		cl.Close()
	}
	li := c.leader("")
	seen := map[string]int{}
	token := ""
	for {
		url := "http://" + c.nodes[li].http + "/v1/dlq/entries?page_size=1000"
		if token != "" {
			url += "&page_token=" + token
		}
		resp, err := httpClient.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		var page struct {
			Entries []struct {
				ID string `json:"id"`
			} `json:"entries"`
			Next string `json:"next_page_token"`
		}
		json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		for _, e := range page.Entries {
			seen[e.ID]++
		}
		if token = page.Next; token == "" {
			break
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("entry %s present %d times", id, n)
		}
		if !attempted[id] {
			t.Fatalf("entry %s was never attempted", id)
		}
	}
	for id := range acked {
		if seen[id] != 1 {
			t.Fatalf("acknowledged entry %s missing", id)
		}
	}
	t.Logf("%d attempted, %d acknowledged, %d present", len(attempted), len(acked), len(seen))
	if len(acked) < 990 {
		t.Fatalf("only %d of 1000 stores acknowledged (spooling should absorb the elections)", len(acked))
	}
}
