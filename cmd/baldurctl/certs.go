package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/baldurhq/baldurd/internal/tlsconf"
	"github.com/baldurhq/baldurd/internal/token"
	"github.com/spf13/cobra"
)

func certsCmd() *cobra.Command {
	var dir, nodes, hosts, client, clientRole string
	var valid time.Duration
	initCmd := &cobra.Command{Use: "init --dir DIR --nodes n1,n2,n3 [--hosts 127.0.0.1,localhost,...]",
		Short: "Create a CA, node, client certificates and a token signing key for a test or small cluster", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("--dir is required")
			}
			var ns []string
			for _, n := range strings.Split(nodes, ",") {
				if n = strings.TrimSpace(n); n != "" {
					ns = append(ns, n)
				}
			}
			if len(ns) == 0 {
				return fmt.Errorf("--nodes: name at least one node id")
			}
			var hs []string
			for _, h := range strings.Split(hosts, ",") {
				if h = strings.TrimSpace(h); h != "" {
					hs = append(hs, h)
				}
			}
			if err := token.CheckRole(clientRole); err != nil {
				return fmt.Errorf("--client-role: %w", err)
			}
			files, err := tlsconf.Init(tlsconf.InitOptions{Dir: dir, Nodes: ns, Hosts: hs, Client: client, ClientRole: strings.ToLower(clientRole), Valid: valid})
			if err != nil {
				return err
			}
			for _, f := range files {
				fmt.Fprintln(c.OutOrStdout(), f)
			}
			return nil
		}}
	f := initCmd.Flags()
	f.StringVar(&dir, "dir", "", "directory to write into (must not hold a CA yet)")
	f.StringVar(&nodes, "nodes", "", "node ids, comma-separated: each gets <id>.pem and <id>-key.pem (common name = id)")
	f.StringVar(&hosts, "hosts", "127.0.0.1,::1,localhost", "names and addresses every node certificate holds, comma-separated")
	f.StringVar(&client, "client", "admin", "common name of the client certificate")
	f.StringVar(&clientRole, "client-role", "admin", "role the client certificate carries (its organizational unit)")
	f.DurationVar(&valid, "valid", 365*24*time.Hour, "how long the node and client certificates last (the CA 10×)")
	cmd := &cobra.Command{Use: "certs", Short: "Certificates for a TLS cluster"}
	cmd.AddCommand(initCmd)
	return cmd
}
