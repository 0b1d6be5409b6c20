package main

import (
	"context"
	"errors"
	"fmt"
	"io"

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
	return group("audit", "The hash-chained audit trail", list, verify)
}
