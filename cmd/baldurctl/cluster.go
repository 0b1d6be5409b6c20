package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
)

func clusterCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Membership, leadership and snapshots"}
	client := func() (pb.ClusterServiceClient, error) {
		conn, err := g.dial()
		if err != nil {
			return nil, err
		}
		return pb.NewClusterServiceClient(conn), nil
	}
	var stale bool
	printCluster := func(c *cobra.Command, cl *pb.Cluster, withHeader bool) error {
		if g.output == "json" {
			return printJSON(c.OutOrStdout(), cl)
		}
		if withHeader {
			fmt.Fprintf(c.OutOrStdout(), "leader: %s  term: %d  applied index: %d  (answered by %s)\n\n", dash(cl.LeaderId), cl.Term, cl.AppliedIndex, cl.NodeId)
		}
		var rows [][]string
		for _, m := range cl.Members {
			rows = append(rows, []string{m.Id, m.State.String(), m.Suffrage.String(), m.RaftAddr, dash(m.GrpcAddr), dash(m.HttpAddr)})
		}
		table(c.OutOrStdout(), []string{"ID", "STATE", "SUFFRAGE", "RAFT", "GRPC", "HTTP"}, rows)
		return nil
	}
	get := func(c *cobra.Command, withHeader bool) error {
		cl, err := client()
		if err != nil {
			return err
		}
		ctx, cancel := g.ctx(c.Context())
		defer cancel()
		req := &pb.GetClusterRequest{}
		if stale {
			req.Consistency = "stale"
		}
		resp, err := cl.GetCluster(ctx, req)
		if err != nil {
			return err
		}
		return printCluster(c, resp, withHeader)
	}
	status := &cobra.Command{Use: "status", Short: "Leader, term, applied index and members", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return get(c, true) }}
	members := &cobra.Command{Use: "members", Short: "List members", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return get(c, false) }}
	for _, sc := range []*cobra.Command{status, members} {
		sc.Flags().BoolVar(&stale, "stale", false, "answer from the contacted node without asking the leader")
	}

	var nonvoter bool
	add := &cobra.Command{Use: "add-member ID RAFT_ADDR", Short: "Add a node to the Raft configuration", Args: cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			resp, err := cl.AddMember(ctx, &pb.AddMemberRequest{Id: args[0], RaftAddr: args[1], Nonvoter: nonvoter})
			if err != nil {
				return err
			}
			return printCluster(c, resp, false)
		}}
	add.Flags().BoolVar(&nonvoter, "nonvoter", false, "add as a non-voting member")
	remove := &cobra.Command{Use: "remove-member ID", Short: "Remove a node from the Raft configuration", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			resp, err := cl.RemoveMember(ctx, &pb.RemoveMemberRequest{Id: args[0]})
			if err != nil {
				return err
			}
			return printCluster(c, resp, false)
		}}
	transfer := &cobra.Command{Use: "transfer-leader [ID]", Short: "Hand leadership to another voter (the named one, or the most up to date)", Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			req := &pb.TransferLeadershipRequest{}
			if len(args) == 1 {
				req.Id = args[0]
			}
			resp, err := cl.TransferLeadership(ctx, req)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return printJSON(c.OutOrStdout(), resp)
			}
			fmt.Fprintf(c.OutOrStdout(), "leader is now %s\n", resp.LeaderId)
			return nil
		}}
	snap := &cobra.Command{Use: "snapshot", Short: "Save or restore the replicated state"}
	save := &cobra.Command{Use: "save FILE", Short: "Write a snapshot of the cluster state to FILE", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			return saveSnapshot(c, g, cl, args[0])
		}}
	restore := &cobra.Command{Use: "restore FILE", Short: "Replace the whole cluster state with the snapshot in FILE", Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := client()
			if err != nil {
				return err
			}
			return restoreSnapshot(c, g, cl, args[0])
		}}
	snap.AddCommand(save, restore)
	cmd.AddCommand(status, members, add, remove, transfer, snap)
	return cmd
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
