package circuit

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	raftv1 "github.com/baldurhq/baldurd/api/gen/baldur/raft/v1"
	"github.com/baldurhq/baldurd/internal/fsm"
)

// Buckets.
var (
	BucketBreakers = []byte("circuits")
	BucketGlobal   = []byte("circuit_global")
	keyKillSwitch  = []byte("kill_switch")
	keyDeleted     = []byte("deleted") // revision of the last breaker deletion
)

// Buckets lists this package's buckets for the schema.
func Buckets() [][]byte { return [][]byte{BucketBreakers, BucketGlobal} }

// Get returns the named breaker.
func Get(kv fsm.KV, name string) (Breaker, bool) {
	v := kv.Get(BucketBreakers, []byte(name))
	if v == nil {
		return Breaker{}, false
	}
	return decode(name, v), true
}

// decoded holds each breaker's last decoded record: reports are ingested
// many times a second per breaker and the record changes on transitions.
var decoded fsm.JSONCache[Breaker]

// decode returns the breaker stored as v.
func decode(name string, v []byte) Breaker {
	b, err := decoded.Decode(name, v)
	if err != nil {
		panic(fmt.Sprintf("circuit: decode %q: %v", name, err))
	}
	return b
}

// List returns every breaker ordered by name.
func List(kv fsm.KV) []Breaker {
	var out []Breaker
	kv.Scan(BucketBreakers, nil, false, func(k, v []byte) bool {
		out = append(out, decode(string(k), v))
		return true
	})
	return out
}

// KillSwitch reports the global kill switch and the revision that set it.
func KillSwitch(kv fsm.KV) (bool, uint64) {
	v := kv.Get(BucketGlobal, keyKillSwitch)
	if v == nil {
		return false, 0
	}
	var ks struct {
		Enabled  bool   `json:"enabled"`
		Revision uint64 `json:"revision"`
	}
	if err := json.Unmarshal(v, &ks); err != nil {
		panic(fmt.Sprintf("circuit: decode kill switch: %v", err))
	}
	return ks.Enabled, ks.Revision
}

func put(kv fsm.KV, b Breaker) { kv.Put(BucketBreakers, []byte(b.Name), marshal(b)) }

func decodeJSON(raw []byte, v any, field string) error {
	if err := json.Unmarshal(raw, v); err != nil {
		return &fsm.ArgumentError{Domain: "circuit", FieldName: field, Code: "INVALID_ARGUMENT", Msg: err.Error()}
	}
	return nil
}

