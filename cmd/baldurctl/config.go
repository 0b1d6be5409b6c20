package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// configSections are the runtime configuration's sections (completion).
var configSections = []string{"circuit_defaults", "dlq", "emergency", "flags", "retry_defaults"}

func configs(conn *grpc.ClientConn) pb.ConfigServiceClient { return pb.NewConfigServiceClient(conn) }

// readValues reads a JSON object given inline, as @FILE, or as - (stdin).
func readValues(c *cobra.Command, arg string) (*structpb.Struct, error) {
	var b []byte
	var err error
	switch {
	case arg == "-":
		b, err = io.ReadAll(c.InOrStdin())
	case strings.HasPrefix(arg, "@"):
		b, err = os.ReadFile(arg[1:])
	default:
		b = []byte(arg)
	}
	if err != nil {
		return nil, err
	}
	out := &structpb.Struct{}
	if err := protojson.Unmarshal(b, out); err != nil {
		return nil, fmt.Errorf("VALUES must be a JSON object (inline, @FILE or - for stdin): %v", err)
	}
	return out, nil
}

func printSection(w io.Writer, s *pb.ConfigSection) {
	fmt.Fprintf(w, "section:   %s\nversion:   %d\n", s.Section, s.Version)
	if s.Version == 0 {
		fmt.Fprintln(w, "set:       never (the startup values)")
	} else {
		fmt.Fprintf(w, "set:       by %s at %s (revision %d)\n", printable(dash(s.UpdatedBy)), fmtTime(s.UpdatedAt), s.Revision)
		if s.Reason != "" {
			fmt.Fprintf(w, "reason:    %s\n", printable(s.Reason))
		}
	}
	b, _ := json.MarshalIndent(s.Values.AsMap(), "", "  ")
	fmt.Fprintf(w, "values:\n%s\n", b)
}

// flatten turns a JSON document into dotted paths → compact values.
func flatten(prefix string, v any, out map[string]string) {
	if m, ok := v.(map[string]any); ok && len(m) > 0 {
		for k, x := range m {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			flatten(p, x, out)
		}
		return
	}
	b, _ := json.Marshal(v)
	out[prefix] = string(b)
}

