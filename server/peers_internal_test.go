package server

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"log/slog"
	"testing"
	"time"

	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
)

func TestInternalServiceAdmitsPeersOnly(t *testing.T) {
	members := map[string]memberRecord{
		"n1": {ID: "n1", GRPCAddr: "10.0.0.1:7400", RaftAddr: "10.0.0.1:7402"},
		"n2": {ID: "n2", GRPCAddr: "[fd00::2]:7400", RaftAddr: "[fd00::2]:7402"},
	}
	cases := []struct {
		caller   string
		loopback bool
		ok       bool
	}{
		{"127.0.0.1:50000", true, true},   // a dev or test cluster on one machine
		{"[::1]:50000", true, true},       //
		{"127.0.0.1:50000", false, false}, // a node on a real address admits no local process
		{"10.0.0.1:41000", false, true},   // a member's address
		{"[fd00::2]:41000", false, true},  //
		{"[::ffff:10.0.0.1]:41000", false, true},
		{"10.0.0.9:41000", false, false}, // anyone else, whatever token it holds
		{"not-an-address", false, false},
	}
	for _, tc := range cases {
		err := peerAdmitted(tc.caller, tc.loopback, members)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, errNotPeer)) {
			t.Errorf("caller %s (node on loopback: %v): %v, want admitted=%v", tc.caller, tc.loopback, err, tc.ok)
		}
	}
}

func TestOnlyFollowerWritesMayBeForwarded(t *testing.T) {
	ok := []*raftv1.Command{
		{Body: &raftv1.Command_MemberUpsert{MemberUpsert: &raftv1.MemberUpsert{Id: "n1"}}},
		{Body: &raftv1.Command_EmergencyTrigger{EmergencyTrigger: &raftv1.EmergencyTrigger{Level: 1}}},
		{Body: &raftv1.Command_Circuit{Circuit: &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_KILL_SWITCH}}},
	}
	refused := []*raftv1.Command{
		{},
		{Body: &raftv1.Command_Dlq{Dlq: &raftv1.DLQCommand{Op: raftv1.DLQCommand_STORE}}},
		{Body: &raftv1.Command_Coordination{Coordination: &raftv1.CoordinationCommand{Op: raftv1.CoordinationCommand_ACQUIRE}}},
		{Body: &raftv1.Command_Circuit{Circuit: &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_TRIP}}},
		{Body: &raftv1.Command_EmergencyExpire{EmergencyExpire: &raftv1.EmergencyExpire{}}},
	}
	for _, c := range ok {
		if err := forwardable(c); err != nil {
			t.Errorf("%T refused: %v", c.Body, err)
		}
	}
	for _, c := range refused {
		if err := forwardable(c); err == nil {
			t.Errorf("%T (%v) accepted", c.Body, c)
		}
	}
}

func TestCommandsTheFSMCannotApplyAreRefusedBeforeTheLog(t *testing.T) {
	good := &raftv1.Command{Actor: "a", Version: 1, Body: &raftv1.Command_AuditNote{AuditNote: &raftv1.AuditNote{Action: "x"}}}
	if err := validCommand(good); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*raftv1.Command{
		"no body":    {Actor: "a", Version: 1},
		"version 0":  {Actor: "a", Body: good.Body},
		"version 99": {Actor: "a", Version: 99, Body: good.Body},
		"no actor":   {Version: 1, Body: good.Body},
	} {
		if err := validCommand(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// A client certificate the peer CA also signed (a person's, a service's)
// is not a node certificate: it can neither pose as a peer nor add itself
// as a member; a node certificate may add its own node, and nothing else.
func TestOnlyNodeCertificatesJoin(t *testing.T) {
	client := &x509.Certificate{Subject: pkix.Name{CommonName: "n5"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	node := &x509.Certificate{Subject: pkix.Name{CommonName: "n5"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	if isNodeCert(client) || !isNodeCert(node) {
		t.Fatalf("client cert is a node cert: %v; node cert is: %v", isNodeCert(client), isNodeCert(node))
	}
	const removeMember = "/baldur.v1.ClusterService/RemoveMember"
	// Denials were audited a moment ago: this bare Server has no Raft.
	s := &Server{log: slog.New(slog.DiscardHandler)}
	s.denials.seen = map[string]time.Time{"n5 " + methodAddMember: time.Now(), "n5 " + removeMember: time.Now()}
	viewer := identity{Name: "n5", Role: pb.Role_VIEWER, JoinAs: "n5"}
	if err := s.authorize(context.Background(), methodAddMember, &pb.AddMemberRequest{Id: "n5"}, viewer); err != nil {
		t.Fatalf("a node certificate adding its own node: %v", err)
	}
	for _, req := range []*pb.AddMemberRequest{{Id: "n6"}, {Id: ""}} {
		if err := s.authorize(context.Background(), methodAddMember, req, viewer); !errors.Is(err, errPermissionDenied) {
			t.Fatalf("node certificate n5 adding %q: %v", req.Id, err)
		}
	}
	if err := s.authorize(context.Background(), removeMember, &pb.RemoveMemberRequest{Id: "n5"}, viewer); !errors.Is(err, errPermissionDenied) {
		t.Fatalf("node certificate removing a member: %v", err)
	}
}
