package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
)

func printEmergency(out io.Writer, st *pb.EmergencyState, rev uint64) {
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

func emergencies(conn *grpc.ClientConn) pb.EmergencyServiceClient {
	return pb.NewEmergencyServiceClient(conn)
}

func emergencyCmd(g *globals) *cobra.Command {
	var scope, reason string
	var stale, auto, force, gradual bool
	var duration time.Duration
	var limit int32
	scopeFlag := func(usage string) func(*pflag.FlagSet) {
		return func(f *pflag.FlagSet) { f.StringVar(&scope, "scope", "", usage) }
	}
	return group("emergency", "Fleet-wide emergency levels",
		unary[*pb.GetEmergencyResponse]{Use: "status", Short: "Show the emergency level", Args: cobra.NoArgs,
			Flags: func(f *pflag.FlagSet) {
				scopeFlag("scope (default global)")(f)
				f.BoolVar(&stale, "stale", false, "answer from the contacted node without asking the leader")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.GetEmergencyResponse, error) {
				req := &pb.GetEmergencyRequest{Scope: scope}
				if stale {
					req.Consistency = "stale"
				}
				return emergencies(conn).GetEmergency(ctx, req)
			},
			Text: func(w io.Writer, resp *pb.GetEmergencyResponse) {
				printEmergency(w, resp.State, resp.Revision)
				var rows [][]string
				for _, s := range resp.Scopes {
					if s.Scope != resp.State.Scope {
						rows = append(rows, []string{s.Scope, s.Level.String(), fmt.Sprint(s.Active), dash(s.Reason)})
					}
				}
				if len(rows) > 0 {
					fmt.Fprintln(w)
					table(w, []string{"SCOPE", "LEVEL", "ACTIVE", "REASON"}, rows)
				}
			}}.command(g),
		unary[*pb.TriggerEmergencyResponse]{Use: "trigger LEVEL --reason R [--duration D]", Short: "Activate LEVEL_1, LEVEL_2 or LEVEL_3", Args: cobra.ExactArgs(1),
			ValidArgs: []string{"LEVEL_1", "LEVEL_2", "LEVEL_3"},
			Flags: func(f *pflag.FlagSet) {
				f.StringVar(&reason, "reason", "", "why (required, recorded in the audit trail)")
				f.DurationVar(&duration, "duration", 0, "end automatically after this long (1s..168h)")
				scopeFlag("scope (default global)")(f)
				f.BoolVar(&auto, "auto", false, "automatic trigger: only escalates, never lowers a higher level")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.TriggerEmergencyResponse, error) {
				level, ok := pb.EmergencyLevel_Value_value[strings.ToUpper(args[0])]
				if !ok {
					return nil, fmt.Errorf("unknown level %q; use LEVEL_1, LEVEL_2 or LEVEL_3", args[0])
				}
				req := &pb.TriggerEmergencyRequest{Level: pb.EmergencyLevel_Value(level), Reason: reason, Scope: scope, Auto: auto}
				if duration != 0 {
					req.Duration = durationpb.New(duration)
				}
				return emergencies(conn).TriggerEmergency(ctx, req)
			},
			Text: func(w io.Writer, resp *pb.TriggerEmergencyResponse) {
				if !resp.Changed {
					fmt.Fprintln(w, "unchanged: an equal or higher level is already active")
				}
				printEmergency(w, resp.State, resp.Revision)
			}}.command(g),
		unary[*pb.ReleaseEmergencyResponse]{Use: "release --reason R [--force]", Short: "End the emergency (or step down gradually)", Args: cobra.NoArgs,
			Flags: func(f *pflag.FlagSet) {
				f.StringVar(&reason, "reason", "", "why (required)")
				f.BoolVar(&force, "force", false, "bypass the recovery gate (audited)")
				f.BoolVar(&gradual, "gradual", false, "step down one level per step delay")
				scopeFlag("scope (default global)")(f)
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.ReleaseEmergencyResponse, error) {
				return emergencies(conn).ReleaseEmergency(ctx, &pb.ReleaseEmergencyRequest{Reason: reason, Force: force, Gradual: gradual, Scope: scope})
			},
			Text: func(w io.Writer, resp *pb.ReleaseEmergencyResponse) { printEmergency(w, resp.State, resp.Revision) }}.command(g),
		unary[*pb.ListEmergencyHistoryResponse]{Use: "history", Short: "Recent level changes, newest first", Args: cobra.NoArgs,
			Flags: func(f *pflag.FlagSet) {
				scopeFlag("only this scope")(f)
				f.Int32Var(&limit, "limit", 50, "at most this many (1..100)")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.ListEmergencyHistoryResponse, error) {
				return emergencies(conn).ListEmergencyHistory(ctx, &pb.ListEmergencyHistoryRequest{Scope: scope, Limit: limit})
			},
			Text: func(w io.Writer, resp *pb.ListEmergencyHistoryResponse) {
				var rows [][]string
				for _, ch := range resp.Changes {
					rows = append(rows, []string{fmt.Sprint(ch.Revision), fmtTime(ch.Time), ch.Scope, ch.Action, ch.FromLevel.String() + " → " + ch.ToLevel.String(), ch.Actor, dash(ch.Reason)})
				}
				table(w, []string{"REVISION", "TIME", "SCOPE", "ACTION", "LEVEL", "ACTOR", "REASON"}, rows)
			}}.command(g),
	)
}
