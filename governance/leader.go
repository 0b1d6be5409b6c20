package governance

import (
	"fmt"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

func command(reason string, body *raftv1.GovernanceCommand) *raftv1.Command {
	return &raftv1.Command{Reason: reason, Version: 7, Body: &raftv1.Command_Governance{Governance: body}}
}

// Proposals are the system control's steps due at now: a STRICT mode is
// warned about at 4h and 6h and returns to NORMAL at 8h; break glass ends
// at its TTL; change requests expire after 24h.
func Proposals(kv fsm.KV, now time.Time) []*raftv1.Command {
	s := Get(kv)
	var out []*raftv1.Command
	if s.Strict {
		since := s.StrictSince.UnixNano()
		age := now.Sub(s.StrictSince)
		switch {
		case age >= StrictMax:
			out = append(out, command("STRICT mode ends after 8h", &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_STRICT_EXPIRE, SinceUnixNano: since}))
		case s.StrictWarned < len(StrictWarnings) && age >= StrictWarnings[s.StrictWarned]:
			w := s.StrictWarned + 1
			out = append(out, command(fmt.Sprintf("STRICT mode for %v: it returns to NORMAL at 8h", StrictWarnings[w-1]),
				&raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_STRICT_WARN, SinceUnixNano: since, Warning: int32(w)}))
		}
	}
	if s.BreakGlass != nil && !now.Before(s.BreakGlass.Until) {
		out = append(out, command("break glass TTL ended", &raftv1.GovernanceCommand{Op: raftv1.GovernanceCommand_END_BREAK_GLASS, SinceUnixNano: s.BreakGlass.Since.UnixNano()}))
	}
	return append(out, ApprovalProposals(kv, now)...)
}