// diffValues prints what changes from a to b, one path a line: "~ path:
// old → new", "+ path: new", "- path: old". It reports whether anything
// differs.
func diffValues(w io.Writer, a, b *structpb.Struct) bool {
	fa, fb := map[string]string{}, map[string]string{}
	if a != nil {
		flatten("", a.AsMap(), fa)
	}
	if b != nil {
		flatten("", b.AsMap(), fb)
	}
	var paths []string
	for p := range fa {
		paths = append(paths, p)
	}
	for p := range fb {
		if _, ok := fa[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	changed := false
	for _, p := range paths {
		x, inA := fa[p]
		y, inB := fb[p]
		switch {
		case inA && inB && x != y:
			fmt.Fprintf(w, "~ %s: %s → %s\n", printable(p), printable(x), printable(y))
		case !inA:
			fmt.Fprintf(w, "+ %s: %s\n", printable(p), printable(y))
		case !inB:
			fmt.Fprintf(w, "- %s: %s\n", printable(p), printable(x))
		default:
			continue
		}
		changed = true
	}
	return changed
}

// valuesAt finds a section's values at version v in its history (version
// 0 is the first change's before).
func valuesAt(ctx context.Context, cl pb.ConfigServiceClient, section string, v uint64) (*structpb.Struct, error) {
	token := ""
	if v > 0 {
		token = strconv.FormatUint(v+1, 10)
	}
	if v == 0 {
		token = "2"
	}
	resp, err := cl.ListConfigHistory(ctx, &pb.ListConfigHistoryRequest{Section: section, PageSize: 1, PageToken: token})
	if err != nil {
		return nil, err
	}
	if len(resp.Changes) == 0 || (v > 0 && resp.Changes[0].Version != v) || (v == 0 && resp.Changes[0].Version != 1) {
		return nil, fmt.Errorf("version %d of section %s is not in its history (the newest 100 changes are kept)", v, section)
	}
	if v == 0 {
		return resp.Changes[0].Before, nil
	}
	return resp.Changes[0].After, nil
}

func configCmd(g *globals) *cobra.Command {
	var reason, values string
	var expected int64
	var force, stale bool
	var limit int32
	var from, to int64
	return group("config", "Runtime configuration: versioned sections replicated to every node and SDK",
		unary[*pb.ListConfigResponse]{Use: "get [SECTION]", Short: "Show one section, or every section", Args: cobra.MaximumNArgs(1), ValidArgs: configSections,
			Flags: func(f *pflag.FlagSet) {
				f.BoolVar(&stale, "stale", false, "answer from the contacted node without asking the leader")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.ListConfigResponse, error) {
				consistency := ""
				if stale {
					consistency = "stale"
				}
				if len(args) == 0 {
					return configs(conn).ListConfig(ctx, &pb.ListConfigRequest{Consistency: consistency})
				}
				s, err := configs(conn).GetConfig(ctx, &pb.GetConfigRequest{Section: args[0], Consistency: consistency})
				if err != nil {
					return nil, err
				}
				return &pb.ListConfigResponse{Sections: []*pb.ConfigSection{s}}, nil
			},
			Text: func(w io.Writer, resp *pb.ListConfigResponse) {
				for i, s := range resp.Sections {
					if i > 0 {
						fmt.Fprintln(w)
					}
					printSection(w, s)
				}
			},
		}.command(g),
		unary[*pb.ConfigSection]{Use: "set SECTION VALUES|@FILE|- (--expected-version N | --force)", Short: "Replace a section's values (fields left out take the startup values)", Args: cobra.ExactArgs(2), ValidArgs: configSections,
			Flags: func(f *pflag.FlagSet) {
				f.Int64Var(&expected, "expected-version", -1, "the version the change was made against (config get shows it; 0 for a section never set)")
				f.BoolVar(&force, "force", false, "apply over whatever version the section has")
				f.StringVar(&reason, "reason", "", "why (kept in the history and the audit trail; required for emergency)")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, c *cobra.Command, args []string) (*pb.ConfigSection, error) {
				v, err := readValues(c, args[1])
				if err != nil {
					return nil, err
				}
				req := &pb.UpdateConfigRequest{Section: args[0], Values: v, Force: force, Reason: reason}
				switch {
				case expected >= 0:
					req.ExpectedVersion = proto.Uint64(uint64(expected))
				case !force:
					return nil, errors.New("give --expected-version (the version `baldurctl config get` shows) or --force")
				}
				return configs(conn).UpdateConfig(ctx, req)
			},
			Text: printSection,
		}.command(g),
		unary[*pb.ListConfigHistoryResponse]{Use: "history SECTION", Short: "A section's changes, newest first, with what each changed", Args: cobra.ExactArgs(1), ValidArgs: configSections,
			Flags: func(f *pflag.FlagSet) {
				f.Int32Var(&limit, "limit", 20, "changes to show (at most 100)")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, _ *cobra.Command, args []string) (*pb.ListConfigHistoryResponse, error) {
				return configs(conn).ListConfigHistory(ctx, &pb.ListConfigHistoryRequest{Section: args[0], PageSize: limit})
			},
			Text: func(w io.Writer, resp *pb.ListConfigHistoryResponse) {
				if len(resp.Changes) == 0 {
					fmt.Fprintln(w, "no changes: the section has its startup values")
				}
				for _, ch := range resp.Changes {
					fmt.Fprintf(w, "version %d  %s  by %s", ch.Version, fmtTime(ch.Time), printable(dash(ch.Actor)))
					if ch.Reason != "" {
						fmt.Fprintf(w, "  (%s)", printable(ch.Reason))
					}
					fmt.Fprintln(w)
					if !diffValues(indent{w}, ch.Before, ch.After) {
						fmt.Fprintln(w, "    (no field changed)")
					}
				}
			},
		}.command(g),
		unary[*pb.ConfigSection]{Use: "diff SECTION [--from V] [--to V] | --values VALUES", Short: "What changed between two versions (default: the last change), or what VALUES would change", Args: cobra.ExactArgs(1), ValidArgs: configSections,
			Flags: func(f *pflag.FlagSet) {
				f.Int64Var(&from, "from", -1, "older version (default: the one before --to)")
				f.Int64Var(&to, "to", -1, "newer version (default: the current one)")
				f.StringVar(&values, "values", "", "compare the current values with these (inline JSON, @FILE or -): fields left out are not compared")
			},
			Call: func(ctx context.Context, conn *grpc.ClientConn, c *cobra.Command, args []string) (*pb.ConfigSection, error) {
				cl := configs(conn)
				cur, err := cl.GetConfig(ctx, &pb.GetConfigRequest{Section: args[0]})
				if err != nil {
					return nil, err
				}
				out := c.OutOrStdout()
				if values != "" {
					if from >= 0 || to >= 0 {
						return nil, errors.New("--values compares with the current values: leave out --from and --to")
					}
					v, err := readValues(c, values)
					if err != nil {
						return nil, err
					}
					// Compare only what VALUES gives (the rest takes the
					// startup values, which the server knows).
					given := &structpb.Struct{Fields: map[string]*structpb.Value{}}
					for k := range v.Fields {
						if old, ok := cur.Values.Fields[k]; ok {
							given.Fields[k] = old
						}
					}
					if !diffValues(out, given, v) {
						fmt.Fprintln(out, "no difference")
					}
					return cur, nil
				}
				hi := uint64(to)
				if to < 0 {
					hi = cur.Version
				}
				lo := uint64(from)
				if from < 0 {
					if hi == 0 {
						fmt.Fprintln(out, "no changes: the section has its startup values")
						return cur, nil
					}
					lo = hi - 1
				}
				if lo > hi || hi > cur.Version {
					return nil, fmt.Errorf("versions %d..%d: the section is at version %d", lo, hi, cur.Version)
				}
				a, err := valuesAt(ctx, cl, args[0], lo)
				if err != nil {
					return nil, err
				}
				b := cur.Values
				if hi != cur.Version {
					if b, err = valuesAt(ctx, cl, args[0], hi); err != nil {
						return nil, err
					}
				}
				fmt.Fprintf(out, "%s: version %d → %d\n", args[0], lo, hi)
				if !diffValues(out, a, b) {
					fmt.Fprintln(out, "no difference")
				}
				return cur, nil
			},
			Text: func(io.Writer, *pb.ConfigSection) {},
		}.command(g),
	)
}

// indent writes each line indented by four spaces.
type indent struct{ w io.Writer }

func (i indent) Write(p []byte) (int, error) {
	lines := strings.SplitAfter(string(p), "\n")
	for _, l := range lines {
		if l == "" {
			continue
		}
		if _, err := io.WriteString(i.w, "    "+l); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}
