package server

import (
	"reflect"
	"strings"
	"testing"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
)

// TestEveryCommandBodyHasAHandler keeps the dispatch table complete: a body
// added to the Command envelope without a handler fails here instead of
// panicking on apply.
func TestEveryCommandBodyHasAHandler(t *testing.T) {
	cmd := &raftv1.Command{}
	m := cmd.ProtoReflect()
	body := m.Descriptor().Oneofs().ByName("body")
	if body == nil || body.Fields().Len() == 0 {
		t.Fatal("Command has no body oneof")
	}
	seen := map[reflect.Type]bool{}
	for i := 0; i < body.Fields().Len(); i++ {
		fd := body.Fields().Get(i)
		m.Set(fd, m.NewField(fd))
		typ := reflect.TypeOf(cmd.Body)
		if _, ok := handlers[typ]; !ok {
			t.Errorf("command body %s (%v) has no handler", fd.Name(), typ)
		}
		seen[typ] = true
	}
	for typ := range handlers {
		if !seen[typ] {
			t.Errorf("handler for %v, which is not a Command body", typ)
		}
	}
}

// TestLeaderOnlyMethodsAreDeclaredInTheAPI reads the leader-only methods
// from the (baldur.v1.rpc) option in api/proto: every write is there, and
// no read (a read served by the leader only would lose follower reads).
func TestLeaderOnlyMethodsAreDeclaredInTheAPI(t *testing.T) {
	want := []string{
		"EmergencyService/TriggerEmergency", "EmergencyService/ReleaseEmergency", "EmergencyService/UpdateEmergencyConfig",
		"ClusterService/AddMember", "ClusterService/RemoveMember", "ClusterService/TransferLeadership",
		"CircuitService/SetPolicy", "CircuitService/ForceOpen", "CircuitService/ForceClose", "CircuitService/Reset",
		"CircuitService/SetKillSwitch", "CircuitService/AcquireProbe", "CircuitService/DeleteCircuit",
		"CoordinationService/AcquireLease", "CoordinationService/KeepAliveLease", "CoordinationService/RevokeLease",
		"CoordinationService/Campaign", "CoordinationService/Resign", "CoordinationService/DeclareJob",
		"CoordinationService/SetJobEnabled", "CoordinationService/StartJobRun", "CoordinationService/FinishJobRun",
		"DLQService/StoreEntry", "DLQService/ReplayEntry", "DLQService/ResolveEntry", "DLQService/RedriveEntry",
		"DLQService/Purge", "DLQService/AcquireReplay", "DLQService/CompleteReplay",
		"ConfigService/UpdateConfig",
		"CanaryService/CreateRollout", "CanaryService/StartRollout", "CanaryService/PromoteRollout", "CanaryService/PauseRollout",
		"CanaryService/ResumeRollout", "CanaryService/RollbackRollout", "CanaryService/CancelRollout", "CanaryService/PanicRollback",
		"SystemService/DisableSystem", "SystemService/EnableSystem", "SystemService/SetDryRun", "SystemService/SetLive",
		"SystemService/SetStrict", "SystemService/SetNormal", "SystemService/BreakGlass", "SystemService/EndBreakGlass",
		"ApprovalService/ApproveApproval", "ApprovalService/RejectApproval",
		"NotifyService/PutChannel", "NotifyService/DeleteChannel",
		"IdempotencyService/AcquireIdempotency", "IdempotencyService/CompleteIdempotency", "IdempotencyService/FailIdempotency",
		"AdmissionService/SyncAdmission", "AdmissionService/PutRateLimit", "AdmissionService/PutBulkhead", "AdmissionService/PutThrottle",
		// reads of the leader's soft state (shares, instances' reports)
		"AdmissionService/GetRateLimit", "AdmissionService/ListRateLimits", "AdmissionService/GetBulkhead",
		"AdmissionService/ListBulkheads", "AdmissionService/GetThrottleStatus",
		// streaming, relayed by forwardStream
		"ClusterService/RestoreSnapshot", "DLQService/ReplayBatch",
	}
	for _, m := range want {
		if !leaderOnly["/baldur.v1."+m] {
			t.Errorf("%s is not declared leader_only", m)
		}
	}
	if len(leaderOnly) != len(want) {
		t.Errorf("%d leader-only methods, want %d: %v", len(leaderOnly), len(want), leaderOnly)
	}
	for m := range leaderOnly {
		name := m[strings.LastIndex(m, "/")+1:]
		if strings.HasPrefix(m, "/baldur.v1.AdmissionService/") {
			continue // its reads show the leader's soft state
		}
		if strings.HasPrefix(name, "Get") || strings.HasPrefix(name, "List") || strings.HasPrefix(name, "Watch") {
			t.Errorf("read %s is declared leader_only", m)
		}
	}
}

// TestEveryRPCDeclaresARole keeps authorization complete: a public method
// added without `role` in its (baldur.v1.rpc) option fails here.
func TestEveryRPCDeclaresARole(t *testing.T) {
	if len(methodRules) < 40 {
		t.Fatalf("only %d methods read from the descriptors", len(methodRules))
	}
	for m, r := range methodRules {
		if r.role == 0 {
			t.Errorf("%s declares no role", m)
		}
		if r.kind != "" && len(r.fieldPath) == 0 {
			t.Errorf("%s declares scope kind %q without a field", m, r.kind)
		}
	}
}
