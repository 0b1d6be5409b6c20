package server_test

import (
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/baldurhq/baldurd/server"
)

func TestEnvTwinsAndFlagPrecedence(t *testing.T) {
	cfg := server.Defaults()
	fs := flag.NewFlagSet("baldurd", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse([]string{"--node-id", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"BALDUR_NODE_ID":   "from-env",
		"BALDUR_DATA_DIR":  "/tmp/from-env",
		"BALDUR_RAFT_ADDR": "127.0.0.1:9402",
		"BALDUR_DEV":       "true",
	}
	if err := server.ApplyEnv(fs, func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != "from-flag" || cfg.DataDir != "/tmp/from-env" || cfg.RaftAddr != "127.0.0.1:9402" || !cfg.Dev {
		t.Fatalf("config after env: %+v", cfg)
	}
	if err := fs.Set("dlq-replay-breakers", "payment=stripe|adyen,orders=inventory"); err != nil {
		t.Fatal(err)
	}
	if got := cfg.DLQBreakers["payment"]; len(got) != 2 || got[1] != "adyen" || cfg.DLQBreakers["orders"][0] != "inventory" {
		t.Fatalf("breaker map: %v", cfg.DLQBreakers)
	}
	if err := fs.Set("dlq-replay-breakers", "payment"); err == nil {
		t.Fatal("malformed breaker map accepted")
	}
	if got := server.EnvName("shutdown-timeout"); got != "BALDUR_SHUTDOWN_TIMEOUT" {
		t.Fatalf("EnvName = %s", got)
	}
	err := server.ApplyEnv(fs, func(k string) (string, bool) {
		if k == "BALDUR_SHUTDOWN_TIMEOUT" {
			return "soon", true
		}
		return "", false
	})
	if err == nil || !strings.Contains(err.Error(), "BALDUR_SHUTDOWN_TIMEOUT") {
		t.Fatalf("bad env value: %v", err)
	}
}

func TestValidateNamesTheFlag(t *testing.T) {
	cases := []struct {
		name string
		mut  func(c *server.Config)
		flag string
	}{
		{"no node id", func(c *server.Config) { c.DataDir = "x" }, "--node-id"},
		{"bad node id", func(c *server.Config) { c.NodeID, c.DataDir = "a b", "x" }, "--node-id"},
		{"no data dir", func(c *server.Config) { c.NodeID = "n1" }, "--data-dir"},
		{"bad peers", func(c *server.Config) { c.NodeID, c.DataDir, c.Peers = "n1", "x", "n1" }, "--peers"},
		{"peers without self", func(c *server.Config) { c.NodeID, c.DataDir, c.Peers = "n1", "x", "n2=127.0.0.1:1" }, "--peers"},
		{"bad addr", func(c *server.Config) { c.NodeID, c.DataDir, c.GRPCAddr = "n1", "x", "7400" }, "--grpc-addr"},
		{"dev with peers", func(c *server.Config) { c.Dev, c.Peers = true, "dev=127.0.0.1:1" }, "--dev"},
		{"log level", func(c *server.Config) { c.NodeID, c.DataDir, c.LogLevel = "n1", "x", "loud" }, "--log-level"},
		{"missing token file", func(c *server.Config) { c.NodeID, c.DataDir, c.TokenFile = "n1", "x", "/nonexistent" }, "--token-file"},
		{"lease over heartbeat", func(c *server.Config) { c.NodeID, c.DataDir, c.RaftLeaderLeaseTimeout = "n1", "x", time.Second }, "--raft-leader-lease-timeout"},
		{"commit timeout too low", func(c *server.Config) { c.NodeID, c.DataDir, c.RaftCommitTimeout = "n1", "x", time.Microsecond }, "--raft-commit-timeout"},
		{"commit timeout over heartbeat", func(c *server.Config) { c.NodeID, c.DataDir, c.RaftCommitTimeout = "n1", "x", time.Second }, "--raft-commit-timeout"},
		{"negative idle reports", func(c *server.Config) { c.NodeID, c.DataDir, c.IdleReportsPerSecond = "n1", "x", -1 }, "--idle-reports-per-second"},
		{"negative reports", func(c *server.Config) { c.NodeID, c.DataDir, c.ReportsPerSecond = "n1", "x", -1 }, "--reports-per-second"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := server.Defaults()
			tc.mut(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("err = %v, want it to name %s", err, tc.flag)
			}
		})
	}
}

// Outside --dev a node listening beyond loopback needs TLS or
// --insecure-plaintext; TLS flags come in whole groups; --cors-origins
// takes origins only.
func TestSecureByDefault(t *testing.T) {
	dir := t.TempDir()
	pem := dir + "/x.pem"
	if err := os.WriteFile(pem, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := func() server.Config {
		c := server.Defaults()
		c.NodeID, c.DataDir, c.Peers = "n1", dir, "n1=127.0.0.1:7402"
		return c
	}
	cases := []struct {
		name string
		edit func(c *server.Config)
		want string // "" for accepted
	}{
		{"loopback plaintext", func(*server.Config) {}, ""},
		{"public gRPC plaintext", func(c *server.Config) { c.GRPCAddr = "0.0.0.0:7400" }, "--grpc-addr 0.0.0.0:7400 listens beyond this machine without TLS"},
		{"public Raft plaintext", func(c *server.Config) { c.RaftAddr, c.Peers = "10.0.0.1:7402", "n1=10.0.0.1:7402" }, "--raft-addr"},
		{"insecure, said so", func(c *server.Config) { c.GRPCAddr, c.InsecurePlaintext = "0.0.0.0:7400", true }, ""},
		{"public API with TLS, Raft without", func(c *server.Config) {
			c.GRPCAddr, c.HTTPAddr, c.RaftAddr, c.Peers, c.CertFile, c.KeyFile = "0.0.0.0:7400", "0.0.0.0:7401", "10.0.0.1:7402", "n1=10.0.0.1:7402", pem, pem
		}, "--raft-addr"},
		{"key without cert", func(c *server.Config) { c.KeyFile = pem }, "--cert-file and --key-file go together"},
		{"client CA without TLS", func(c *server.Config) { c.ClientCAFile = pem }, "--client-ca-file needs --cert-file"},
		{"peer group incomplete", func(c *server.Config) { c.CertFile, c.KeyFile, c.PeerCertFile = pem, pem, pem }, "go together"},
		{"peer TLS without API TLS", func(c *server.Config) { c.PeerCertFile, c.PeerKeyFile, c.PeerCAFile = pem, pem, pem }, "--peer-cert-file needs --cert-file"},
		{"missing file", func(c *server.Config) { c.CertFile, c.KeyFile = dir+"/nope.pem", pem }, "--cert-file: stat"},
	}
	for _, tc := range cases {
		c := base()
		tc.edit(&c)
		err := c.Validate()
		if tc.want == "" && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	fs := flag.NewFlagSet("baldurd", flag.ContinueOnError)
	c := base()
	c.RegisterFlags(fs)
	if err := fs.Set("cors-origins", "https://console.example.com, http://localhost:3000"); err != nil || len(c.CORSOrigins) != 2 {
		t.Fatalf("cors origins: %v %v", c.CORSOrigins, err)
	}
	if err := fs.Set("cors-origins", "https://console.example.com/path"); err == nil {
		t.Fatal("an origin with a path was accepted")
	}
	if err := fs.Set("client-cert-roles", "ci-bot=service, oncall=operator"); err != nil || c.ClientCertRoles["oncall"] != "operator" {
		t.Fatalf("client cert roles: %v %v", c.ClientCertRoles, err)
	}
	if err := fs.Set("client-cert-roles", "x=root"); err == nil {
		t.Fatal("an unknown role was accepted")
	}
}