// Apply runs one circuit command.
func Apply(kv fsm.KV, m fsm.Meta, c *raftv1.CircuitCommand) (Result, error) {
	switch c.GetOp() {
	case raftv1.CircuitCommand_KILL_SWITCH:
		return setKillSwitch(kv, m, c.GetEnabled())
	case raftv1.CircuitCommand_DELETE:
		return deleteBreaker(kv, m, c.GetName(), c.GetIfRevision())
	}
	if err := CheckName(c.GetName()); err != nil {
		return Result{}, err
	}
	cur, exists := Get(kv, c.GetName())
	if !exists && c.GetOp() != raftv1.CircuitCommand_UPSERT {
		if c.GetOp() == raftv1.CircuitCommand_FORCE || c.GetOp() == raftv1.CircuitCommand_RESET {
			return Result{}, fmt.Errorf("%w: %q", ErrNotFound, c.GetName())
		}
		return Result{Name: c.GetName()}, nil // a timer or report for a breaker since deleted
	}
	next := cur
	action := ""
	switch c.GetOp() {
	case raftv1.CircuitCommand_UPSERT:
		var p Policy
		if err := decodeJSON(c.GetPolicyJson(), &p, "policy"); err != nil {
			return Result{}, err
		}
		if err := p.Validate(); err != nil {
			return Result{}, err
		}
		if exists && cur.Policy == p {
			return Result{Name: cur.Name, Breaker: cur}, nil
		}
		if !exists {
			next = Breaker{Name: c.GetName(), State: Closed}
			action = "register"
		} else {
			action = "policy_set"
		}
		next.Policy = p
		next.Epoch = m.Index
	case raftv1.CircuitCommand_TRIP:
		if cur.State != Closed || cur.Pinned {
			return Result{Name: cur.Name, Breaker: cur}, nil
		}
		var ev Evidence
		if len(c.GetEvidenceJson()) > 0 {
			if err := decodeJSON(c.GetEvidenceJson(), &ev, "evidence"); err != nil {
				return Result{}, err
			}
		}
		next = opened(cur, m, ev)
		action = "open"
	case raftv1.CircuitCommand_HALF_OPEN:
		if cur.State != Open || cur.Pinned || cur.OpenedRevision != c.GetProbeWindow() || m.Time.Before(cur.OpenedAt.Add(cur.Policy.RecoveryTimeout)) {
			return Result{Name: cur.Name, Breaker: cur}, nil
		}
		next = halfOpened(cur, m, TriggerRecoveryTimeout)
		action = "half_open"
	case raftv1.CircuitCommand_PROBE:
		if cur.State != HalfOpen || cur.Pinned {
			return Result{Name: cur.Name, Breaker: cur}, nil
		}
		if cur.ProbesGranted >= cur.Policy.HalfOpenMaxCalls {
			if m.Time.Sub(cur.ProbeWindowStartedAt) < cur.Policy.HalfOpenStuckTimeout {
				return Result{Name: cur.Name, Breaker: cur}, nil
			}
			// Permits of a dead window are reclaimed (Baldur §1.4).
			next = halfOpened(cur, m, "half_open_stuck_reset")
			action = "half_open_reset"
		} else {
			action = "probe_granted"
		}
		next.ProbesGranted++
		next.Revision = m.Index
		put(kv, next)
		return Result{Change: fsm.Change{Changed: true, Action: action, Before: cur, After: next}, Name: next.Name, Breaker: next, Granted: true}, nil
	case raftv1.CircuitCommand_PROBE_RESULT:
		if cur.State != HalfOpen || cur.Pinned || cur.ProbeWindow != c.GetProbeWindow() || (c.GetFailures() == 0 && c.GetSuccesses() <= 0) {
			return Result{Name: cur.Name, Breaker: cur}, nil
		}
		if c.GetFailures() > 0 {
			next = opened(cur, m, Evidence{WindowFailures: c.GetFailures(), WindowCalls: c.GetFailures() + c.GetSuccesses(), Trigger: TriggerHalfOpenFailure})
			action = "open"
			break
		}
		next.ProbeSuccesses += int(c.GetSuccesses())
		next.Revision = m.Index
		action = "probe_success"
		if next.ProbeSuccesses >= cur.Policy.SuccessThreshold {
			next = closed(cur, m, Evidence{WindowCalls: int64(next.ProbeSuccesses), Trigger: TriggerProbesSucceeded})
			action = "close"
		}
	case raftv1.CircuitCommand_FORCE:
		if err := CheckReason(m.Reason); err != nil {
			return Result{}, err
		}
		ttl, err := CheckTTL(time.Duration(c.GetTtlNanos()))
		if err != nil {
			return Result{}, err
		}
		switch State(c.GetState()) {
		case Open:
			next = opened(cur, m, Evidence{Trigger: TriggerForceOpen})
			action = "force_open"
		case Closed:
			next = closed(cur, m, Evidence{Trigger: TriggerForceClose})
			action = "force_close"
		default:
			return Result{}, &fsm.ArgumentError{Domain: "circuit", FieldName: "state", Code: "INVALID_ARGUMENT", Msg: "force to OPEN or CLOSED"}
		}
		next.Pinned, next.PinReason, next.PinnedBy = true, m.Reason, m.Actor
		next.PinExpiresAt, next.PinRevision = m.Time.Add(ttl), m.Index
	case raftv1.CircuitCommand_UNPIN:
		if !cur.Pinned || cur.PinRevision != c.GetPinRevision() || m.Time.Before(cur.PinExpiresAt) {
			return Result{Name: cur.Name, Breaker: cur}, nil
		}
		if cur.State == Open {
			// A lifted operator OPEN goes straight to trial calls.
			next = halfOpened(cur, m, TriggerForceExpired)
		} else {
			next = closed(cur, m, Evidence{Trigger: TriggerForceExpired})
		}
		action = "force_expired"
	case raftv1.CircuitCommand_RESET:
		if err := CheckReason(m.Reason); err != nil {
			return Result{}, err
		}
		next = closed(cur, m, Evidence{Trigger: TriggerReset})
		action = "reset"
	default:
		return Result{}, &fsm.ArgumentError{Domain: "circuit", FieldName: "op", Code: "INVALID_ARGUMENT", Msg: fmt.Sprintf("unknown circuit op %v", c.GetOp())}
	}
	next.Revision = m.Index
	put(kv, next)
	var before any
	if exists {
		before = cur
	}
	return Result{Change: fsm.Change{Changed: true, Action: action, Before: before, After: next}, Name: next.Name, Breaker: next}, nil
}

// unpinned clears the pin fields.
func unpinned(b Breaker) Breaker {
	b.Pinned, b.PinReason, b.PinnedBy, b.PinExpiresAt, b.PinRevision = false, "", "", time.Time{}, 0
	return b
}

func clearProbes(b Breaker) Breaker {
	b.ProbeWindow, b.ProbeWindowStartedAt, b.ProbesGranted, b.ProbeSuccesses = 0, time.Time{}, 0, 0
	return b
}

func opened(b Breaker, m fsm.Meta, ev Evidence) Breaker {
	b = clearProbes(unpinned(b))
	b.State, b.OpenedAt, b.OpenedRevision, b.Evidence = Open, m.Time, m.Index, ev
	return b
}

func closed(b Breaker, m fsm.Meta, ev Evidence) Breaker {
	b = clearProbes(unpinned(b))
	b.State, b.OpenedAt, b.OpenedRevision, b.Evidence = Closed, time.Time{}, 0, ev
	b.Epoch = m.Index // a new window: what was reported before does not count
	return b
}

