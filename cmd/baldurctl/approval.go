package main

import (
	"context"
	"io"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
)

func printApproval(w io.Writer, a *pb.Approval) {
	table(w, []string{"ID", "OPERATION", "STATE", "REQUESTED BY", "EXPIRES", "DECIDED BY", "RESULT"},
		[][]string{{a.Id, a.Operation, a.State, a.RequestedBy, fmtTime(a.ExpiresAt), dash(a.DecidedBy), dash(a.Result)}})
	if a.Summary != "" {
		io.WriteString(w, "what:  "+printable(a.Summary)+"\n")
	}
}

func approvalCmd(g *globals) *cobra.Command {
	var state, reason string
	decide := func(use, short string, approve bool) *cobra.Command {
		return unary[*pb.Approval]{Use: use + " ID", Short: short, Args: cobra.ExactArgs(1),
			Flags: func(f *pflag.FlagSet) { f.StringVar(&reason, "reason", "", "why (audited)") },
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.Approval, error) {
				c := pb.NewApprovalServiceClient(conn)
				if approve {
					return c.ApproveApproval(ctx, &pb.DecideApprovalRequest{Id: args[0], Reason: reason})
				}
				return c.RejectApproval(ctx, &pb.DecideApprovalRequest{Id: args[0], Reason: reason})
			},
			Text: printApproval,
		}.command(g)
	}
	return group("approval", "Dual control: change requests waiting for a second person",
		unary[*pb.ListApprovalsResponse]{Use: "list", Short: "Change requests (PENDING ones with --state PENDING)", Args: cobra.NoArgs,
			Flags: func(f *pflag.FlagSet) {
				f.StringVar(&state, "state", "", "PENDING, APPROVED, EXECUTED, FAILED, REJECTED or EXPIRED")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.ListApprovalsResponse, error) {
				return pb.NewApprovalServiceClient(conn).ListApprovals(ctx, &pb.ListApprovalsRequest{State: state})
			},
			Text: func(w io.Writer, resp *pb.ListApprovalsResponse) {
				rows := [][]string{}
				for _, a := range resp.Approvals {
					rows = append(rows, []string{a.Id, a.Operation, a.State, a.RequestedBy, fmtTime(a.ExpiresAt), a.Summary})
				}
				table(w, []string{"ID", "OPERATION", "STATE", "REQUESTED BY", "EXPIRES", "WHAT"}, rows)
			},
		}.command(g),
		decide("approve", "Approve a change request: the leader carries it out as its requester", true),
		decide("reject", "Reject a change request", false),
	)
}
