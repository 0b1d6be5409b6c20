package main

import (
	"fmt"
	"strconv"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
)

func coordinationClient(g *globals) (pb.CoordinationServiceClient, error) {
	conn, err := g.dial()
	if err != nil {
		return nil, err
	}
	return pb.NewCoordinationServiceClient(conn), nil
}

func leaseCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "lease", Short: "Fenced leases"}
	list := &cobra.Command{Use: "list", Short: "Leases in force", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := coordinationClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			resp, err := cl.ListLeases(ctx, &pb.ListLeasesRequest{})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), resp)
			}
			var rows [][]string
			for _, l := range resp.Leases {
				rows = append(rows, []string{fmt.Sprint(l.Id), l.Name, l.Holder, fmt.Sprint(l.FencingToken), l.Ttl.AsDuration().String(), fmtTime(l.ExpiresAt)})
			}
			table(c.OutOrStdout(), []string{"ID", "NAME", "HOLDER", "FENCING TOKEN", "TTL", "EXPIRES"}, rows)
			return nil
		}}
	var reason string
	revoke := &cobra.Command{Use: "revoke ID --reason R", Short: "Revoke a lease as an operator (the holder loses it at its next keepalive)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[0], 10, 64)
			if err != nil || id == 0 {
				return fmt.Errorf("lease id %q: want a positive number (see lease list)", args[0])
			}
			if reason == "" {
				return fmt.Errorf("--reason is required")
			}
			cl, err := coordinationClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			resp, err := cl.RevokeLease(ctx, &pb.RevokeLeaseRequest{Id: id, Force: true, Reason: reason})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), resp)
			}
			fmt.Fprintf(c.OutOrStdout(), "revoked lease %d (revision %d)\n", id, resp.Revision)
			return nil
		}}
	revoke.Flags().StringVar(&reason, "reason", "", "why (required, audited)")
	cmd.AddCommand(list, revoke)
	return cmd
}

func electionCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "election", Short: "Leader elections"}
	get := &cobra.Command{Use: "get NAME", Short: "Who leads an election, since when, and who waits", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := coordinationClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			e, err := cl.GetElection(ctx, &pb.GetElectionRequest{Name: args[0]})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), e)
			}
			out := c.OutOrStdout()
			if l := e.Leader; l != nil {
				fmt.Fprintf(out, "election:  %s\nleader:    %s (fencing token %d)\nsince:     %s\nexpires:   %s\n", e.Name, l.Holder, l.FencingToken, fmtTime(l.GrantedAt), fmtTime(l.ExpiresAt))
			} else {
				fmt.Fprintf(out, "election:  %s\nleader:    none\n", e.Name)
			}
			for _, cd := range e.Candidates {
				fmt.Fprintf(out, "candidate: %s (priority %d)\n", cd.Holder, cd.Priority)
			}
			return nil
		}}
	cmd.AddCommand(get)
	return cmd
}

func jobCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "job", Short: "The fleet job scheduler"}
	var resource string
	list := &cobra.Command{Use: "list", Short: "Scheduled jobs and their run records", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := coordinationClient(g)
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			resp, err := cl.ListJobs(ctx, &pb.ListJobsRequest{Resource: resource})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), resp)
			}
			var rows [][]string
			for _, j := range resp.Jobs {
				sched := j.Cron
				if j.Interval != nil {
					sched = "every " + j.Interval.AsDuration().String()
				}
				rows = append(rows, []string{j.Resource, j.Name, sched, fmt.Sprint(j.Enabled), fmtTime(j.LastRunAt), fmtTime(j.NextRunAt),
					fmt.Sprint(j.RunCount), fmt.Sprint(j.ErrorCount), fmt.Sprint(j.SkippedRuns), dash(j.LastError)})
			}
			table(c.OutOrStdout(), []string{"RESOURCE", "JOB", "SCHEDULE", "ENABLED", "LAST RUN", "NEXT RUN", "RUNS", "ERRORS", "SKIPPED", "LAST ERROR"}, rows)
			return nil
		}}
	list.Flags().StringVar(&resource, "resource", "", "only this scheduler resource")
	set := func(enabled bool) *cobra.Command {
		use := "disable RESOURCE JOB"
		if enabled {
			use = "enable RESOURCE JOB"
		}
		var reason string
		sc := &cobra.Command{Use: use, Short: map[bool]string{true: "Enable a job", false: "Disable a job"}[enabled], Args: cobra.ExactArgs(2),
			RunE: func(c *cobra.Command, args []string) error {
				cl, err := coordinationClient(g)
				if err != nil {
					return err
				}
				ctx, cancel := g.ctx(c.Context())
				defer cancel()
				j, err := cl.SetJobEnabled(ctx, &pb.SetJobEnabledRequest{Resource: args[0], Name: args[1], Enabled: enabled, Reason: reason})
				if err != nil {
					return err
				}
				if g.output == "json" {
					return printJSON(c.OutOrStdout(), j)
				}
				fmt.Fprintf(c.OutOrStdout(), "%s/%s enabled=%v, next run %s\n", j.Resource, j.Name, j.Enabled, fmtTime(j.NextRunAt))
				return nil
			}}
		sc.Flags().StringVar(&reason, "reason", "", "recorded in the audit trail")
		return sc
	}
	cmd.AddCommand(list, set(true), set(false))
	return cmd
}
