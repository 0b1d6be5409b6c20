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

func printRateLimit(w io.Writer, s *pb.RateLimitStatus) {
	l := s.Limit
	fmt.Fprintf(w, "%s: %g per %s, burst %d, scope %s", s.Name, l.GetRate(), l.GetPer().AsDuration(), l.GetBurst(), l.GetScope())
	if l.GetFallbackRate() > 0 {
		fmt.Fprintf(w, ", fallback %g per instance", l.GetFallbackRate())
	}
	fmt.Fprintf(w, "  (version %d)\n  allocated %.1f of %g, demand %.1f, %d instances\n", s.Version, s.Allocated, l.GetRate(), s.Demand, len(s.Instances))
	for _, in := range s.Instances {
		fmt.Fprintf(w, "  %-24s share %8.1f  demand %8.1f  admitted %8.1f  rejected %8.1f  until %s\n", printable(in.Instance), in.Share, in.Demand,
			in.Admitted, in.Rejected, fmtTime(in.LeaseExpires))
	}
}

func printBulkhead(w io.Writer, b *pb.BulkheadStatus) {
	fmt.Fprintf(w, "%s: max %d concurrent, wait %s  (version %d)\n  %d instances, %d active, %d waiting, %d rejected, %.1f%% utilized\n",
		b.Name, b.Config.GetMaxConcurrent(), b.Config.GetMaxWait().AsDuration(), b.Version, b.Instances, b.Active, b.Waiting, b.RejectedTotal, b.UtilizationPercent)
}

func printThrottle(w io.Writer, t *pb.ThrottleStatus) {
	c := t.Config
	fmt.Fprintf(w, "%s: limit %d..%d (initial %d) per %s, SLA %s/%s, breaker %s  (version %d)\n", t.Name, c.GetMinLimit(), c.GetMaxLimit(),
		c.GetInitialLimit(), c.GetWindow().AsDuration(), c.GetSlaWarning().AsDuration(), c.GetSlaCritical().AsDuration(), orName(c.GetBreaker(), t.Name), t.Version)
	for _, in := range t.Instances {
		fmt.Fprintf(w, "  %-24s limit %5d  %-10s  in window %5d  rtt %7.1f ms  gradient %.2f\n", printable(in.Instance), in.Limit, in.Regime, in.InWindow, in.RttMs, in.Gradient)
	}
}

func orName(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func ratelimitCmd(g *globals) *cobra.Command {
	var rate, fallback float64
	var per time.Duration
	var burst int32
	var reason string
	return group("ratelimit", "Fleet-wide rate limits: shares leased to SDK instances (docs/admission.md)",
		unary[*pb.RateLimitStatus]{Use: "set NAME --rate N --burst N [--per 1s]", Short: "Create or change a rate limit", Args: cobra.ExactArgs(1),
			Flags: func(f *pflag.FlagSet) {
				f.Float64Var(&rate, "rate", 0, "calls per --per (required)")
				f.DurationVar(&per, "per", time.Second, "the rate's period")
				f.Int32Var(&burst, "burst", 0, "largest burst (required, at least 1)")
				f.Float64Var(&fallback, "fallback-rate", 0, "per instance once its lease ended unrenewed (0: its equal share)")
				f.StringVar(&reason, "reason", "", "why (audited)")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.RateLimitStatus, error) {
				return pb.NewAdmissionServiceClient(conn).PutRateLimit(ctx, &pb.PutRateLimitRequest{Name: args[0], Rate: rate, Per: durationpb.New(per),
					Burst: burst, FallbackRate: fallback, Reason: reason})
			}, Text: printRateLimit}.command(g),
		unary[*pb.RateLimitStatus]{Use: "get NAME", Short: "Show a rate limit and each instance's share", Args: cobra.ExactArgs(1),
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.RateLimitStatus, error) {
				return pb.NewAdmissionServiceClient(conn).GetRateLimit(ctx, &pb.GetRateLimitRequest{Name: args[0]})
			}, Text: printRateLimit}.command(g),
		unary[*pb.ListRateLimitsResponse]{Use: "list", Short: "List the rate limits", Args: cobra.NoArgs,
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.ListRateLimitsResponse, error) {
				return pb.NewAdmissionServiceClient(conn).ListRateLimits(ctx, &pb.ListRateLimitsRequest{})
			}, Text: func(w io.Writer, r *pb.ListRateLimitsResponse) {
				for _, s := range r.RateLimits {
					printRateLimit(w, s)
				}
			}}.command(g),
		deleteAdmission(g, "the rate limit", func(c pb.AdmissionServiceClient) func(context.Context, *pb.DeleteAdmissionRequest, ...grpc.CallOption) (*pb.DeleteAdmissionResponse, error) {
			return c.DeleteRateLimit
		}),
	)
}

// deleteAdmission is the delete row of the three groups.
func deleteAdmission(g *globals, what string, method func(pb.AdmissionServiceClient) func(context.Context, *pb.DeleteAdmissionRequest, ...grpc.CallOption) (*pb.DeleteAdmissionResponse, error)) *cobra.Command {
	var reason string
	return unary[*pb.DeleteAdmissionResponse]{Use: "delete NAME", Short: "Remove " + what, Args: cobra.ExactArgs(1),
		Flags: func(f *pflag.FlagSet) { f.StringVar(&reason, "reason", "", "why (audited)") },
		Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.DeleteAdmissionResponse, error) {
			return method(pb.NewAdmissionServiceClient(conn))(ctx, &pb.DeleteAdmissionRequest{Name: args[0], Reason: reason})
		}, Text: func(w io.Writer, r *pb.DeleteAdmissionResponse) {
			fmt.Fprintf(w, "removed (section version %d)\n", r.Version)
		}}.command(g)
}

