package server_test

import (
	"testing"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	pb "github.com/baldurhq/baldurd/api/gen/baldur/v1"
	"github.com/baldurhq/baldurd/internal/testcluster"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// FuzzInternalApply drives the proposal path with arbitrary commands, as a
// peer (or anyone who reached the internal service) could send them: the
// node must refuse what it cannot apply before it reaches the log, never
// panic, and keep answering reads of every domain.
func FuzzInternalApply(f *testing.F) {
	for _, c := range []*raftv1.Command{
		{},
		{Version: 1},
		{Version: 7, Body: &raftv1.Command_AuditNote{AuditNote: &raftv1.AuditNote{Action: "x"}}},
		{Version: 1, Reason: "r", Body: &raftv1.Command_EmergencyTrigger{EmergencyTrigger: &raftv1.EmergencyTrigger{Level: 2}}},
		{Version: 1, Body: &raftv1.Command_Dlq{Dlq: &raftv1.DLQCommand{Op: raftv1.DLQCommand_STORE, Id: "x", Domain: "d", FailureType: "f", EntryJson: []byte(`garbage,"revision":0}`)}}},
		{Version: 1, Body: &raftv1.Command_Circuit{Circuit: &raftv1.CircuitCommand{Op: raftv1.CircuitCommand_UPSERT, Name: "svc", PolicyJson: []byte(`{`)}}},
		{Version: 1, Body: &raftv1.Command_MemberUpsert{MemberUpsert: &raftv1.MemberUpsert{Id: "n9", GrpcAddr: "x"}}},
	} {
		b, _ := proto.Marshal(c)
		f.Add(b)
	}
	f.Add([]byte{0xff, 0xff})
	c := testcluster.New(f, 1)
	conn := dial(f, c.Leader().GRPCAddr)
	internal := raftv1.NewInternalClient(conn)
	emergency, circuits, dlq := pb.NewEmergencyServiceClient(conn), pb.NewCircuitServiceClient(conn), pb.NewDLQServiceClient(conn)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := internal.Apply(ctxT(t), &raftv1.ApplyRequest{Command: data})
		if code := status.Code(err); code == codes.Internal || code == codes.Unknown {
			t.Fatalf("apply answered %v", err)
		}
		if _, err := emergency.GetEmergency(ctxT(t), &pb.GetEmergencyRequest{}); err != nil {
			t.Fatalf("emergency read after %x: %v", data, err)
		}
		if _, err := circuits.ListCircuits(ctxT(t), &pb.ListCircuitsRequest{}); err != nil {
			t.Fatalf("circuit read: %v", err)
		}
		if _, err := dlq.ListEntries(ctxT(t), &pb.ListEntriesRequest{}); err != nil {
			t.Fatalf("dlq read: %v", err)
		}
	})
}
