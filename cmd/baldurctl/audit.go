package main

import (
	"errors"
	"fmt"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
)

func auditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "The hash-chained audit trail"}
	client := func() (pb.AuditServiceClient, error) {
		conn, err := g.dial()
		if err != nil {
			return nil, err
		}
		return pb.NewAuditServiceClient(conn), nil
	}
	var action, actor, target, token string
	var size int32
	var all bool
	list := &cobra.Command{Use: "list", Short: "List audit records, oldest first", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			out := &pb.ListAuditResponse{}
			pageToken := token
			for {
				ctx, cancel := g.ctx(c.Context())
				resp, err := cl.ListAudit(ctx, &pb.ListAuditRequest{Action: action, Actor: actor, Target: target, PageSize: size, PageToken: pageToken})
				cancel()
				if err != nil {
					return err
				}
				out.Records = append(out.Records, resp.Records...)
				out.NextPageToken = resp.NextPageToken
				if !all || resp.NextPageToken == "" {
					break
				}
				pageToken = resp.NextPageToken
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), out)
			}
			var rows [][]string
			for _, r := range out.Records {
				rows = append(rows, []string{fmt.Sprint(r.Seq), fmt.Sprint(r.Revision), fmtTime(r.Time), r.Actor, r.Action, r.Target, dash(r.Reason)})
			}
			table(c.OutOrStdout(), []string{"SEQ", "REVISION", "TIME", "ACTOR", "ACTION", "TARGET", "REASON"}, rows)
			if out.NextPageToken != "" {
				fmt.Fprintf(c.OutOrStdout(), "\nmore: --page-token %s (or --all)\n", out.NextPageToken)
			}
			return nil
		}}
	list.Flags().StringVar(&action, "action", "", "only this action (e.g. emergency.trigger)")
	list.Flags().StringVar(&actor, "actor", "", "only this actor")
	list.Flags().StringVar(&target, "target", "", "only this target (e.g. emergency/global)")
	list.Flags().Int32Var(&size, "page-size", 100, "records per page (1..1000)")
	list.Flags().StringVar(&token, "page-token", "", "continue after this token")
	list.Flags().BoolVar(&all, "all", false, "fetch every page")

	verify := &cobra.Command{Use: "verify", Short: "Check every link of the chain; exits non-zero when broken", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			resp, err := cl.VerifyAudit(ctx, &pb.VerifyAuditRequest{})
			if err != nil {
				return err
			}
			if g.output == "json" {
				if err := printJSON(c.OutOrStdout(), resp); err != nil {
					return err
				}
			} else if resp.Ok {
				fmt.Fprintf(c.OutOrStdout(), "ok: %d records, head %s (keyed: %v)\n", resp.Records, resp.HeadHash, resp.Keyed)
			}
			if !resp.Ok {
				return errors.New("AUDIT_CHAIN_BROKEN: " + fmt.Sprintf("first broken record %d: %s", resp.FirstBrokenSeq, resp.Problem))
			}
			return nil
		}}
	cmd.AddCommand(list, verify)
	return cmd
}
