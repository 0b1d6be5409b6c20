package emergency

import (
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Proposals lists the commands the leader proposes at now: activations whose
// duration elapsed expire, gradual recoveries take their next step. Each
// names the activation it acts on, so one proposed twice applies once.
func Proposals(kv fsm.KV, now time.Time) []*raftv1.Command {
	var out []*raftv1.Command
	for _, d := range Due(kv, now) {
		cmd := &raftv1.Command{Version: 1}
		if d.Expire {
			cmd.Reason = "emergency duration elapsed"
			cmd.Body = &raftv1.Command_EmergencyExpire{EmergencyExpire: &raftv1.EmergencyExpire{Scope: d.Scope, ActivationRevision: d.ActivationRevision}}
		} else {
			cmd.Reason = "gradual recovery step"
			cmd.Body = &raftv1.Command_EmergencyStep{EmergencyStep: &raftv1.EmergencyStep{Scope: d.Scope, ActivationRevision: d.ActivationRevision, FromLevel: int32(d.FromLevel)}}
		}
		out = append(out, cmd)
	}
	return out
}
