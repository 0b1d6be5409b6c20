package server

import (
	"testing"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// A batch wakes only the watchers of what it changed; a restore (or a
// batch without commands) wakes them all.
func TestHubWakesOnlyTheTopicsABatchChanged(t *testing.T) {
	h := newHub()
	var got topics
	a := &applier{applied: func(_ uint64, t topics) { got = t; h.notify(t) }}
	emergencyWait, circuitWait, dlqWait := h.wait(topicEmergency), h.wait(topicCircuit), h.wait(topicDLQ)

	a.commands, a.touched = true, topicOf(&raftv1.Command{Body: &raftv1.Command_Dlq{}})
	a.Applied(10)
	if got != topicDLQ || !closed(dlqWait) || closed(emergencyWait) || closed(circuitWait) {
		t.Fatalf("after a batch of DLQ commands: topics %b, dlq woken %v, emergency %v, circuit %v", got, closed(dlqWait), closed(emergencyWait), closed(circuitWait))
	}
	if a.commands || a.touched != 0 {
		t.Fatal("Applied did not reset the batch's topics")
	}
	a.Applied(11) // a restore: no commands seen
	if got != topicAll || !closed(emergencyWait) || !closed(circuitWait) {
		t.Fatalf("after a restore: topics %b", got)
	}
	for _, tc := range []struct {
		cmd  *raftv1.Command
		want topics
	}{
		{&raftv1.Command{Body: &raftv1.Command_EmergencyTrigger{}}, topicEmergency},
		{&raftv1.Command{Body: &raftv1.Command_Circuit{}}, topicCircuit},
		{&raftv1.Command{Body: &raftv1.Command_Coordination{}}, topicCoordination},
		{&raftv1.Command{Body: &raftv1.Command_MemberUpsert{}}, topicCluster},
		{&raftv1.Command{Body: &raftv1.Command_AuditNote{}}, 0},
	} {
		if got := topicOf(tc.cmd); got != tc.want {
			t.Errorf("topicOf(%T) = %b, want %b", tc.cmd.Body, got, tc.want)
		}
	}
	h.close()
	if w := h.wait(topicCoordination); !closed(w) {
		t.Fatal("a closed hub must release waiters")
	}
}
