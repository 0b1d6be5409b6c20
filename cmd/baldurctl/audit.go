package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/baldurhq/baldurd/audit"

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
	var local bool
	verify := unary[*pb.VerifyAuditResponse]{Use: "verify", Short: "Check every link of the chain on every member; exits non-zero when broken", Args: cobra.NoArgs,
		Flags: func(f *pflag.FlagSet) {
			f.BoolVar(&local, "local", false, "only the contacted node's copy")
		},
		Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.VerifyAuditResponse, error) {
			return pb.NewAuditServiceClient(conn).VerifyAudit(ctx, &pb.VerifyAuditRequest{Local: local})
		},
		Text: func(w io.Writer, resp *pb.VerifyAuditResponse) {
			if resp.Ok {
				fmt.Fprintf(w, "ok: %d records, head %d %s (keyed: %v)\n", resp.Records, resp.HeadSeq, resp.HeadHash, resp.Keyed)
			}
			if resp.AnchorSeq > 0 {
				fmt.Fprintf(w, "records 1..%d were removed by retention; the chain verifies from their signed anchor\n", resp.AnchorSeq)
			}
			if len(resp.Members) > 0 {
				var rows [][]string
				for _, m := range resp.Members {
					rows = append(rows, []string{m.NodeId, fmt.Sprint(m.Ok), fmt.Sprint(m.Records), fmt.Sprint(m.HeadSeq), short(m.HeadHash), dash(m.Problem)})
				}
				table(w, []string{"MEMBER", "OK", "RECORDS", "HEAD", "HASH", "PROBLEM"}, rows)
			}
		},
		Check: func(resp *pb.VerifyAuditResponse) error {
			if !resp.Ok {
				return errors.New("AUDIT_CHAIN_BROKEN: " + fmt.Sprintf("first broken record %d: %s", resp.FirstBrokenSeq, resp.Problem))
			}
			return nil
		}}.command(g)
	var since uint64
	export := &cobra.Command{Use: "export [--since-seq N] > trail.jsonl", Short: "Write the trail as JSON lines (one record each, with its hash; check with verify-file)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			conn, err := g.dial()
			if err != nil {
				return err
			}
			w := c.OutOrStdout()
			n, pageToken := 0, audit.PageToken(since)
			for {
				ctx, cancel := g.ctx(c.Context())
				resp, err := pb.NewAuditServiceClient(conn).ListAudit(ctx, &pb.ListAuditRequest{PageSize: 1000, PageToken: pageToken})
				cancel()
				if err != nil {
					return err
				}
				for _, r := range resp.Records {
					line, err := json.Marshal(recordFromPB(r))
					if err != nil {
						return err
					}
					if _, err := fmt.Fprintf(w, "%s\n", line); err != nil {
						return err
					}
					n++
				}
				if pageToken = resp.NextPageToken; pageToken == "" {
					fmt.Fprintf(c.ErrOrStderr(), "exported %d records\n", n)
					return nil
				}
			}
		}}
	export.Flags().Uint64Var(&since, "since-seq", 0, "only records after this sequence number")
	var keyFile string
	verifyFile := &cobra.Command{Use: "verify-file FILE [--key-file audit.key]", Short: "Check an exported trail offline: order, links and hashes (with the cluster's key when keyed)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var key []byte
			if keyFile != "" {
				b, err := os.ReadFile(keyFile)
				if err != nil {
					return fmt.Errorf("--key-file: %w", err)
				}
				key = []byte(strings.TrimSpace(string(b)))
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			res, err := audit.VerifyLines(f, key)
			if err != nil {
				return err
			}
			if !res.OK {
				return fmt.Errorf("AUDIT_CHAIN_BROKEN: first broken record %d: %s", res.FirstBroken, res.Problem)
			}
			fmt.Fprintf(c.OutOrStdout(), "ok: %d records after record %d, head %s\n", res.Records, res.AnchorSeq, res.HeadHash)
			return nil
		}}
	verifyFile.Flags().StringVar(&keyFile, "key-file", "", "the cluster's --audit-key-file (a keyed trail does not verify without it)")
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
	return group("audit", "The hash-chained audit trail", list, verify, export, verifyFile, keygen)
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return dash(h)
}

func recordFromPB(r *pb.AuditRecord) audit.Record {
	return audit.Record{Seq: r.Seq, Revision: r.Revision, Time: r.Time.AsTime(), Actor: r.Actor, Reason: r.Reason, Action: r.Action,
		Target: r.Target, Before: r.Before, After: r.After, PrevHash: r.PrevHash, Hash: r.Hash}
}
