package main_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/baldurhq/baldurd/internal/testcluster"
	"github.com/baldurhq/baldurd/internal/tlsconf"
	"github.com/baldurhq/baldurd/internal/token"
	"github.com/baldurhq/baldurd/server"
)

// certs init writes the contract's files; token create signs a token the
// nodes verify with the public half, carrying role and scopes; a viewer
// token reads and is refused a write with the role named.
func TestCertsInitAndTokenCreate(t *testing.T) {
	bin := buildCLI(t)
	dir := filepath.Join(t.TempDir(), "certs")
	ctl := cli{t: t, bin: bin, addr: "127.0.0.1:1"}
	out, errOut, code := ctl.run("certs", "init", "--dir", dir, "--nodes", "n1,n2")
	if code != 0 {
		t.Fatalf("certs init: %d %s", code, errOut)
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "n1.pem", "n1-key.pem", "n2.pem", "n2-key.pem", "client.pem", "client-key.pem", "token-key.pem", "token-key.pub.pem"} {
		if !strings.Contains(out, filepath.Join(dir, f)) {
			t.Errorf("certs init did not write %s:\n%s", f, out)
		}
	}
	if _, errOut, code := ctl.run("certs", "init", "--dir", dir, "--nodes", "n1"); code == 0 || !strings.Contains(errOut, "already holds a CA") {
		t.Fatalf("certs init over an existing CA: %d %s", code, errOut)
	}
	if _, errOut, code := ctl.run("token", "create", "--key-file", filepath.Join(dir, "token-key.pem"), "--subject", "x", "--role", "root"); code == 0 || !strings.Contains(errOut, "use viewer, service, operator or admin") {
		t.Fatalf("bad role: %d %s", code, errOut)
	}
	if _, errOut, code := ctl.run("token", "create", "--key-file", filepath.Join(dir, "token-key.pem"), "--subject", "x", "--role", "service", "--scope", "queue:x"); code == 0 || !strings.Contains(errOut, "kind") {
		t.Fatalf("bad scope: %d %s", code, errOut)
	}
	tok, errOut, code := ctl.run("token", "create", "--key-file", filepath.Join(dir, "token-key.pem"), "--subject", "dash", "--role", "viewer", "--ttl", "1h")
	if code != 0 {
		t.Fatalf("token create: %s", errOut)
	}
	tok = strings.TrimSpace(tok)
	keys, err := tlsconf.LoadKeySet(filepath.Join(dir, "token-key.pub.pem"), nil)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := token.Verify(tok, keys.Keys())
	if err != nil || claims.Subject != "dash" || claims.Role != "viewer" {
		t.Fatalf("verify: %+v %v", claims, err)
	}

	c := testcluster.New(t, 1, testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.TokenPublicKeys = filepath.Join(dir, "token-key.pub.pem") }))
	node := cli{t: t, bin: bin, addr: c.Nodes[0].GRPCAddr}
	if out, errOut, code := node.run("--token", tok, "emergency", "status"); code != 0 || !strings.Contains(out, "NORMAL") {
		t.Fatalf("viewer read: %d %s %s", code, out, errOut)
	}
	_, errOut, code = node.run("--token", tok, "emergency", "trigger", "LEVEL_1", "--reason", "x")
	if code == 0 || !strings.Contains(errOut, "PERMISSION_DENIED") || !strings.Contains(errOut, "requires role operator") {
		t.Fatalf("viewer write: %d %s", code, errOut)
	}
	if _, errOut, code := node.run("emergency", "status"); code == 0 || !strings.Contains(errOut, "UNAUTHENTICATED") {
		t.Fatalf("no token: %d %s", code, errOut)
	}
}

func TestServerTextCannotDriveTheTerminal(t *testing.T) {
	bin := buildCLI(t)
	c := testcluster.New(t, 1)
	ctl := cli{t: t, bin: bin, addr: c.Nodes[0].GRPCAddr}
	evil := "outage \x1b[2J\x1b]0;pwned\x07 done"
	if _, errOut, code := ctl.run("emergency", "trigger", "LEVEL_1", "--reason", evil); code != 0 {
		t.Fatalf("trigger: %s", errOut)
	}
	out, _, _ := ctl.run("audit", "list")
	if strings.ContainsRune(out, 0x1b) || !strings.Contains(out, `outage \x1b[2J`) {
		t.Fatalf("audit list printed control characters raw:\n%q", out)
	}
}