func bulkheadCmd(g *globals) *cobra.Command {
	var maxConcurrent int32
	var maxWait time.Duration
	var reason string
	return group("bulkhead", "Bulkheads: per-instance compartments configured for the fleet (docs/admission.md)",
		unary[*pb.BulkheadStatus]{Use: "set NAME --max-concurrent N [--max-wait D]", Short: "Create or resize a bulkhead", Args: cobra.ExactArgs(1),
			Flags: func(f *pflag.FlagSet) {
				f.Int32Var(&maxConcurrent, "max-concurrent", 0, "calls at once in each instance (required)")
				f.DurationVar(&maxWait, "max-wait", 0, "how long a call waits for a permit (0: rejected at once)")
				f.StringVar(&reason, "reason", "", "why (audited)")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.BulkheadStatus, error) {
				return pb.NewAdmissionServiceClient(conn).PutBulkhead(ctx, &pb.PutBulkheadRequest{Name: args[0], MaxConcurrent: maxConcurrent,
					MaxWait: durationpb.New(maxWait), Reason: reason})
			}, Text: printBulkhead}.command(g),
		unary[*pb.BulkheadStatus]{Use: "get NAME", Short: "Show a bulkhead across the fleet", Args: cobra.ExactArgs(1),
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.BulkheadStatus, error) {
				return pb.NewAdmissionServiceClient(conn).GetBulkhead(ctx, &pb.GetBulkheadRequest{Name: args[0]})
			}, Text: printBulkhead}.command(g),
		unary[*pb.ListBulkheadsResponse]{Use: "list", Short: "List the bulkheads and their utilization", Args: cobra.NoArgs,
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.ListBulkheadsResponse, error) {
				return pb.NewAdmissionServiceClient(conn).ListBulkheads(ctx, &pb.ListBulkheadsRequest{})
			}, Text: func(w io.Writer, r *pb.ListBulkheadsResponse) {
				for _, b := range r.Bulkheads {
					printBulkhead(w, b)
				}
			}}.command(g),
		deleteAdmission(g, "the bulkhead", func(c pb.AdmissionServiceClient) func(context.Context, *pb.DeleteAdmissionRequest, ...grpc.CallOption) (*pb.DeleteAdmissionResponse, error) {
			return c.DeleteBulkhead
		}),
	)
}

func throttleCmd(g *globals) *cobra.Command {
	var initial, minL, maxL int32
	var window, warn, crit time.Duration
	var breaker, reason string
	return group("throttle", "Adaptive throttles (Baldur §12) configured for the fleet (docs/admission.md)",
		unary[*pb.ThrottleStatus]{Use: "set NAME [--min-limit N --max-limit N --initial-limit N --window D --sla-warning D --sla-critical D --breaker B]",
			Short: "Create or change a throttle (what is left out takes Baldur's defaults)", Args: cobra.ExactArgs(1),
			Flags: func(f *pflag.FlagSet) {
				f.Int32Var(&initial, "initial-limit", 0, "starting limit (default 100)")
				f.Int32Var(&minL, "min-limit", 0, "floor (default 10)")
				f.Int32Var(&maxL, "max-limit", 0, "ceiling (default 500)")
				f.DurationVar(&window, "window", 0, "admission window (default 60s)")
				f.DurationVar(&warn, "sla-warning", 0, "round trip that eases the limit down (default 200ms)")
				f.DurationVar(&crit, "sla-critical", 0, "round trip that cuts it by 30% (default 500ms)")
				f.StringVar(&breaker, "breaker", "", "coupled breaker (default: the throttle's name)")
				f.StringVar(&reason, "reason", "", "why (audited)")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, c *cobra.Command, args []string) (*pb.ThrottleStatus, error) {
				cfg := &pb.ThrottleConfig{InitialLimit: initial, MinLimit: minL, MaxLimit: maxL, Breaker: breaker}
				for name, d := range map[string]struct {
					v   time.Duration
					dst **durationpb.Duration
				}{"window": {window, &cfg.Window}, "sla-warning": {warn, &cfg.SlaWarning}, "sla-critical": {crit, &cfg.SlaCritical}} {
					if c.Flags().Changed(name) {
						*d.dst = durationpb.New(d.v)
					}
				}
				return pb.NewAdmissionServiceClient(conn).PutThrottle(ctx, &pb.PutThrottleRequest{Name: args[0], Config: cfg, Reason: reason})
			}, Text: printThrottle}.command(g),
		unary[*pb.GetThrottleStatusResponse]{Use: "status", Short: "Each throttle's configuration and each instance's limit and regime", Args: cobra.NoArgs,
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.GetThrottleStatusResponse, error) {
				return pb.NewAdmissionServiceClient(conn).GetThrottleStatus(ctx, &pb.GetThrottleStatusRequest{})
			}, Text: func(w io.Writer, r *pb.GetThrottleStatusResponse) {
				for _, t := range r.Throttles {
					printThrottle(w, t)
				}
			}}.command(g),
		deleteAdmission(g, "the throttle", func(c pb.AdmissionServiceClient) func(context.Context, *pb.DeleteAdmissionRequest, ...grpc.CallOption) (*pb.DeleteAdmissionResponse, error) {
			return c.DeleteThrottle
		}),
	)
}
