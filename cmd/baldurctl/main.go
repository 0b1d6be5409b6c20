// Command baldurctl operates a baldurd cluster over its gRPC API: cluster
// (status, membership, leadership transfer, snapshots), emergency, audit,
// circuit (breakers, policies, kill switch), lease, election, job and dlq.
// Every command takes -o table|json and --addr/--token (BALDUR_ADDR,
// BALDUR_TOKEN), and fails with a one-line reason. Run `baldurctl --help`.
//
// Each request/reply command is one row built by the unary helper
// (command.go): how to call, how to print, what exit status; only the
// streaming commands (snapshot save/restore, batch replay) are written out.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/baldurhq/baldurd/sdk/go/baldur"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// globals are the persistent flags.
type globals struct {
	addr  string
	token string
	// TLS: the CA that signs the nodes' certificates, and a client
	// certificate for clusters that verify them.
	cacert, cert, key string
	output            string
	timeout           time.Duration
	conn              *grpc.ClientConn
}

func main() {
	g := &globals{}
	root := newRoot(g)
	err := root.Execute()
	if g.conn != nil {
		g.conn.Close()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "baldurctl: "+oneLine(err))
		os.Exit(1)
	}
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:           "baldurctl",
		Short:         "Operate a baldurd cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.output != "table" && g.output != "json" {
				return fmt.Errorf("--output %q: use table or json", g.output)
			}
			return nil
		},
	}
	root.PersistentFlags().StringVar(&g.addr, "addr", envOr("BALDUR_ADDR", "127.0.0.1:7400"), "gRPC address(es) of baldurd, comma-separated (env BALDUR_ADDR)")
	root.PersistentFlags().StringVar(&g.token, "token", os.Getenv("BALDUR_TOKEN"), "bearer token (env BALDUR_TOKEN)")
	root.PersistentFlags().StringVar(&g.cacert, "cacert", os.Getenv("BALDUR_CACERT"), "PEM CA of the cluster's certificates: speak TLS (env BALDUR_CACERT)")
	root.PersistentFlags().StringVar(&g.cert, "cert", os.Getenv("BALDUR_CERT"), "PEM client certificate (env BALDUR_CERT)")
	root.PersistentFlags().StringVar(&g.key, "key", os.Getenv("BALDUR_KEY"), "PEM key of --cert (env BALDUR_KEY)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	root.PersistentFlags().DurationVar(&g.timeout, "timeout", 30*time.Second, "deadline for each call")
	root.AddCommand(clusterCmd(g), emergencyCmd(g), configCmd(g), canaryCmd(g), systemCmd(g), approvalCmd(g), ratelimitCmd(g), bulkheadCmd(g), throttleCmd(g), auditCmd(g), circuitCmd(g), leaseCmd(g), electionCmd(g), jobCmd(g), dlqCmd(g), certsCmd(), tokenCmd())
	return root
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}

// dial connects lazily. With several addresses the first that answers is
// used, and the next when it fails.
func (g *globals) dial() (*grpc.ClientConn, error) {
	if g.conn != nil {
		return g.conn, nil
	}
	opts := []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8 << 20))}
	if g.cacert != "" || g.cert != "" {
		cfg, err := baldur.TLSConfig(g.cacert, g.cert, g.key)
		if err != nil {
			return nil, fmt.Errorf("--cacert/--cert/--key: %w", err)
		}
		opts = append(opts, baldur.TLSDialOption(cfg))
	}
	conn, err := baldur.NewConn(g.addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("--addr %q: %w", g.addr, err)
	}
	g.conn = conn
	return conn, nil
}

// ctx returns a call context with the deadline and the bearer token.
func (g *globals) ctx(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(parent, g.timeout)
	if g.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+g.token)
	}
	return ctx, cancel
}

// streamCtx is the context of a stream that runs until it ends (no
// --timeout), with the token.
func (g *globals) streamCtx(parent context.Context) context.Context {
	if g.token != "" {
		return metadata.AppendToOutgoingContext(parent, "authorization", "Bearer "+g.token)
	}
	return parent
}

// oneLine renders an error as one line, led by the server's reason.
func oneLine(err error) string {
	if st, ok := status.FromError(err); ok {
		msg := st.Message()
		if st.Code() == codes.Unavailable && strings.Contains(msg, "connection refused") {
			msg = "cannot reach baldurd (is it running? --addr/BALDUR_ADDR)"
		}
		if st.Code() == codes.Unavailable && strings.Contains(msg, "server preface") {
			msg += " (the node may require TLS: --cacert, and --cert/--key if it checks client certificates)"
		}
		return baldur.Reason(err) + ": " + printable(msg)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out (raise --timeout)"
	}
	return strings.ReplaceAll(err.Error(), "\n", " ")
}
