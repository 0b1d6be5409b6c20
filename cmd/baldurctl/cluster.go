package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func clusters(conn *grpc.ClientConn) pb.ClusterServiceClient { return pb.NewClusterServiceClient(conn) }

func printMembers(w io.Writer, cl *pb.Cluster) {
	var rows [][]string
	for _, m := range cl.Members {
		suffrage := m.Suffrage.String()
		if m.Suffrage == pb.Member_STAGING && m.TrailingEntries > 0 {
			suffrage += fmt.Sprintf(" (%d behind)", m.TrailingEntries)
		}
		rows = append(rows, []string{m.Id, m.State.String(), suffrage, m.RaftAddr, dash(m.GrpcAddr), dash(m.HttpAddr)})
	}
	table(w, []string{"ID", "STATE", "SUFFRAGE", "RAFT", "GRPC", "HTTP"}, rows)
}

func clusterCmd(g *globals) *cobra.Command {
	var stale, nonvoter, missingOK bool
	var reason string
	reasonFlag := func(f *pflag.FlagSet) { f.StringVar(&reason, "reason", "", "why (required, audited)") }
	view := func(use, short string, text func(io.Writer, *pb.Cluster)) *cobra.Command {
		return unary[*pb.Cluster]{Use: use, Short: short, Args: cobra.NoArgs,
			Flags: func(f *pflag.FlagSet) {
				f.BoolVar(&stale, "stale", false, "answer from the contacted node without asking the leader")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, _ []string) (*pb.Cluster, error) {
				req := &pb.GetClusterRequest{}
				if stale {
					req.Consistency = "stale"
				}
				return clusters(conn).GetCluster(ctx, req)
			},
			Text: text}.command(g)
	}
	streaming := func(use, short string, run func(c *cobra.Command, cl pb.ClusterServiceClient, path string) error) *cobra.Command {
		return &cobra.Command{Use: use, Short: short, Args: cobra.ExactArgs(1),
			RunE: func(c *cobra.Command, args []string) error {
				conn, err := g.dial()
				if err != nil {
					return err
				}
				return run(c, clusters(conn), args[0])
			}}
	}
	return group("cluster", "Membership, leadership and snapshots",
		view("status", "Leader, term, applied index and members", func(w io.Writer, cl *pb.Cluster) {
			fmt.Fprintf(w, "leader: %s  term: %d  applied index: %d  (answered by %s)\n\n", dash(cl.LeaderId), cl.Term, cl.AppliedIndex, cl.NodeId)
			printMembers(w, cl)
		}),
		view("members", "List members", printMembers),
		unary[*pb.Cluster]{Use: "add-member ID RAFT_ADDR --reason R", Short: "Add a node (a non-voter, promoted to voter once caught up)", Args: cobra.ExactArgs(2),
			Flags: func(f *pflag.FlagSet) {
				f.BoolVar(&nonvoter, "nonvoter", false, "keep it a non-voter (a read replica)")
				reasonFlag(f)
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.Cluster, error) {
				return clusters(conn).AddMember(ctx, &pb.AddMemberRequest{Id: args[0], RaftAddr: args[1], Nonvoter: nonvoter, Reason: reason})
			},
			Text: printMembers}.command(g),
		unary[*pb.Cluster]{Use: "remove-member ID... --reason R [--missing-ok]", Short: "Remove nodes from the Raft configuration, one at a time", Args: cobra.MinimumNArgs(1),
			Flags: func(f *pflag.FlagSet) {
				reasonFlag(f)
				f.BoolVar(&missingOK, "missing-ok", false, "skip ids that are not members (a scale-down hook)")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.Cluster, error) {
				var last *pb.Cluster
				for _, id := range args {
					cl, err := clusters(conn).RemoveMember(ctx, &pb.RemoveMemberRequest{Id: id, Reason: reason})
					if err != nil && !(missingOK && status.Code(err) == codes.NotFound) {
						return nil, fmt.Errorf("remove %s: %w", id, err)
					}
					if cl != nil {
						last = cl
					}
				}
				if last == nil {
					return clusters(conn).GetCluster(ctx, &pb.GetClusterRequest{})
				}
				return last, nil
			},
			Text: printMembers}.command(g),
		unary[*pb.TransferLeadershipResponse]{Use: "transfer-leader [ID] --reason R", Short: "Hand leadership to another voter (the named one, or the most up to date)", Args: cobra.MaximumNArgs(1),
			Flags: reasonFlag,
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.TransferLeadershipResponse, error) {
				req := &pb.TransferLeadershipRequest{Reason: reason}
				if len(args) == 1 {
					req.Id = args[0]
				}
				return clusters(conn).TransferLeadership(ctx, req)
			},
			Text: func(w io.Writer, resp *pb.TransferLeadershipResponse) {
				fmt.Fprintf(w, "leader is now %s\n", resp.LeaderId)
			}}.command(g),
		group("snapshot", "Save or restore the replicated state",
			streaming("save FILE", "Write a snapshot of the cluster state to FILE", func(c *cobra.Command, cl pb.ClusterServiceClient, path string) error {
				return saveSnapshot(c, g, cl, path)
			}),
			streaming("restore FILE", "Replace the whole cluster state with the snapshot in FILE", func(c *cobra.Command, cl pb.ClusterServiceClient, path string) error {
				return restoreSnapshot(c, g, cl, path)
			})),
	)
}

