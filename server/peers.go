package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/raftstore"
	"google.golang.org/grpc/peer"
)

// internalPrefix names the node-to-node service (Internal.Apply,
// Internal.ReadIndex): it is for the cluster's own nodes, never for API
// callers, whatever credential they hold.
const internalPrefix = "/baldur.raft.v1.Internal/"

var errNotPeer = errors.New("server: the internal service is for cluster peers only")

// checkPeer admits a call to the internal service only from another node
// of this cluster: over plaintext, a caller on loopback when this node
// listens on loopback (a dev or test cluster on one machine), or a caller
// at the address of a member in the member table.
func (s *Server) checkPeer(ctx context.Context) error {
	if s.tls.peerCA != nil {
		if s.peerIdentity(ctx) == "" {
			return fmt.Errorf("%w: present a node certificate from --peer-ca-file naming a member", errNotPeer)
		}
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return fmt.Errorf("%w: caller address unknown", errNotPeer)
	}
	var members map[string]memberRecord
	_ = s.store.View(func(kv raftstore.KV) error { members = listMembers(kv); return nil })
	return peerAdmitted(p.Addr.String(), isLoopback(s.grpcLn.Addr().String()), members)
}

// peerAdmitted is checkPeer's rule over plaintext: a loopback caller of a
// node that listens on loopback, or a caller at a member's address.
func peerAdmitted(callerAddr string, listensOnLoopback bool, members map[string]memberRecord) error {
	caller, err := hostIP(callerAddr)
	if err != nil {
		return fmt.Errorf("%w: caller address %s: %v", errNotPeer, callerAddr, err)
	}
	if caller.IsLoopback() && listensOnLoopback {
		return nil
	}
	for _, m := range members {
		for _, a := range []string{m.GRPCAddr, m.RaftAddr} {
			if ip, err := hostIP(a); err == nil && ip == caller {
				return nil
			}
		}
	}
	return fmt.Errorf("%w: %s is not a member's address", errNotPeer, caller)
}

func hostIP(addr string) (netip.Addr, error) {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		return netip.Addr{}, err
	}
	return ip.Unmap(), nil
}

// forwardable reports whether a follower may hand cmd to the leader through
// Internal.Apply: the commands a follower proposes with route anyNode (its
// member record, and writes of services whose call reached it while
// leadership moved). Everything else is proposed by the leader itself from
// a validated request, so a command built by hand cannot store unmasked DLQ
// data, forge a lease or a batch.
func forwardable(cmd *raftv1.Command) error {
	switch b := cmd.Body.(type) {
	case *raftv1.Command_MemberUpsert, *raftv1.Command_MemberRemove, *raftv1.Command_AuditNote,
		*raftv1.Command_EmergencyTrigger, *raftv1.Command_EmergencyRelease, *raftv1.Command_EmergencyConfig:
		return nil
	case *raftv1.Command_Circuit:
		switch b.Circuit.GetOp() {
		case raftv1.CircuitCommand_UPSERT, raftv1.CircuitCommand_FORCE, raftv1.CircuitCommand_RESET, raftv1.CircuitCommand_KILL_SWITCH:
			return nil
		}
		return invalidField("command", fmt.Sprintf("circuit op %v is proposed by the leader only", b.Circuit.GetOp()))
	case nil:
		return invalidField("command", "has no body")
	default:
		return invalidField("command", fmt.Sprintf("%T is proposed by the leader only", b))
	}
}

// validCommand refuses what the state machine could not apply: no body, a
// body without a handler, a version outside what this binary applies, no
// actor. Every command is checked before it is appended to the log.
func validCommand(cmd *raftv1.Command) error {
	if cmd.Body == nil {
		return invalidField("command", "has no body")
	}
	if _, ok := handlers[bodyTypeOf(cmd)]; !ok {
		return invalidField("command", fmt.Sprintf("body %T has no handler", cmd.Body))
	}
	if cmd.Version < 1 || cmd.Version > CommandVersion {
		return invalidField("command", fmt.Sprintf("version %d is outside 1..%d", cmd.Version, CommandVersion))
	}
	if cmd.Actor == "" {
		return invalidField("command", "has no actor")
	}
	for _, sub := range cmd.GetBatch().GetCommands() {
		if sub.GetBatch() != nil {
			return invalidField("command", "a batch holds commands, not batches")
		}
		if err := validCommand(sub); err != nil {
			return err
		}
	}
	return nil
}
