package main

import (
	"fmt"
	"strings"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
)

func emergencyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "emergency", Short: "Fleet-wide emergency levels"}
	client := func() (pb.EmergencyServiceClient, error) {
		conn, err := g.dial()
		if err != nil {
			return nil, err
		}
		return pb.NewEmergencyServiceClient(conn), nil
	}
	printState := func(c *cobra.Command, st *pb.EmergencyState, rev uint64) {
		out := c.OutOrStdout()
		fmt.Fprintf(out, "scope:     %s\nlevel:     %s\nactive:    %v\n", st.Scope, st.Level, st.Active)
		if st.Reason != "" {
			fmt.Fprintf(out, "reason:    %s\nby:        %s at %s\n", st.Reason, dash(st.ActivatedBy), fmtTime(st.ActivatedAt))
		}
		if st.ExpiresAt != nil && st.Active {
			fmt.Fprintf(out, "expires:   %s\n", fmtTime(st.ExpiresAt))
		}
		if st.Recovering {
			fmt.Fprintf(out, "recovery:  stepping down, next step at %s\n", fmtTime(st.NextStepAt))
		}
		if !st.Active && st.DeactivatedAt != nil {
			fmt.Fprintf(out, "released:  by %s at %s\n", dash(st.DeactivatedBy), fmtTime(st.DeactivatedAt))
		}
		fmt.Fprintf(out, "revision:  %d\n", rev)
	}

	var scope string
	var stale bool
	status := &cobra.Command{Use: "status", Short: "Show the emergency level", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			req := &pb.GetEmergencyRequest{Scope: scope}
			if stale {
				req.Consistency = "stale"
			}
			resp, err := cl.GetEmergency(ctx, req)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), resp)
			}
			printState(c, resp.State, resp.Revision)
			var rows [][]string
			for _, s := range resp.Scopes {
				if s.Scope != resp.State.Scope {
					rows = append(rows, []string{s.Scope, s.Level.String(), fmt.Sprint(s.Active), dash(s.Reason)})
				}
			}
			if len(rows) > 0 {
				fmt.Fprintln(c.OutOrStdout())
				table(c.OutOrStdout(), []string{"SCOPE", "LEVEL", "ACTIVE", "REASON"}, rows)
			}
			return nil
		}}
	status.Flags().StringVar(&scope, "scope", "", "scope (default global)")
	status.Flags().BoolVar(&stale, "stale", false, "answer from the contacted node without asking the leader")

	var reason string
	var duration time.Duration
	var auto bool
	trigger := &cobra.Command{Use: "trigger LEVEL --reason R [--duration D]", Short: "Activate LEVEL_1, LEVEL_2 or LEVEL_3", Args: cobra.ExactArgs(1),
		ValidArgs: []string{"LEVEL_1", "LEVEL_2", "LEVEL_3"},
		RunE: func(c *cobra.Command, args []string) error {
			level, ok := pb.EmergencyLevel_Value_value[strings.ToUpper(args[0])]
			if !ok {
				return fmt.Errorf("unknown level %q; use LEVEL_1, LEVEL_2 or LEVEL_3", args[0])
			}
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			req := &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_Value(level), Reason: reason, Scope: scope, Auto: auto}
			if duration != 0 {
				req.Duration = durationpb.New(duration)
			}
			resp, err := cl.TriggerEmergency(ctx, req)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), resp)
			}
			if !resp.Changed {
				fmt.Fprintln(c.OutOrStdout(), "unchanged: an equal or higher level is already active")
			}
			printState(c, resp.State, resp.Revision)
			return nil
		}}
	trigger.Flags().StringVar(&reason, "reason", "", "why (required, recorded in the audit trail)")
	trigger.Flags().DurationVar(&duration, "duration", 0, "end automatically after this long (1s..168h)")
	trigger.Flags().StringVar(&scope, "scope", "", "scope (default global)")
	trigger.Flags().BoolVar(&auto, "auto", false, "automatic trigger: only escalates, never lowers a higher level")

	var force, gradual bool
	release := &cobra.Command{Use: "release --reason R [--force]", Short: "End the emergency (or step down gradually)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			resp, err := cl.ReleaseEmergency(ctx, &pb.ReleaseEmergencyRequest{Reason: reason, Force: force, Gradual: gradual, Scope: scope})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), resp)
			}
			printState(c, resp.State, resp.Revision)
			return nil
		}}
	release.Flags().StringVar(&reason, "reason", "", "why (required)")
	release.Flags().BoolVar(&force, "force", false, "bypass the recovery gate (audited)")
	release.Flags().BoolVar(&gradual, "gradual", false, "step down one level per step delay")
	release.Flags().StringVar(&scope, "scope", "", "scope (default global)")

	var limit int32
	history := &cobra.Command{Use: "history", Short: "Recent level changes, newest first", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			resp, err := cl.ListEmergencyHistory(ctx, &pb.ListEmergencyHistoryRequest{Scope: scope, Limit: limit})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), resp)
			}
			var rows [][]string
			for _, ch := range resp.Changes {
				rows = append(rows, []string{fmt.Sprint(ch.Revision), fmtTime(ch.Time), ch.Scope, ch.Action, ch.FromLevel.String() + " → " + ch.ToLevel.String(), ch.Actor, dash(ch.Reason)})
			}
			table(c.OutOrStdout(), []string{"REVISION", "TIME", "SCOPE", "ACTION", "LEVEL", "ACTOR", "REASON"}, rows)
			return nil
		}}
	history.Flags().StringVar(&scope, "scope", "", "only this scope")
	history.Flags().Int32Var(&limit, "limit", 50, "at most this many (1..100)")

	cmd.AddCommand(status, trigger, release, history)
	return cmd
}
