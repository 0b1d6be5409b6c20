package main

import (
	"fmt"
	"strings"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/durationpb"
)

func circuitCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "circuit", Short: "Fleet-wide circuit breakers"}
	client := func() (pb.CircuitServiceClient, error) {
		conn, err := g.dial()
		if err != nil {
			return nil, err
		}
		return pb.NewCircuitServiceClient(conn), nil
	}
	printCircuit := func(c *cobra.Command, ci *pb.Circuit) {
		out := c.OutOrStdout()
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
	respond := func(c *cobra.Command, resp *pb.CircuitResponse, err error) error {
		if err != nil {
			return err
		}
		if g.output == "json" {
			return printJSON(c.OutOrStdout(), resp)
		}
		printCircuit(c, resp.Circuit)
		return nil
	}

	list := &cobra.Command{Use: "list", Short: "List breakers", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			resp, err := cl.ListCircuits(ctx, &pb.ListCircuitsRequest{})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), resp)
			}
			if resp.KillSwitch {
				fmt.Fprintln(c.OutOrStdout(), "KILL SWITCH ON: every breaker passes calls through")
			}
			var rows [][]string
			for _, ci := range resp.Circuits {
				pin := "-"
				if ci.Pinned {
					pin = "until " + fmtTime(ci.PinExpiresAt)
				}
				rows = append(rows, []string{ci.Name, ci.State.String(), pin, dash(ci.Evidence.GetTrigger()), fmt.Sprint(ci.Revision)})
			}
			table(c.OutOrStdout(), []string{"NAME", "STATE", "PINNED", "LAST TRIGGER", "REVISION"}, rows)
			return nil
		}}
	get := &cobra.Command{Use: "get NAME", Short: "Show a breaker", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			ci, err := cl.GetCircuit(ctx, &pb.GetCircuitRequest{Name: args[0]})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), ci)
			}
			printCircuit(c, ci)
			return nil
		}}

	var reason string
	var ttl time.Duration
	force := func(open bool) *cobra.Command {
		use, short := "force-close NAME --reason R [--ttl D]", "Pin a breaker CLOSED (expires; default 90m)"
		if open {
			use, short = "force-open NAME --reason R [--ttl D]", "Pin a breaker OPEN (expires; default 90m)"
		}
		fc := &cobra.Command{Use: use, Short: short, Args: cobra.ExactArgs(1),
			RunE: func(c *cobra.Command, args []string) error {
				cl, err := client()
				if err != nil {
					return err
				}
				ctx, cancel := g.ctx(c.Context())
				defer cancel()
				req := &pb.ForceRequest{Name: args[0], Reason: reason}
				if ttl != 0 {
					req.Ttl = durationpb.New(ttl)
				}
				if open {
					resp, err := cl.ForceOpen(ctx, req)
					return respond(c, resp, err)
				}
				resp, err := cl.ForceClose(ctx, req)
				return respond(c, resp, err)
			}}
		fc.Flags().StringVar(&reason, "reason", "", "why (required)")
		fc.Flags().DurationVar(&ttl, "ttl", 0, "how long the pin holds: 1m..24h in whole minutes (default 90m)")
		return fc
	}
	reset := &cobra.Command{Use: "reset NAME --reason R", Short: "Close a breaker and clear its pin and evidence", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			resp, err := cl.Reset(ctx, &pb.ResetRequest{Name: args[0], Reason: reason})
			return respond(c, resp, err)
		}}
	reset.Flags().StringVar(&reason, "reason", "", "why (required)")

	policy := &cobra.Command{Use: "policy", Short: "Show or set a breaker's policy"}
	policyGet := &cobra.Command{Use: "get NAME", Short: "Show a breaker's policy", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			ci, err := cl.GetCircuit(ctx, &pb.GetCircuitRequest{Name: args[0]})
			if err != nil {
				return err
			}
			return printJSON(c.OutOrStdout(), ci.Policy)
		}}
	var (
		p                                pb.CircuitPolicy
		window, slowDur, recovery, stuck time.Duration
		reportEvery                      time.Duration
		windowKind                       string
		failureRate, slowRate            float64
	)
	policySet := &cobra.Command{Use: "set NAME [flags]", Short: "Set a breaker's policy (unset flags take the server defaults)", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			req := &pb.SetPolicyRequest{Name: args[0], Policy: &p, Reason: reason}
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
				return fmt.Errorf("--window-type %q: use count or time", windowKind)
			}
			for _, d := range []struct {
				v   time.Duration
				dst **durationpb.Duration
			}{{window, &p.WindowDuration}, {slowDur, &p.SlowCallDuration}, {recovery, &p.RecoveryTimeout}, {stuck, &p.HalfOpenStuckTimeout}, {reportEvery, &p.ReportInterval}} {
				if d.v != 0 {
					*d.dst = durationpb.New(d.v)
				}
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			resp, err := cl.SetPolicy(ctx, req)
			return respond(c, resp, err)
		}}
	f := policySet.Flags()
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
	policy.AddCommand(policyGet, policySet)

	kill := &cobra.Command{Use: "kill-switch on|off --reason R", Short: "Turn every breaker off (on) or back on (off)", Args: cobra.ExactArgs(1),
		ValidArgs: []string{"on", "off"},
		RunE: func(c *cobra.Command, args []string) error {
			if args[0] != "on" && args[0] != "off" {
				return fmt.Errorf("kill-switch %q: use on or off", args[0])
			}
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			resp, err := cl.SetKillSwitch(ctx, &pb.SetKillSwitchRequest{Enabled: args[0] == "on", Reason: reason})
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), resp)
			}
			fmt.Fprintf(c.OutOrStdout(), "kill switch %s (revision %d)\n", map[bool]string{true: "ON", false: "off"}[resp.Enabled], resp.Revision)
			return nil
		}}
	kill.Flags().StringVar(&reason, "reason", "", "why (required)")

	cmd.AddCommand(list, get, force(true), force(false), reset, policy, kill)
	return cmd
}

func windowText(p *pb.CircuitPolicy) string {
	if p.GetWindowType() == pb.WindowType_TIME {
		return p.GetWindowDuration().AsDuration().String()
	}
	return fmt.Sprintf("%d calls", p.GetWindowSize())
}
