// Command baldurd runs one node of the baldurd cluster.
//
// Start a single development node with `baldurd --dev`; see README.md for
// clusters. Every flag has an environment twin BALDUR_<FLAG_IN_UPPER_SNAKE>.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/baldurhq/baldurd/server"
	gometrics "github.com/hashicorp/go-metrics"
	gmprom "github.com/hashicorp/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "baldurd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "recover" {
		return recoverNode(args[1:])
	}
	cfg := server.Defaults()
	fs := flag.NewFlagSet("baldurd", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	if err := server.ApplyEnv(fs, os.LookupEnv); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if !cfg.Dev && cfg.AuditKeyFile == "" {
		// Keyless, anyone who can write a data directory can rewrite the
		// trail and recompute every hash; --dev may run so.
		return errors.New("--audit-key-file is required outside --dev (the audit chain's HMAC key, the same file on every node): create one with `baldurctl audit keygen --out audit.key`")
	}
	log := cfg.NewLogger(os.Stderr)
	log.Debug("runtime.gc", "settings", server.TuneGC(os.LookupEnv))

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The Raft library reports through go-metrics' global sink; bridge it
	// into our registry once per process.
	sink, err := gmprom.NewPrometheusSinkFrom(gmprom.PrometheusOpts{Registerer: reg, Expiration: time.Minute})
	if err != nil {
		return fmt.Errorf("raft metrics bridge: %w", err)
	}
	mc := gometrics.DefaultConfig("baldur")
	mc.EnableHostname, mc.EnableRuntimeMetrics = false, false
	if _, err := gometrics.NewGlobal(mc, sink); err != nil {
		return fmt.Errorf("raft metrics bridge: %w", err)
	}

	srv, err := server.New(cfg, log, reg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if cfg.Dev {
		fmt.Fprintf(os.Stderr, `baldurd dev node %q (data in %s)
  gRPC     %s
  REST     http://%s/v1/emergency
  metrics  http://%s/metrics
  health   http://%s/readyz
  OpenAPI  http://%s/openapi.json
`, cfg.NodeID, cfg.DataDir, srv.GRPCAddr(), srv.HTTPAddr(), srv.HTTPAddr(), srv.HTTPAddr(), srv.HTTPAddr())
	}
	return srv.Run(ctx)
}

// recoverNode is `baldurd recover --node-id ID --data-dir DIR --peers
// id=raftaddr,...`: it rewrites a stopped node's Raft configuration to the
// members that remain after a lost quorum (docs/operations.md).
func recoverNode(args []string) error {
	cfg := server.Defaults()
	fs := flag.NewFlagSet("baldurd recover", flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := server.ApplyEnv(fs, os.LookupEnv); err != nil {
		return err
	}
	log := cfg.NewLogger(os.Stderr)
	if err := server.Recover(cfg, log); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	fmt.Fprintf(os.Stderr, "node %s recovered with configuration %s; start it (and each listed member, recovered the same way)\n", cfg.NodeID, cfg.Peers)
	return nil
}
