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

func printCircuit(out io.Writer, ci *pb.Circuit) {
	fmt.Fprintf(out, "name:      %s\nstate:     %s\n", ci.Name, ci.State)
	if ci.Pinned {
		fmt.Fprintf(out, "pinned:    by %s until %s (%s)\n", dash(ci.PinnedBy), fmtTime(ci.PinExpiresAt), ci.PinReason)
	}
	if ci.OpenedAt != nil {
		fmt.Fprintf(out, "opened:    %s\n", fmtTime(ci.OpenedAt))
	}
	if e := ci.Evidence; e != nil && e.Trigger != "" {
		fmt.Fprintf(out, "trigger:   %s (window %d calls, %d failures, %d slow; %d consecutive; %d reporters)\n",
			e.Trigger, e.WindowCalls, e.WindowFailures, e.WindowSlowCalls, e.ConsecutiveFailures, e.Reporters)
	}
	if ci.State == pb.CircuitState_HALF_OPEN {
		fmt.Fprintf(out, "probes:    %d granted, %d succeeded of %d needed\n", ci.ProbesGranted, ci.ProbeSuccesses, ci.Policy.GetSuccessThreshold())
	}
	if w := ci.Window; w != nil && w.WindowCalls > 0 {
		fmt.Fprintf(out, "window:    %d calls, %d failures, %d slow, %d reporters (leader memory)\n", w.WindowCalls, w.WindowFailures, w.WindowSlowCalls, w.Reporters)
	}
	p := ci.Policy
	fmt.Fprintf(out, "policy:    %d consecutive | %.0f%% of >=%d calls | window %s | recovery %s | %d probes, %d to close | min reporters %d%s\n",
		p.GetFailureThreshold(), p.GetFailureRateThreshold(), p.GetMinimumCalls(), windowText(p), p.GetRecoveryTimeout().AsDuration(),
		p.GetHalfOpenMaxCalls(), p.GetSuccessThreshold(), p.GetMinReporters(), map[bool]string{true: " | DRY RUN", false: ""}[p.GetDryRun()])
	fmt.Fprintf(out, "revision:  %d\n", ci.Revision)
}

func printCircuitResponse(out io.Writer, resp *pb.CircuitResponse) { printCircuit(out, resp.Circuit) }

func circuits(conn *grpc.ClientConn) pb.CircuitServiceClient { return pb.NewCircuitServiceClient(conn) }