func halfOpened(b Breaker, m fsm.Meta, trigger string) Breaker {
	b = unpinned(b)
	b.State = HalfOpen
	b.ProbeWindow, b.ProbeWindowStartedAt, b.ProbesGranted, b.ProbeSuccesses = m.Index, m.Time, 0, 0
	b.Evidence = Evidence{Trigger: trigger}
	return b
}

func setKillSwitch(kv fsm.KV, m fsm.Meta, enabled bool) (Result, error) {
	if err := CheckReason(m.Reason); err != nil {
		return Result{}, err
	}
	cur, _ := KillSwitch(kv)
	if cur == enabled {
		return Result{Name: "kill_switch"}, nil
	}
	kv.Put(BucketGlobal, keyKillSwitch, marshal(struct {
		Enabled  bool   `json:"enabled"`
		Revision uint64 `json:"revision"`
	}{enabled, m.Index}))
	return Result{Change: fsm.Change{Changed: true, Action: "kill_switch", Before: map[string]bool{"enabled": cur}, After: map[string]bool{"enabled": enabled}}, Name: "kill_switch"}, nil
}

// DueAction is a time-driven transition the leader should propose.
type DueAction struct {
	Name string
	Op   raftv1.CircuitCommand_Op
	// Revision names what the command acts on: OpenedRevision for
	// HALF_OPEN, PinRevision for UNPIN.
	Revision uint64
}

// Due lists the recovery timeouts and pin expiries due at now.
func Due(kv fsm.KV, now time.Time) []DueAction {
	var out []DueAction
	for _, b := range List(kv) {
		switch {
		case b.Pinned && !now.Before(b.PinExpiresAt):
			out = append(out, DueAction{Name: b.Name, Op: raftv1.CircuitCommand_UNPIN, Revision: b.PinRevision})
		case !b.Pinned && b.State == Open && !now.Before(b.OpenedAt.Add(b.Policy.RecoveryTimeout)):
			out = append(out, DueAction{Name: b.Name, Op: raftv1.CircuitCommand_HALF_OPEN, Revision: b.OpenedRevision})
		}
	}
	return out
}

// deleteBreaker removes a breaker. ifRevision, when not 0, makes the
// delete conditional: only a breaker still at that revision goes (the
// leader's idle sweep, which must not remove one that changed meanwhile).
func deleteBreaker(kv fsm.KV, m fsm.Meta, name string, ifRevision uint64) (Result, error) {
	if err := CheckName(name); err != nil {
		return Result{}, err
	}
	if err := CheckReason(m.Reason); err != nil {
		return Result{}, err
	}
	cur, ok := Get(kv, name)
	if !ok {
		return Result{}, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	if ifRevision != 0 && cur.Revision != ifRevision {
		return Result{Name: name, Breaker: cur}, nil
	}
	kv.Delete(BucketBreakers, []byte(name))
	kv.Put(BucketGlobal, keyDeleted, binary.BigEndian.AppendUint64(nil, m.Index))
	return Result{Change: fsm.Change{Changed: true, Action: "delete", Before: cur}, Name: name}, nil
}

// LastDeletion is the revision of the last breaker deletion (0: none):
// a watcher that saw an older state needs a full snapshot to forget it.
func LastDeletion(kv fsm.KV) uint64 {
	if v := kv.Get(BucketGlobal, keyDeleted); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// Page lists up to size breakers by name after the one named after (""
// for the first page) and the name to continue after ("" when none is
// left).
func Page(kv fsm.KV, after string, size int) ([]Breaker, string) {
	var out []Breaker
	next := ""
	start := []byte(after)
	if after != "" {
		start = append(start, 0) // strictly after
	}
	kv.Scan(BucketBreakers, start, false, func(k, v []byte) bool {
		if len(out) == size {
			next = out[len(out)-1].Name
			return false
		}
		out = append(out, decode(string(k), v))
		return true
	})
	return out, next
}

// NextDue is the earliest time a time-driven transition falls due (a
// recovery timeout, a pin expiry); zero when none is pending. The leader
// rescans breakers only when one changed or this time came.
func NextDue(kv fsm.KV) time.Time {
	var next time.Time
	for _, b := range List(kv) {
		var at time.Time
		switch {
		case b.Pinned:
			at = b.PinExpiresAt
		case b.State == Open:
			at = b.OpenedAt.Add(b.Policy.RecoveryTimeout)
		default:
			continue
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// FollowDefaults moves every breaker whose policy is old (the defaults it
// was registered with) to next, as a policy change: a change of the
// circuit_defaults configuration section applies to them as it does to
// breakers registered from then on. A breaker given a policy of its own
// keeps it.
func FollowDefaults(kv fsm.KV, m fsm.Meta, old, next Policy) []fsm.Change {
	if old == next {
		return nil
	}
	var out []fsm.Change
	for _, cur := range List(kv) {
		if cur.Policy != old {
			continue
		}
		b := cur
		b.Policy, b.Epoch, b.Revision = next, m.Index, m.Index
		put(kv, b)
		out = append(out, Result{Change: fsm.Change{Changed: true, Action: "policy_set", Before: cur, After: b}, Name: b.Name, Breaker: b}.Applied().Change)
	}
	return out
}
