package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// unary is one command that sends one request and prints the reply: as
// JSON with -o json, for people otherwise. Every request/reply command is
// a unary value in its group's table; only streaming commands (watch,
// snapshot, batch replay) are written out by hand.
type unary[Resp proto.Message] struct {
	Use, Short string
	Args       cobra.PositionalArgs
	ValidArgs  []string
	// Flags binds the command's flags (to variables Call reads).
	Flags func(f *pflag.FlagSet)
	// Call checks args and flags, builds the request and sends it on conn.
	Call func(ctx context.Context, conn *grpc.ClientConn, c *cobra.Command, args []string) (Resp, error)
	// Text prints the reply for people; nil prints JSON either way.
	Text func(w io.Writer, resp Resp)
	// Check turns a reply into the command's exit status (after printing).
	Check func(resp Resp) error
}

func (u unary[Resp]) command(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: u.Use, Short: u.Short, Args: u.Args, ValidArgs: u.ValidArgs,
		RunE: func(c *cobra.Command, args []string) error {
			conn, err := g.dial()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx(c.Context())
			defer cancel()
			resp, err := u.Call(ctx, conn, c, args)
			if err != nil {
				return err
			}
			if g.output == "json" || u.Text == nil {
				if err := printJSON(c.OutOrStdout(), resp); err != nil {
					return err
				}
			} else {
				u.Text(c.OutOrStdout(), resp)
			}
			if u.Check != nil {
				return u.Check(resp)
			}
			return nil
		}}
	if u.Flags != nil {
		u.Flags(cmd.Flags())
	}
	return cmd
}

// group is a command group built from its subcommands.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short}
	cmd.AddCommand(subs...)
	return cmd
}
