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
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
)

func dlqs(conn *grpc.ClientConn) pb.DLQServiceClient { return pb.NewDLQServiceClient(conn) }

func printEntryStatus(w io.Writer, e *pb.DLQEntry) {
	fmt.Fprintf(w, "%s: %s (attempts %d/%d)\n", e.Id, e.Status, e.RetryCount, e.MaxRetries)
}

func dlqCmd(g *globals) *cobra.Command {
	client := func() (pb.DLQServiceClient, error) {
		conn, err := g.dial()
		if err != nil {
			return nil, err
		}
		return dlqs(conn), nil
	}
	var domain, status, reason string
	var pageSize int32
	var all bool
	list := unary[*pb.ListEntriesResponse]{Use: "list", Short: "List entries, oldest first", Args: cobra.NoArgs,
		Flags: func(f *pflag.FlagSet) {
			f.StringVar(&domain, "domain", "", "only this domain")
			f.StringVar(&status, "status", "", "only this status (PENDING, REQUIRES_REVIEW, ...)")
			f.Int32Var(&pageSize, "page-size", 100, "entries per page (1..1000)")
			f.BoolVar(&all, "all", false, "fetch every page")
		},
		Call: func(_ context.Context, conn *grpc.ClientConn, c *cobra.Command, _ []string) (*pb.ListEntriesResponse, error) {
			out := &pb.ListEntriesResponse{}
			token := ""
			for {
				ctx, cancel := g.ctx(c.Context()) // each page has the whole --timeout
				resp, err := dlqs(conn).ListEntries(ctx, &pb.ListEntriesRequest{Domain: domain, Status: status, PageSize: pageSize, PageToken: token})
				cancel()
				if err != nil {
					return nil, err
				}
				out.Entries = append(out.Entries, resp.Entries...)
				out.NextPageToken = resp.NextPageToken
				if token = resp.NextPageToken; !all || token == "" {
					return out, nil
				}
			}
		},
		Text: func(w io.Writer, out *pb.ListEntriesResponse) {
			var rows [][]string
			for _, e := range out.Entries {
				rows = append(rows, []string{e.Id, e.Domain, e.FailureType, e.Status, fmt.Sprintf("%d/%d", e.RetryCount, e.MaxRetries), fmtTime(e.CreatedAt), dash(e.ErrorCode)})
			}
			table(w, []string{"ID", "DOMAIN", "FAILURE TYPE", "STATUS", "ATTEMPTS", "CREATED", "ERROR"}, rows)
			if out.NextPageToken != "" {
				fmt.Fprintln(w, "\nmore entries: --all")
			}
		}}.command(g)

	get := unary[*pb.DLQEntry]{Use: "get ID", Short: "Show an entry", Args: cobra.ExactArgs(1),
		Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.DLQEntry, error) {
			return dlqs(conn).GetEntry(ctx, &pb.GetEntryRequest{Id: args[0]})
		}}.command(g)

	action := func(use, short string, call func(pb.DLQServiceClient, context.Context, *pb.EntryActionRequest, ...grpc.CallOption) (*pb.DLQEntry, error)) *cobra.Command {
		return unary[*pb.DLQEntry]{Use: use, Short: short, Args: cobra.ExactArgs(1),
			Flags: func(f *pflag.FlagSet) { f.StringVar(&reason, "reason", "", "recorded in the audit trail") },
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.DLQEntry, error) {
				return call(dlqs(conn), ctx, &pb.EntryActionRequest{Id: args[0], Reason: reason})
			},
			Text: printEntryStatus}.command(g)
	}
	resolve := action("resolve ID", "Mark an entry resolved by hand", pb.DLQServiceClient.ResolveEntry)
	redrive := action("redrive ID --reason R", "Reset an entry's attempt budget and replay it (admin)", pb.DLQServiceClient.RedriveEntry)

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
	purge := unary[*pb.PurgeResponse]{Use: "purge [ID...] [--older-than D] [--yes]", Short: "Delete ARCHIVED entries for good", Args: cobra.ArbitraryArgs,
		Flags: func(f *pflag.FlagSet) {
			f.BoolVar(&yes, "yes", false, "do not ask for confirmation")
			f.DurationVar(&olderThan, "older-than", 0, "ARCHIVED entries older than this")
		},
		Call: func(ctx context.Context, conn *grpc.ClientConn, c *cobra.Command, args []string) (*pb.PurgeResponse, error) {
			if len(args) == 0 && olderThan == 0 {
				return nil, fmt.Errorf("give entry ids or --older-than")
			}
			if !yes {
				fmt.Fprintf(c.ErrOrStderr(), "Delete ARCHIVED entries %s for good? Type yes: ", strings.Join(args, " "))
				line, _ := bufio.NewReader(c.InOrStdin()).ReadString('\n')
				if strings.TrimSpace(line) != "yes" {
					return nil, fmt.Errorf("not confirmed; nothing purged (use --yes in scripts)")
				}
			}
			req := &pb.PurgeRequest{Confirm: true, Ids: args}
			if olderThan > 0 {
				req.OlderThan = durationpb.New(olderThan)
			}
			return dlqs(conn).Purge(ctx, req)
		},
		Text: func(w io.Writer, resp *pb.PurgeResponse) { fmt.Fprintf(w, "purged %d entries\n", resp.Purged) }}.command(g)

	stats := unary[*pb.DLQStats]{Use: "stats", Short: "Entry counts by status and domain", Args: cobra.NoArgs,
		Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.DLQStats, error) {
			return dlqs(conn).GetStats(ctx, &pb.GetDLQStatsRequest{})
		},
		Text: func(w io.Writer, st *pb.DLQStats) {
			fmt.Fprintf(w, "total: %d\n", st.Total)
			var rows [][]string
			for k, v := range st.ByStatus {
				rows = append(rows, []string{"status", k, fmt.Sprint(v)})
			}
			for k, v := range st.ByDomain {
				rows = append(rows, []string{"domain", k, fmt.Sprint(v)})
			}
			table(w, []string{"BY", "NAME", "ENTRIES"}, rows)
		}}.command(g)
	return group("dlq", "The dead-letter queue", list, get, replay, resolve, redrive, purge, stats)
}
