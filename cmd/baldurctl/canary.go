package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func canaries(conn *grpc.ClientConn) pb.CanaryServiceClient { return pb.NewCanaryServiceClient(conn) }

// parseStage reads NAME:PERCENT:DURATION[:manual].
func parseStage(s string) (*pb.CanaryStage, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 3 || len(parts) > 4 || (len(parts) == 4 && parts[3] != "manual") {
		return nil, fmt.Errorf("--stage %q: use NAME:PERCENT:DURATION[:manual], e.g. 5pct:5:5m", s)
	}
	pct, err := strconv.ParseFloat(parts[1], 64)
	if err != nil {
		return nil, fmt.Errorf("--stage %q: percentage %q: %v", s, parts[1], err)
	}
	d, err := time.ParseDuration(parts[2])
	if err != nil {
		return nil, fmt.Errorf("--stage %q: duration %q: %v", s, parts[2], err)
	}
	auto := len(parts) == 3
	return &pb.CanaryStage{Name: parts[0], Percentage: pct, Duration: durationpb.New(d), AutoPromote: &auto}, nil
}

func bar(pct float64, width int) string {
	n := int(pct / 100 * float64(width))
	n = min(max(n, 0), width)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

func printFigures(w io.Writer, label string, f *pb.CohortFigures) {
	if f == nil {
		return
	}
	fmt.Fprintf(w, "  %-9s %8d calls  %6.2f%% errors  p95 %7.1f ms  p99 %7.1f ms\n", label, f.Requests, f.ErrorRate*100, f.LatencyP95Ms, f.LatencyP99Ms)
}

func printRollout(w io.Writer, r *pb.Rollout) {
	fmt.Fprintf(w, "rollout:   %s\nsection:   %s\nstate:     %s", r.Id, r.Section, r.State)
	if r.PausedByInterlock {
		fmt.Fprint(w, " (emergency interlock)")
	}
	if r.Stuck {
		fmt.Fprint(w, " (stuck: see the watchdog)")
	}
	if r.FlaggedForReview {
		fmt.Fprint(w, " (gate bypassed: review)")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "progress:  %s %.0f%%\n", bar(r.Progress, 30), r.Progress)
	for i, st := range r.Stages {
		mark := " "
		switch {
		case r.State == pb.RolloutState_COMPLETED || i < int(r.CurrentStageIndex):
			mark = "✓"
		case i == int(r.CurrentStageIndex) && (r.State == pb.RolloutState_CANARY || r.State == pb.RolloutState_PAUSED):
			mark = "▶"
		}
		auto := "auto"
		if !st.GetAutoPromote() {
			auto = "manual"
		}
		fmt.Fprintf(w, "  %s %d %-16s %6.2f%%  %-8s %s\n", mark, i, printable(st.Name), st.Percentage, st.Duration.AsDuration(), auto)
	}
	if r.Reason != "" {
		fmt.Fprintf(w, "reason:    %s\n", printable(r.Reason))
	}
	fmt.Fprintf(w, "created:   by %s at %s\n", printable(dash(r.CreatedBy)), fmtTime(r.CreatedAt))
	if r.FinishedAt != nil {
		fmt.Fprintf(w, "finished:  by %s at %s (%s)\n", printable(dash(r.FinishedBy)), fmtTime(r.FinishedAt), printable(r.FinishReason))
	}
	if ev := r.LastEvidence; ev != nil {
		fmt.Fprintf(w, "evidence:  %s: %s\n", ev.Verdict, printable(ev.Reason))
	}
	fmt.Fprintf(w, "version:   %d\n", r.Version)
}

func canaryCmd(g *globals) *cobra.Command {
	var reason, bypass, tier, strategy string
	var stages []string
	var expected int32
	var force bool
	var minRequests int64
	var maxErrorRate float64
	action := func(use, short string, call func(pb.CanaryServiceClient, context.Context, *pb.RolloutActionRequest, ...grpc.CallOption) (*pb.RolloutResponse, error)) *cobra.Command {
		return unary[*pb.RolloutResponse]{Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
			Flags: func(f *pflag.FlagSet) {
				f.StringVar(&reason, "reason", "", "why (history and audit trail)")
				f.StringVar(&bypass, "bypass-reason", "", "go ahead despite the kill switch or emergency LEVEL_2+ (at least 10 characters; flagged for review)")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.RolloutResponse, error) {
				return call(canaries(conn), ctx, &pb.RolloutActionRequest{Id: args[0], Reason: reason, BypassReason: bypass})
			},
			Text: func(w io.Writer, resp *pb.RolloutResponse) { printRollout(w, resp.Rollout) },
		}.command(g)
	}
	watch := &cobra.Command{Use: "watch ID", Short: "Follow a rollout: its stage, progress and cohort figures, until it ends (exit 0 when it completes, 1 otherwise)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			conn, err := g.dial()
			if err != nil {
				return err
			}
			ctx := g.streamCtx(c.Context())
			stream, err := canaries(conn).WatchRollouts(ctx, &pb.WatchRolloutsRequest{Id: args[0]})
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			updates := make(chan *pb.Rollout)
			errc := make(chan error, 1)
			go func() {
				for {
					msg, err := stream.Recv()
					if err != nil {
						errc <- err
						return
					}
					for _, r := range msg.Rollouts {
						updates <- r
					}
				}
			}()
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			var last *pb.Rollout
			for {
				select {
				case err := <-errc:
					return err
				case r := <-updates:
					last = r
					fmt.Fprintf(out, "%s  %s stage %d/%d %s %.0f%%\n", time.Now().Format("15:04:05"), r.State, r.CurrentStageIndex+1, len(r.Stages), bar(r.Progress, 20), r.Progress)
					if ev := r.LastEvidence; ev != nil && r.State != pb.RolloutState_CANARY {
						fmt.Fprintf(out, "  %s: %s\n", ev.Verdict, printable(ev.Reason))
					}
					switch r.State {
					case pb.RolloutState_COMPLETED:
						return nil
					case pb.RolloutState_ROLLED_BACK, pb.RolloutState_CANCELLED, pb.RolloutState_FAILED:
						return fmt.Errorf("rollout %s ended %s: %s", r.Id, r.State, r.FinishReason)
					}
				case <-tick.C:
					if last == nil || last.State != pb.RolloutState_CANARY {
						continue
					}
					mctx, cancel := g.ctx(c.Context())
					m, err := canaries(conn).GetRolloutMetrics(mctx, &pb.GetRolloutRequest{Id: args[0]})
					cancel()
					if err != nil || m.Evidence == nil {
						continue
					}
					st := last.Stages[last.CurrentStageIndex]
					fmt.Fprintf(out, "%s  stage %q at %.2f%%: %s (%s)\n", time.Now().Format("15:04:05"), printable(st.Name), st.Percentage, m.Evidence.Verdict, printable(m.Evidence.Reason))
					printFigures(out, "canary", m.Evidence.Canary)
					printFigures(out, "baseline", m.Evidence.Baseline)
				}
			}
		}}
	return group("canary", "Staged rollouts of runtime configuration, judged on the cohorts' outcomes",
		unary[*pb.RolloutResponse]{Use: "create SECTION NEW_VALUES|@FILE|- --stage NAME:PERCENT:DURATION[:manual]...", Short: "Create a rollout (it holds the section; start it to begin)", Args: cobra.ExactArgs(2), ValidArgs: configSections,
			Flags: func(f *pflag.FlagSet) {
				f.StringArrayVar(&stages, "stage", nil, "a stage, in order of rising percentage: NAME:PERCENT:DURATION, with :manual to promote by hand (repeat)")
				f.StringVar(&reason, "reason", "", "why")
				f.StringVar(&tier, "tier", "", "critical, standard (default) or non_essential: the error-rate floor")
				f.StringVar(&strategy, "strategy", "", "request selection for Canary(section).Use: user_id_hash (default), random, header, allow_list")
				f.Int64Var(&minRequests, "min-requests", 0, "canary calls a verdict needs, every stage (default 100)")
				f.Float64Var(&maxErrorRate, "max-error-rate", 0, "the canary cohort's error rate that fails a stage, 0..1 (default 0.05; the tier's floor wins)")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, c *cobra.Command, args []string) (*pb.RolloutResponse, error) {
				v, err := readValues(c, args[1])
				if err != nil {
					return nil, err
				}
				if len(stages) == 0 {
					return nil, errors.New("give at least one --stage NAME:PERCENT:DURATION")
				}
				req := &pb.CreateRolloutRequest{Section: args[0], NewValues: v, Reason: reason, Tier: tier}
				if strategy != "" {
					req.Selection = &pb.CanarySelection{Strategy: strategy}
				}
				for _, s := range stages {
					st, err := parseStage(s)
					if err != nil {
						return nil, err
					}
					if minRequests > 0 || maxErrorRate > 0 {
						st.PassCriteria = &pb.PassCriteria{}
						if minRequests > 0 {
							st.PassCriteria.MinRequests = proto.Int64(minRequests)
						}
						if maxErrorRate > 0 {
							st.PassCriteria.ErrorRateAbsoluteMax = proto.Float64(maxErrorRate)
						}
					}
					req.Stages = append(req.Stages, st)
				}
				return canaries(conn).CreateRollout(ctx, req)
			},
			Text: func(w io.Writer, resp *pb.RolloutResponse) { printRollout(w, resp.Rollout) },
		}.command(g),
		action("start", "Begin the first stage (refused under the kill switch or emergency LEVEL_2+ without --bypass-reason)", pb.CanaryServiceClient.StartRollout),
		unary[*pb.RolloutResponse]{Use: "promote ID", Short: "Move to the next stage (the last completes the rollout)", Args: cobra.ExactArgs(1),
			Flags: func(f *pflag.FlagSet) {
				f.Int32Var(&expected, "expected-stage", -1, "the stage you saw (refused with STAGE_CONFLICT if the rollout moved on)")
				f.BoolVar(&force, "force", false, "promote whatever the stage's judgment says")
				f.StringVar(&reason, "reason", "", "why")
				f.StringVar(&bypass, "bypass-reason", "", "go ahead despite the kill switch or emergency LEVEL_2+ (at least 10 characters)")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.RolloutResponse, error) {
				req := &pb.PromoteRolloutRequest{Id: args[0], Force: force, Reason: reason, BypassReason: bypass}
				if expected >= 0 {
					req.ExpectedStageIndex = proto.Int32(expected)
				}
				return canaries(conn).PromoteRollout(ctx, req)
			},
			Text: func(w io.Writer, resp *pb.RolloutResponse) { printRollout(w, resp.Rollout) },
		}.command(g),
		action("pause", "Hold the rollout at its stage", pb.CanaryServiceClient.PauseRollout),
		action("resume", "Go on with a paused rollout (its stage starts over)", pb.CanaryServiceClient.ResumeRollout),
		action("rollback", "End the rollout; every instance goes back to the section's values", pb.CanaryServiceClient.RollbackRollout),
		action("cancel", "Drop a rollout that was not started", pb.CanaryServiceClient.CancelRollout),
		unary[*pb.ListRolloutsResponse]{Use: "list", Short: "Every rollout", Args: cobra.NoArgs,
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.ListRolloutsResponse, error) {
				return canaries(conn).ListRollouts(ctx, &pb.ListRolloutsRequest{})
			},
			Text: func(w io.Writer, resp *pb.ListRolloutsResponse) {
				rows := [][]string{}
				for _, r := range resp.Rollouts {
					stage := "-"
					if len(r.Stages) > 0 && int(r.CurrentStageIndex) < len(r.Stages) {
						stage = fmt.Sprintf("%d/%d %s", r.CurrentStageIndex+1, len(r.Stages), r.Stages[r.CurrentStageIndex].Name)
					}
					rows = append(rows, []string{r.Id, r.Section, r.State.String(), stage, fmt.Sprintf("%.0f%%", r.Progress), fmtTime(r.CreatedAt)})
				}
				table(w, []string{"ID", "SECTION", "STATE", "STAGE", "PROGRESS", "CREATED"}, rows)
			},
		}.command(g),
		unary[*pb.RolloutResponse]{Use: "get ID", Short: "Show a rollout", Args: cobra.ExactArgs(1),
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.RolloutResponse, error) {
				return canaries(conn).GetRollout(ctx, &pb.GetRolloutRequest{Id: args[0]})
			},
			Text: func(w io.Writer, resp *pb.RolloutResponse) { printRollout(w, resp.Rollout) },
		}.command(g),
		unary[*pb.RolloutMetrics]{Use: "metrics ID", Short: "The cohorts' figures the next judgment will see", Args: cobra.ExactArgs(1),
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.RolloutMetrics, error) {
				return canaries(conn).GetRolloutMetrics(ctx, &pb.GetRolloutRequest{Id: args[0]})
			},
			Text: func(w io.Writer, m *pb.RolloutMetrics) {
				if m.Evidence == nil {
					fmt.Fprintln(w, "no figures")
					return
				}
				fmt.Fprintf(w, "stage %d: %s (%s)\n", m.StageIndex, m.Evidence.Verdict, printable(m.Evidence.Reason))
				printFigures(w, "canary", m.Evidence.Canary)
				printFigures(w, "baseline", m.Evidence.Baseline)
				for _, b := range m.Evidence.Breakers {
					fmt.Fprintf(w, "breaker %s\n", printable(b.Name))
					printFigures(w, "canary", b.Canary)
					printFigures(w, "baseline", b.Baseline)
				}
			},
		}.command(g),
		unary[*pb.ListRolloutHistoryResponse]{Use: "history [ID]", Short: "Rollout transitions, newest first", Args: cobra.MaximumNArgs(1),
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.ListRolloutHistoryResponse, error) {
				req := &pb.ListRolloutHistoryRequest{}
				if len(args) == 1 {
					req.Id = args[0]
				}
				return canaries(conn).ListRolloutHistory(ctx, req)
			},
			Text: func(w io.Writer, resp *pb.ListRolloutHistoryResponse) {
				rows := [][]string{}
				for _, t := range resp.Transitions {
					by := t.Actor
					if t.Automatic {
						by += " (automatic)"
					}
					rows = append(rows, []string{fmtTime(t.Time), t.RolloutId, t.Action, t.From.String() + "→" + t.To.String(), strconv.Itoa(int(t.StageIndex)), by, t.Reason})
				}
				table(w, []string{"TIME", "ROLLOUT", "ACTION", "STATE", "STAGE", "BY", "REASON"}, rows)
			},
		}.command(g),
		unary[*pb.PanicRollbackResponse]{Use: "panic-rollback --reason R", Short: "Roll back every active rollout (admin)", Args: cobra.NoArgs,
			Flags: func(f *pflag.FlagSet) { f.StringVar(&reason, "reason", "", "why") },
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.PanicRollbackResponse, error) {
				return canaries(conn).PanicRollback(ctx, &pb.PanicRollbackRequest{Reason: reason})
			},
			Text: func(w io.Writer, resp *pb.PanicRollbackResponse) {
				if len(resp.Results) == 0 {
					fmt.Fprintln(w, "no active rollout")
				}
				for _, r := range resp.Results {
					if r.RolledBack {
						fmt.Fprintf(w, "%s rolled back\n", r.Id)
					} else {
						fmt.Fprintf(w, "%s: %s\n", r.Id, printable(r.Error))
					}
				}
			},
			Check: func(resp *pb.PanicRollbackResponse) error {
				for _, r := range resp.Results {
					if !r.RolledBack {
						return errors.New("some rollouts were not rolled back")
					}
				}
				return nil
			},
		}.command(g),
		watch,
	)
}
