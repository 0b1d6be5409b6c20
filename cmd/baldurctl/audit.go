package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
)

func auditCmd(g *globals) *cobra.Command {
	var action, actor, target, token string
	var size int32
	var all bool
	list := unary[*pb.ListAuditResponse]{Use: "list", Short: "List audit records, oldest first", Args: cobra.NoArgs,
		Flags: func(f *pflag.FlagSet) {
			f.StringVar(&action, "action", "", "only this action (e.g. emergency.trigger)")
			f.StringVar(&actor, "actor", "", "only this actor")
			f.StringVar(&target, "target", "", "only this target (e.g. emergency/global)")
			f.Int32Var(&size, "page-size", 100, "records per page (1..1000)")
			f.StringVar(&token, "page-token", "", "continue after this token")
			f.BoolVar(&all, "all", false, "fetch every page")
		},
		Call: func(_ context.Context, conn *grpc.ClientConn, c *cobra.Command, _ []string) (*pb.ListAuditResponse, error) {
			out := &pb.ListAuditResponse{}
			pageToken := token
			for {
				ctx, cancel := g.ctx(c.Context()) // each page has the whole --timeout
				resp, err := pb.NewAuditServiceClient(conn).ListAudit(ctx, &pb.ListAuditRequest{Action: action, Actor: actor, Target: target, PageSize: size, PageToken: pageToken})
				cancel()
				if err != nil {
					return nil, err
				}
				out.Records = append(out.Records, resp.Records...)
				out.NextPageToken = resp.NextPageToken
				if pageToken = resp.NextPageToken; !all || pageToken == "" {
					return out, nil
				}
			}
		},
		Text: func(w io.Writer, out *pb.ListAuditResponse) {
			var rows [][]string
			for _, r := range out.Records {
				rows = append(rows, []string{fmt.Sprint(r.Seq), fmt.Sprint(r.Revision), fmtTime(r.Time), r.Actor, r.Action, r.Target, dash(r.Reason)})
			}
			table(w, []string{"SEQ", "REVISION", "TIME", "ACTOR", "ACTION", "TARGET", "REASON"}, rows)
			if out.NextPageToken != "" {
				fmt.Fprintf(w, "\nmore: --page-token %s (or --all)\n", out.NextPageToken)
			}
		}}.command(g)
	verify := unary[*pb.VerifyAuditResponse]{Use: "verify", Short: "Check every link of the chain; exits non-zero when broken", Args: cobra.NoArgs,
		Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.VerifyAuditResponse, error) {
			return pb.NewAuditServiceClient(conn).VerifyAudit(ctx, &pb.VerifyAuditRequest{})
		},
		Text: func(w io.Writer, resp *pb.VerifyAuditResponse) {
			if resp.Ok {
				fmt.Fprintf(w, "ok: %d records, head %s (keyed: %v)\n", resp.Records, resp.HeadHash, resp.Keyed)
			}
		},
		Check: func(resp *pb.VerifyAuditResponse) error {
			if !resp.Ok {
				return errors.New("AUDIT_CHAIN_BROKEN: " + fmt.Sprintf("first broken record %d: %s", resp.FirstBrokenSeq, resp.Problem))
			}
			return nil
		}}.command(g)
	var out string
	keygen := &cobra.Command{Use: "keygen --out FILE", Short: "Write a new random audit key (baldurd --audit-key-file; the same file on every node)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out is required")
			}
			var key [32]byte
			if _, err := rand.Read(key[:]); err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("--out: %w (an existing key is never overwritten: the trail is keyed with it)", err)
			}
			if _, err := fmt.Fprintln(f, hex.EncodeToString(key[:])); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "wrote %s (256-bit key, mode 0600)\n", out)
			return nil
		}}
	keygen.Flags().StringVar(&out, "out", "", "file to create")
	return group("audit", "The hash-chained audit trail", list, verify, keygen)
}
