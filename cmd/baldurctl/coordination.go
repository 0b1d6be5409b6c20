package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
)

func coordination(conn *grpc.ClientConn) pb.CoordinationServiceClient {
	return pb.NewCoordinationServiceClient(conn)
}

func leaseCmd(g *globals) *cobra.Command {
	var reason string
	var id uint64
	return group("lease", "Fenced leases",
		unary[*pb.ListLeasesResponse]{Use: "list", Short: "Leases in force", Args: cobra.NoArgs,
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.ListLeasesResponse, error) {
				return coordination(conn).ListLeases(ctx, &pb.ListLeasesRequest{})
			},
			Text: func(w io.Writer, resp *pb.ListLeasesResponse) {
				var rows [][]string
				for _, l := range resp.Leases {
					rows = append(rows, []string{fmt.Sprint(l.Id), l.Name, l.Holder, fmt.Sprint(l.FencingToken), l.Ttl.AsDuration().String(), fmtTime(l.ExpiresAt)})
				}
				table(w, []string{"ID", "NAME", "HOLDER", "FENCING TOKEN", "TTL", "EXPIRES"}, rows)
			}}.command(g),
		unary[*pb.RevokeLeaseResponse]{Use: "revoke ID --reason R", Short: "Revoke a lease as an operator (the holder loses it at its next keepalive)", Args: cobra.ExactArgs(1),
			Flags: func(f *pflag.FlagSet) { f.StringVar(&reason, "reason", "", "why (required, audited)") },
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.RevokeLeaseResponse, error) {
				var err error
				if id, err = strconv.ParseUint(args[0], 10, 64); err != nil || id == 0 {
					return nil, fmt.Errorf("lease id %q: want a positive number (see lease list)", args[0])
				}
				if reason == "" {
					return nil, errors.New("--reason is required")
				}
				return coordination(conn).RevokeLease(ctx, &pb.RevokeLeaseRequest{Id: id, Force: true, Reason: reason})
			},
			Text: func(w io.Writer, resp *pb.RevokeLeaseResponse) {
				fmt.Fprintf(w, "revoked lease %d (revision %d)\n", id, resp.Revision)
			}}.command(g),
	)
}

func electionCmd(g *globals) *cobra.Command {
	return group("election", "Leader elections",
		unary[*pb.Election]{Use: "get NAME", Short: "Who leads an election, since when, and who waits", Args: cobra.ExactArgs(1),
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.Election, error) {
				return coordination(conn).GetElection(ctx, &pb.GetElectionRequest{Name: args[0]})
			},
			Text: func(out io.Writer, e *pb.Election) {
				if l := e.Leader; l != nil {
					fmt.Fprintf(out, "election:  %s\nleader:    %s (fencing token %d)\nsince:     %s\nexpires:   %s\n", e.Name, l.Holder, l.FencingToken, fmtTime(l.GrantedAt), fmtTime(l.ExpiresAt))
				} else {
					fmt.Fprintf(out, "election:  %s\nleader:    none\n", e.Name)
				}
				for _, cd := range e.Candidates {
					fmt.Fprintf(out, "candidate: %s (priority %d)\n", cd.Holder, cd.Priority)
				}
			}}.command(g),
	)
}

func jobCmd(g *globals) *cobra.Command {
	var resource, reason string
	set := func(enabled bool) *cobra.Command {
		use := "disable RESOURCE JOB"
		if enabled {
			use = "enable RESOURCE JOB"
		}
		return unary[*pb.Job]{Use: use, Short: map[bool]string{true: "Enable a job", false: "Disable a job"}[enabled], Args: cobra.ExactArgs(2),
			Flags: func(f *pflag.FlagSet) { f.StringVar(&reason, "reason", "", "recorded in the audit trail") },
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.Job, error) {
				return coordination(conn).SetJobEnabled(ctx, &pb.SetJobEnabledRequest{Resource: args[0], Name: args[1], Enabled: enabled, Reason: reason})
			},
			Text: func(w io.Writer, j *pb.Job) {
				fmt.Fprintf(w, "%s/%s enabled=%v, next run %s\n", j.Resource, j.Name, j.Enabled, fmtTime(j.NextRunAt))
			}}.command(g)
	}
	return group("job", "The fleet job scheduler",
		unary[*pb.ListJobsResponse]{Use: "list", Short: "Scheduled jobs and their run records", Args: cobra.NoArgs,
			Flags: func(f *pflag.FlagSet) { f.StringVar(&resource, "resource", "", "only this scheduler resource") },
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.ListJobsResponse, error) {
				return coordination(conn).ListJobs(ctx, &pb.ListJobsRequest{Resource: resource})
			},
			Text: func(w io.Writer, resp *pb.ListJobsResponse) {
				var rows [][]string
				for _, j := range resp.Jobs {
					sched := j.Cron
					if j.Interval != nil {
						sched = "every " + j.Interval.AsDuration().String()
					}
					rows = append(rows, []string{j.Resource, j.Name, sched, fmt.Sprint(j.Enabled), fmtTime(j.LastRunAt), fmtTime(j.NextRunAt),
						fmt.Sprint(j.RunCount), fmt.Sprint(j.ErrorCount), fmt.Sprint(j.SkippedRuns), dash(j.LastError)})
				}
				table(w, []string{"RESOURCE", "JOB", "SCHEDULE", "ENABLED", "LAST RUN", "NEXT RUN", "RUNS", "ERRORS", "SKIPPED", "LAST ERROR"}, rows)
			}}.command(g),
		set(true), set(false),
	)
}