func saveSnapshot(c *cobra.Command, g *globals, cl pb.ClusterServiceClient, path string) error {
	ctx, cancel := g.ctx(c.Context())
	defer cancel()
	stream, err := cl.SaveSnapshot(ctx, &pb.SaveSnapshotRequest{})
	if err != nil {
		return err
	}
	hdr, err := stream.Header()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".baldur-snapshot-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	p := &progress{w: c.ErrOrStderr(), label: "saving snapshot", silent: g.output == "json"}
	if v := hdr.Get("baldur-snapshot-size"); len(v) > 0 {
		p.total, _ = strconv.ParseInt(v[0], 10, 64)
	}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			tmp.Close()
			return err
		}
		if _, err := tmp.Write(chunk.Data); err != nil {
			tmp.Close()
			return fmt.Errorf("write %s: %w", tmp.Name(), err)
		}
		p.add(len(chunk.Data))
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	p.finish()
	if g.output == "json" {
		return printJSON(c.OutOrStdout(), &pb.RestoreSnapshotResponse{Size: uint64(p.done)})
	}
	fmt.Fprintf(c.OutOrStdout(), "saved %s (%s)\n", path, bytesIEC(p.done))
	return nil
}

func restoreSnapshot(c *cobra.Command, g *globals, cl pb.ClusterServiceClient, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	ctx, cancel := g.ctx(c.Context())
	defer cancel()
	stream, err := cl.RestoreSnapshot(ctx)
	if err != nil {
		return err
	}
	p := &progress{w: c.ErrOrStderr(), label: "uploading snapshot", total: fi.Size(), silent: g.output == "json"}
	buf := make([]byte, 64<<10)
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			if err := stream.Send(&pb.RestoreSnapshotRequest{Data: append([]byte(nil), buf[:n]...)}); err != nil {
				break // the server ended the stream; CloseAndRecv says why
			}
			p.add(n)
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		if !p.silent {
			fmt.Fprintln(c.ErrOrStderr())
		}
		return err
	}
	p.finish()
	if g.output == "json" {
		return printJSON(c.OutOrStdout(), resp)
	}
	fmt.Fprintf(c.OutOrStdout(), "restored snapshot (applied index %d, %s, sha256 %s)\n", resp.AppliedIndex, bytesIEC(int64(resp.Size)), resp.Sha256)
	return nil
}