func circuitCmd(g *globals) *cobra.Command {
	var reason string
	var ttl time.Duration
	reasonFlag := func(f *pflag.FlagSet) { f.StringVar(&reason, "reason", "", "why (required)") }
	force := func(open bool) *cobra.Command {
		use, short := "force-close NAME --reason R [--ttl D]", "Pin a breaker CLOSED (expires; default 90m)"
		if open {
			use, short = "force-open NAME --reason R [--ttl D]", "Pin a breaker OPEN (expires; default 90m)"
		}
		return unary[*pb.CircuitResponse]{Use: use, Short: short, Args: cobra.ExactArgs(1),
			Flags: func(f *pflag.FlagSet) {
				reasonFlag(f)
				f.DurationVar(&ttl, "ttl", 0, "how long the pin holds: 1m..24h in whole minutes (default 90m)")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.CircuitResponse, error) {
				req := &pb.ForceRequest{Name: args[0], Reason: reason}
				if ttl != 0 {
					req.Ttl = durationpb.New(ttl)
				}
				if open {
					return circuits(conn).ForceOpen(ctx, req)
				}
				return circuits(conn).ForceClose(ctx, req)
			},
			Text: printCircuitResponse}.command(g)
	}

	var (
		p                                pb.CircuitPolicy
		window, slowDur, recovery, stuck time.Duration
		reportEvery                      time.Duration
		windowKind                       string
		failureRate, slowRate            float64
	)
	policySet := unary[*pb.CircuitResponse]{Use: "set NAME [flags]", Short: "Set a breaker's policy (unset flags take the server defaults)", Args: cobra.ExactArgs(1),
		Flags: func(f *pflag.FlagSet) {
			f.Int32Var(&p.FailureThreshold, "failure-threshold", 0, "consecutive failures that trip")
			f.Float64Var(&failureRate, "failure-rate-threshold", 0, "failure rate (%) that trips; 0 disables")
			f.Int32Var(&p.MinimumCalls, "minimum-calls", 0, "calls before rate triggers apply")
			f.StringVar(&windowKind, "window-type", "", "count or time")
			f.Int32Var(&p.WindowSize, "window-size", 0, "calls in a count window")
			f.DurationVar(&window, "window-duration", 0, "length of a time window")
			f.Float64Var(&slowRate, "slow-call-rate-threshold", 0, "slow-call rate (%) that trips; 0 disables")
			f.DurationVar(&slowDur, "slow-call-duration", 0, "a call slower than this is slow")
			f.DurationVar(&recovery, "recovery-timeout", 0, "OPEN dwell before trial calls")
			f.Int32Var(&p.HalfOpenMaxCalls, "half-open-max-calls", 0, "trial permits per HALF_OPEN window")
			f.Int32Var(&p.SuccessThreshold, "success-threshold", 0, "trial successes that close")
			f.DurationVar(&stuck, "half-open-stuck-timeout", 0, "reset a full HALF_OPEN window older than this")
			f.Int32Var(&p.MinReporters, "min-reporters", 0, "distinct instances a fleet trip needs")
			f.DurationVar(&reportEvery, "report-interval", 0, "SDK outcome batch interval")
			f.BoolVar(&p.DryRun, "dry-run", false, "never reject; count what would have been rejected")
			f.StringVar(&reason, "reason", "", "recorded in the audit trail")
		},
		Call: func(ctx context.Context, conn *grpc.ClientConn, c *cobra.Command, args []string) (*pb.CircuitResponse, error) {
			if c.Flags().Changed("failure-rate-threshold") {
				p.FailureRateThreshold = &failureRate
			}
			if c.Flags().Changed("slow-call-rate-threshold") {
				p.SlowCallRateThreshold = &slowRate
			}
			switch strings.ToLower(windowKind) {
			case "", "count":
			case "time":
				p.WindowType = pb.WindowType_TIME
			default:
				return nil, fmt.Errorf("--window-type %q: use count or time", windowKind)
			}
			for _, d := range []struct {
				v   time.Duration
				dst **durationpb.Duration
			}{{window, &p.WindowDuration}, {slowDur, &p.SlowCallDuration}, {recovery, &p.RecoveryTimeout}, {stuck, &p.HalfOpenStuckTimeout}, {reportEvery, &p.ReportInterval}} {
				if d.v != 0 {
					*d.dst = durationpb.New(d.v)
				}
			}
			return circuits(conn).SetPolicy(ctx, &pb.SetPolicyRequest{Name: args[0], Policy: &p, Reason: reason})
		},
		Text: printCircuitResponse}.command(g)

	return group("circuit", "Fleet-wide circuit breakers",
		unary[*pb.ListCircuitsResponse]{Use: "list", Short: "List breakers", Args: cobra.NoArgs,
			Call: func(_ context.Context, conn *grpc.ClientConn, c *cobra.Command, _ []string) (*pb.ListCircuitsResponse, error) {
				out := &pb.ListCircuitsResponse{}
				for token := ""; ; {
					ctx, cancel := g.ctx(c.Context()) // each page has the whole --timeout
					page, err := circuits(conn).ListCircuits(ctx, &pb.ListCircuitsRequest{PageToken: token})
					cancel()
					if err != nil {
						return nil, err
					}
					out.Circuits, out.KillSwitch, out.Revision = append(out.Circuits, page.Circuits...), page.KillSwitch, page.Revision
					if token = page.NextPageToken; token == "" {
						return out, nil
					}
				}
			},
			Text: func(w io.Writer, resp *pb.ListCircuitsResponse) {
				if resp.KillSwitch {
					fmt.Fprintln(w, "KILL SWITCH ON: every breaker passes calls through")
				}
				var rows [][]string
				for _, ci := range resp.Circuits {
					pin := "-"
					if ci.Pinned {
						pin = "until " + fmtTime(ci.PinExpiresAt)
					}
					rows = append(rows, []string{ci.Name, ci.State.String(), pin, dash(ci.Evidence.GetTrigger()), fmt.Sprint(ci.Revision)})
				}
				table(w, []string{"NAME", "STATE", "PINNED", "LAST TRIGGER", "REVISION"}, rows)
			}}.command(g),
		unary[*pb.Circuit]{Use: "get NAME", Short: "Show a breaker", Args: cobra.ExactArgs(1),
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.Circuit, error) {
				return circuits(conn).GetCircuit(ctx, &pb.GetCircuitRequest{Name: args[0]})
			},
			Text: printCircuit}.command(g),
		force(true), force(false),
		unary[*pb.CircuitResponse]{Use: "reset NAME --reason R", Short: "Close a breaker and clear its pin and evidence", Args: cobra.ExactArgs(1),
			Flags: reasonFlag,
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.CircuitResponse, error) {
				return circuits(conn).Reset(ctx, &pb.ResetRequest{Name: args[0], Reason: reason})
			},
			Text: printCircuitResponse}.command(g),
		unary[*pb.DeleteCircuitResponse]{Use: "delete NAME --reason R", Short: "Remove a breaker (admin); SDKs forget it, a new report registers it anew", Args: cobra.ExactArgs(1),
			Flags: reasonFlag,
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.DeleteCircuitResponse, error) {
				return circuits(conn).DeleteCircuit(ctx, &pb.DeleteCircuitRequest{Name: args[0], Reason: reason})
			},
			Text: func(w io.Writer, resp *pb.DeleteCircuitResponse) {
				fmt.Fprintf(w, "deleted (revision %d)\n", resp.Revision)
			}}.command(g),
		group("policy", "Show or set a breaker's policy",
			unary[*pb.CircuitPolicy]{Use: "get NAME", Short: "Show a breaker's policy", Args: cobra.ExactArgs(1),
				Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.CircuitPolicy, error) {
					ci, err := circuits(conn).GetCircuit(ctx, &pb.GetCircuitRequest{Name: args[0]})
					return ci.GetPolicy(), err
				}}.command(g),
			policySet),
		unary[*pb.KillSwitchResponse]{Use: "kill-switch on|off --reason R", Short: "Turn every breaker off (on) or back on (off)", Args: cobra.ExactArgs(1),
			ValidArgs: []string{"on", "off"}, Flags: reasonFlag,
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.KillSwitchResponse, error) {
				if args[0] != "on" && args[0] != "off" {
					return nil, fmt.Errorf("kill-switch %q: use on or off", args[0])
				}
				return circuits(conn).SetKillSwitch(ctx, &pb.SetKillSwitchRequest{Enabled: args[0] == "on", Reason: reason})
			},
			Text: func(w io.Writer, resp *pb.KillSwitchResponse) {
				fmt.Fprintf(w, "kill switch %s (revision %d)\n", map[bool]string{true: "ON", false: "off"}[resp.Enabled], resp.Revision)
			}}.command(g),
	)
}

func windowText(p *pb.CircuitPolicy) string {
	if p.GetWindowType() == pb.WindowType_TIME {
		return p.GetWindowDuration().AsDuration().String()
	}
	return fmt.Sprintf("%d calls", p.GetWindowSize())
}
