package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
)

func dlqCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "dlq", Short: "The dead-letter queue"}
	client := func() (pb.DLQServiceClient, error) {
		conn, err := g.dial()
		if err != nil {
			return nil, err
		}
		return pb.NewDLQServiceClient(conn), nil
	}
	var domain, status string
	var pageSize int32
	var all bool
	list := &cobra.Command{Use: "list", Short: "List entries, oldest first", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			out := &pb.ListEntriesResponse{}
			token := ""
			for {
				ctx, cancel := g.ctx(c.Context())
				resp, err := cl.ListEntries(ctx, &pb.ListEntriesRequest{Domain: domain, Status: status, PageSize: pageSize, PageToken: token})
				cancel()
				if err != nil {
					return err
				}
				out.Entries = append(out.Entries, resp.Entries...)
				out.NextPageToken = resp.NextPageToken
				if token = resp.NextPageToken; !all || token == "" {
					break
				}
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), out)
			}
			var rows [][]string
			for _, e := range out.Entries {
				rows = append(rows, []string{e.Id, e.Domain, e.FailureType, e.Status, fmt.Sprintf("%d/%d", e.RetryCount, e.MaxRetries), fmtTime(e.CreatedAt), dash(e.ErrorCode)})
			}
			table(c.OutOrStdout(), []string{"ID", "DOMAIN", "FAILURE TYPE", "STATUS", "ATTEMPTS", "CREATED", "ERROR"}, rows)
			if out.NextPageToken != "" {
				fmt.Fprintln(c.OutOrStdout(), "\nmore entries: --all")
			}
			return nil
		}}
	list.Flags().StringVar(&domain, "domain", "", "only this domain")
	list.Flags().StringVar(&status, "status", "", "only this status (PENDING, REQUIRES_REVIEW, ...)")
	list.Flags().Int32Var(&pageSize, "page-size", 100, "entries per page (1..1000)")
	list.Flags().BoolVar(&all, "all", false, "fetch every page")

	get := &cobra.Command{Use: "get ID", Short: "Show an entry", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			e, err := cl.GetEntry(ctx, &pb.GetEntryRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return printJSON(c.OutOrStdout(), e)
		}}

	var reason string
	action := func(use, short string, call func(pb.DLQServiceClient, *cobra.Command, *pb.EntryActionRequest) (*pb.DLQEntry, error)) *cobra.Command {
		ac := &cobra.Command{Use: use, Short: short, Args: cobra.ExactArgs(1),
			RunE: func(c *cobra.Command, args []string) error {
				cl, err := client()
				if err != nil {
					return err
				}
				e, err := call(cl, c, &pb.EntryActionRequest{Id: args[0], Reason: reason})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(c.OutOrStdout(), e)
				}
				fmt.Fprintf(c.OutOrStdout(), "%s: %s (attempts %d/%d)\n", e.Id, e.Status, e.RetryCount, e.MaxRetries)
				return nil
			}}
		ac.Flags().StringVar(&reason, "reason", "", "recorded in the audit trail")
		return ac
	}
	resolve := action("resolve ID", "Mark an entry resolved by hand", func(cl pb.DLQServiceClient, c *cobra.Command, r *pb.EntryActionRequest) (*pb.DLQEntry, error) {
		ctx, cancel := g.ctx(c.Context())
		defer cancel()
		return cl.ResolveEntry(ctx, r)
	})
	redrive := action("redrive ID --reason R", "Reset an entry's attempt budget and replay it (admin)", func(cl pb.DLQServiceClient, c *cobra.Command, r *pb.EntryActionRequest) (*pb.DLQEntry, error) {
		ctx, cancel := g.ctx(c.Context())
		defer cancel()
		return cl.RedriveEntry(ctx, r)
	})

	var maxItems int
	var rate float64
	var useRedrive bool
	var batchDomain, batchStatus string
	var batchTimeout time.Duration
	replay := &cobra.Command{Use: "replay [ID] | replay --domain D [--status S] [--max N] [--rate R]", Short: "Make entries replayable now (one, or a batch at a capped rate)", Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			one := func(id string) (*pb.DLQEntry, error) {
				ctx, cancel := g.ctx(c.Context())
				defer cancel()
				if useRedrive {
					return cl.RedriveEntry(ctx, &pb.EntryActionRequest{Id: id, Reason: reason})
				}
				return cl.ReplayEntry(ctx, &pb.EntryActionRequest{Id: id, Reason: reason})
			}
			if len(args) == 1 {
				e, err := one(args[0])
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(c.OutOrStdout(), e)
				}
				fmt.Fprintf(c.OutOrStdout(), "%s: %s\n", e.Id, e.Status)
				return nil
			}
			if batchDomain == "" {
				return fmt.Errorf("give an entry ID, or --domain for a batch")
			}
			ctx, cancel := context.WithCancel(c.Context())
			defer cancel()
			if g.token != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+g.token)
			}
			req := &pb.ReplayBatchRequest{Domain: batchDomain, Status: batchStatus, MaxItems: int32(maxItems), Rate: rate, Redrive: useRedrive, Reason: reason}
			if batchTimeout > 0 {
				req.BatchTimeout = durationpb.New(batchTimeout)
			}
			stream, err := cl.ReplayBatch(ctx, req)
			if err != nil {
				return err
			}
			var resolved, failed, pending int32
			for {
				p, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					fmt.Fprintln(c.ErrOrStderr())
					return err
				}
				if g.output == "json" {
					printJSON(c.OutOrStdout(), p)
					continue
				}
				if p.BlockedReason != "" {
					fmt.Fprintf(c.ErrOrStderr(), "\rwaiting: %s", p.BlockedReason)
					continue
				}
				if p.Done {
					break
				}
				resolved, failed, pending = resolved+p.Resolved, failed+p.Failed, pending+p.Pending
				fmt.Fprintf(c.ErrOrStderr(), "\rbatch %d (%d entries): %d resolved, %d failed, %d pending of %d; next batch %d",
					p.Batch, p.BatchSize, resolved, failed, pending, p.TotalCandidates, p.NextBatchSize)
			}
			if g.output != "json" {
				fmt.Fprintln(c.ErrOrStderr())
				fmt.Fprintf(c.OutOrStdout(), "replayed: %d resolved, %d failed, %d still pending\n", resolved, failed, pending)
			}
			return nil
		}}
	replay.Flags().StringVar(&batchDomain, "domain", "", "batch: entries of this domain")
	replay.Flags().StringVar(&batchStatus, "status", "REQUIRES_REVIEW", "batch: entries in this status")
	replay.Flags().IntVar(&maxItems, "max", 100, "batch: at most this many entries")
	replay.Flags().Float64Var(&rate, "rate", 10, "batch: entries per second")
	replay.Flags().BoolVar(&useRedrive, "redrive", false, "reset the attempt budget (force-redrive, admin)")
	replay.Flags().DurationVar(&batchTimeout, "batch-timeout", 0, "batch: how long to wait for a batch's outcomes (default 60s)")
	replay.Flags().StringVar(&reason, "reason", "", "recorded in the audit trail (required with --redrive)")

	var yes bool
	var olderThan time.Duration
	purge := &cobra.Command{Use: "purge [ID...] [--older-than D] [--yes]", Short: "Delete ARCHIVED entries for good", Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 && olderThan == 0 {
				return fmt.Errorf("give entry ids or --older-than")
			}
			if !yes {
				fmt.Fprintf(c.ErrOrStderr(), "Delete ARCHIVED entries %s for good? Type yes: ", strings.Join(args, " "))
				line, _ := bufio.NewReader(c.InOrStdin()).ReadString('\n')
				if strings.TrimSpace(line) != "yes" {
					return fmt.Errorf("not confirmed; nothing purged (use --yes in scripts)")
				}
			}
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			req := &pb.PurgeRequest{Confirm: true, Ids: args}
			if olderThan > 0 {
				req.OlderThan = durationpb.New(olderThan)
			}
			resp, err := cl.Purge(ctx, req)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), resp)
			}
			fmt.Fprintf(c.OutOrStdout(), "purged %d entries\n", resp.Purged)
			return nil
		}}
	purge.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	purge.Flags().DurationVar(&olderThan, "older-than", 0, "ARCHIVED entries older than this")

	stats := &cobra.Command{Use: "stats", Short: "Entry counts by status and domain", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			st, err := cl.GetStats(ctx, &pb.GetDLQStatsRequest{})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), st)
			}
			fmt.Fprintf(c.OutOrStdout(), "total: %d\n", st.Total)
			var rows [][]string
			for k, v := range st.ByStatus {
				rows = append(rows, []string{"status", k, fmt.Sprint(v)})
			}
			for k, v := range st.ByDomain {
				rows = append(rows, []string{"domain", k, fmt.Sprint(v)})
			}
			table(c.OutOrStdout(), []string{"BY", "NAME", "ENTRIES"}, rows)
			return nil
		}}
	cmd.AddCommand(list, get, replay, resolve, redrive, purge, stats)
	return cmd
}
