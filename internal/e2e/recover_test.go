package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Disaster recovery: two of three nodes are lost for good (kill -9, never
// restarted), so the survivor cannot elect a leader; `baldurd recover`
// rewrites its configuration to itself, and restarted it leads with every
// write it held.
func TestRecoverFromLostQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	c := startCluster(t, 3)
	leader := c.nodes[c.leader("")]
	if code, err := leader.trigger("LEVEL_2", "before the disaster"); err != nil || code != 200 {
		t.Fatalf("write: %d %v", code, err)
	}
	survivor := c.nodes[0]
	if !eventually(10*time.Second, func() bool { return survivor.level() == "LEVEL_2/before the disaster" }) {
		t.Fatalf("the survivor did not apply the write: %s", survivor.level())
	}
	for _, p := range c.nodes {
		p.cmd.Process.Kill()
		<-p.done
		p.cmd = nil
	}
	// The survivor alone cannot elect anyone: its configuration still has
	// three voters. Recover it with a configuration of one.
	out, err := exec.Command(c.bin, "recover", "--node-id", survivor.id, "--data-dir", filepath.Join(survivor.dir, "data"),
		"--peers", survivor.id+"="+survivor.raft).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "recovered") {
		t.Fatalf("baldurd recover: %v\n%s", err, out)
	}
	// A wrong configuration is refused with a reason.
	if out, err := exec.Command(c.bin, "recover", "--node-id", survivor.id, "--data-dir", filepath.Join(survivor.dir, "data"),
		"--peers", "n9=127.0.0.1:1").CombinedOutput(); err == nil || !strings.Contains(string(out), "this node") {
		t.Fatalf("recover without this node: %v\n%s", err, out)
	}
	c.start(0)
	if !eventually(20*time.Second, func() bool {
		v, err := survivor.view()
		return err == nil && v.LeaderID == survivor.id
	}) {
		t.Fatal("the recovered node did not become leader")
	}
	if got := survivor.level(); got != "LEVEL_2/before the disaster" {
		t.Fatalf("state after recovery: %s", got)
	}
	if code, err := survivor.trigger("LEVEL_3", "after recovery"); err != nil || code != 200 {
		t.Fatalf("write after recovery: %d %v", code, err)
	}
}

// Outside --dev a node refuses to start without an audit key, naming the
// flag and how to make one; --dev runs keyless.
func TestProductionNeedsAuditKey(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	bin := baldurd(t)
	out, err := exec.Command(bin, "--node-id", "n1", "--data-dir", t.TempDir(), "--peers", "n1="+freePort(t)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--audit-key-file is required outside --dev") || !strings.Contains(string(out), "baldurctl audit keygen") {
		t.Fatalf("started without an audit key: %v\n%s", err, out)
	}
	key := filepath.Join(t.TempDir(), "audit.key")
	ctl := exec.Command("go", "run", "github.com/baldurhq/baldurd/cmd/baldurctl", "audit", "keygen", "--out", key)
	if out, err := ctl.CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(key); err != nil || len(strings.TrimSpace(string(b))) != 64 {
		t.Fatalf("key file: %q %v", b, err)
	}
	again := exec.Command("go", "run", "github.com/baldurhq/baldurd/cmd/baldurctl", "audit", "keygen", "--out", key)
	if out, err := again.CombinedOutput(); err == nil || !strings.Contains(string(out), "never overwritten") {
		t.Fatalf("keygen overwrote a key: %v\n%s", err, out)
	}
}
