package main

import (
	"context"
	"fmt"
	"io"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
)

func printSystem(w io.Writer, s *pb.SystemState) {
	enabled := "enabled"
	if !s.Enabled {
		enabled = "DISABLED (kill switch on)"
	}
	run := "live"
	if s.DryRun {
		run = "DRY RUN (decisions counted, not enforced)"
	}
	fmt.Fprintf(w, "system:       %s\nenforcement:  %s\nmode:         %s", enabled, run, s.Mode)
	if s.Mode == "STRICT" {
		fmt.Fprintf(w, " since %s, until %s (%s)", fmtTime(s.StrictSince), fmtTime(s.StrictUntil), printable(s.StrictReason))
	}
	fmt.Fprintln(w)
	if bg := s.BreakGlass; bg != nil && bg.Active {
		fmt.Fprintf(w, "break glass:  ENGAGED by %s until %s (%s)\n", printable(bg.By), fmtTime(bg.Until), printable(bg.Reason))
	} else {
		fmt.Fprintln(w, "break glass:  off")
	}
}

func systemCmd(g *globals) *cobra.Command {
	var reason string
	var confirm bool
	var ttl time.Duration
	reasonFlag := func(f *pflag.FlagSet) { f.StringVar(&reason, "reason", "", "why (audited)") }
	row := func(use, short string, flags func(*pflag.FlagSet), call func(pb.SystemServiceClient, context.Context) (*pb.SystemState, error)) *cobra.Command {
		return unary[*pb.SystemState]{Use: use, Short: short, Args: cobra.NoArgs, Flags: flags,
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.SystemState, error) {
				return call(pb.NewSystemServiceClient(conn), ctx)
			},
			Text: printSystem,
		}.command(g)
	}
	return group("system", "System control: enabled, dry run, operating mode, break glass",
		row("status", "Show the system control", nil, func(c pb.SystemServiceClient, ctx context.Context) (*pb.SystemState, error) {
			return c.GetSystem(ctx, &pb.GetSystemRequest{})
		}),
		row("disable --reason R", "Turn the kill switch on: SDK primitives pass through", reasonFlag, func(c pb.SystemServiceClient, ctx context.Context) (*pb.SystemState, error) {
			return c.DisableSystem(ctx, &pb.SystemActionRequest{Reason: reason})
		}),
		row("enable", "Turn the kill switch off", reasonFlag, func(c pb.SystemServiceClient, ctx context.Context) (*pb.SystemState, error) {
			return c.EnableSystem(ctx, &pb.SystemActionRequest{Reason: reason})
		}),
		row("dry-run", "Compute and count every decision, enforce none", reasonFlag, func(c pb.SystemServiceClient, ctx context.Context) (*pb.SystemState, error) {
			return c.SetDryRun(ctx, &pb.SystemActionRequest{Reason: reason})
		}),
		row("live --confirm", "Leave dry run: decisions are enforced again", func(f *pflag.FlagSet) {
			reasonFlag(f)
			f.BoolVar(&confirm, "confirm", false, "confirm enforcing again")
		}, func(c pb.SystemServiceClient, ctx context.Context) (*pb.SystemState, error) {
			return c.SetLive(ctx, &pb.SystemActionRequest{Reason: reason, Confirm: confirm})
		}),
		row("strict --reason R", "Enter STRICT mode (at most 8 hours)", reasonFlag, func(c pb.SystemServiceClient, ctx context.Context) (*pb.SystemState, error) {
			return c.SetStrict(ctx, &pb.SystemActionRequest{Reason: reason})
		}),
		row("normal", "Return to NORMAL mode", reasonFlag, func(c pb.SystemServiceClient, ctx context.Context) (*pb.SystemState, error) {
			return c.SetNormal(ctx, &pb.SystemActionRequest{Reason: reason})
		}),
		row("break-glass --reason R --ttl D", "Let every gated operation through until the TTL (at most 4h), audited and flagged", func(f *pflag.FlagSet) {
			reasonFlag(f)
			f.DurationVar(&ttl, "ttl", time.Hour, "how long (at most 4h)")
		}, func(c pb.SystemServiceClient, ctx context.Context) (*pb.SystemState, error) {
			return c.BreakGlass(ctx, &pb.BreakGlassRequest{Reason: reason, Ttl: durationpb.New(ttl)})
		}),
		row("end-break-glass", "End break glass now", reasonFlag, func(c pb.SystemServiceClient, ctx context.Context) (*pb.SystemState, error) {
			return c.EndBreakGlass(ctx, &pb.SystemActionRequest{Reason: reason})
		}),
	)
}
